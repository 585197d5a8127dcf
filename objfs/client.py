"""objfs.client — how the CLI talks to a running node: its admin listener.

A running node leaves `DATA_DIR/node.json` (0600: where its admin listener is,
and a token made at start). `find_node` reads it and checks the node answers;
`NodeClient.call` sends one authenticated request and returns the JSON answer.
Blocking (urllib): the CLI calls these from a worker thread.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from objfs.admin import RUNTIME_FILE
from objfs.errors import ObjfsError, UsageError

_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class NodeClient:
    address: str  # the admin listener's URL, as hypercorn reported it (http://host:port)
    token: str

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = _TIMEOUT_S,
    ) -> Any:
        """One admin request (with `body` as JSON, if given); its JSON answer
        (waiting at most `timeout_s` between bytes; None: as long as it takes).

        Raises:
            UsageError: the node refused it (the node's own message).
            ObjfsError: the node did not answer.
        """
        headers = {"Authorization": f"Bearer {self.token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            f"{self.address}{path}",
            method=method,
            headers=headers,
            data=None if body is None else json.dumps(body).encode(),
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            try:
                message = json.load(exc)["error"]
            except (ValueError, KeyError, TypeError, AttributeError):
                message = f"the node answered HTTP {exc.code} {exc.reason}"
            raise UsageError(str(message)) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise ObjfsError(f"the node at {self.address} did not answer: {exc}") from None


def find_node(data_dir: str) -> NodeClient | None:
    """The running node of `data_dir`, or None when none runs (no node.json, its
    process gone, or nothing listening where it said)."""
    try:
        with open(os.path.join(data_dir, RUNTIME_FILE), encoding="utf-8") as file:
            runtime = json.load(file)
        pid, addresses, token = int(runtime["pid"]), list(runtime["admin"]), str(runtime["token"])
    except FileNotFoundError:
        return None
    except PermissionError:
        raise UsageError(
            f"{os.path.join(data_dir, RUNTIME_FILE)}: not readable by this user; the node's "
            "admin commands are for whoever runs it (try as root)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # torn or foreign: treat as no node
    if not addresses or not _alive(pid):
        return None  # killed without a chance to remove the file
    node = NodeClient(addresses[0], token)
    try:
        node.call("GET", "/health/live")  # the cheapest answer proves it listens
    except ObjfsError:
        return None
    return node


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def render_status(status: dict[str, Any]) -> str:
    """`objfs status` of a running node, for people."""
    lines = [
        f"node:       objfs {status['version']}, pid {status['pid']}, up {status['uptime_s']} s, "
        + ("ready" if status["ready"] else f"NOT READY ({', '.join(status['waiting_for'])})"),
        f"s3:         {', '.join(status['s3']) or 'off'}",
        f"admin:      {', '.join(status['admin'])}",
        "versions:   " + ", ".join(f"{k} {v}" for k, v in status.get("versions", {}).items()),
    ]
    mount = status.get("mount")
    if mount:
        shown = f"bucket {mount['bucket']}" if mount.get("bucket") else "every bucket"
        lines.append(f"mount:      {shown} at {mount['path']}")
    else:
        lines.append("mount:      none")
    if "devices" not in status:
        return "\n".join(lines)
    lines.append(f"erasure:    {status['erasure']}")
    lines.append(f"health:     {status['health']}")
    for device in status["devices"]:
        where = device.get("path", "(missing)")
        free = device.get("free_bytes")
        size = device.get("size_bytes")
        space = "" if free is None or size is None else f", {free} of {size} bytes free"
        errors = device.get("io_errors", 0)
        lines.append(
            f"  device {device['index']}: {device['state']}, {where}{space}"
            + (f", {errors} I/O errors" if errors else "")
        )
    space, objects, wal = status["space"], status["objects"], status["wal"]
    lines.append(f"space:      {space['free_bytes']} of {space['total_bytes']} bytes free")
    lines.append(
        f"objects:    {objects['objects']} in {objects['buckets']} buckets "
        f"({objects['versions']} versions, {objects['logical_bytes']} bytes)"
    )
    lines.append(
        f"wal:        {wal['used_bytes']} of {wal['size_bytes']} bytes in use, "
        f"lsn {wal['lsn']} (checkpoint at {wal['checkpoint_lsn']})"
    )
    checks, scrub = status["checks"], status["scrub"]
    lines.append(
        f"checks:     bad fragments seen {checks['bad_fragments']}, healed "
        f"{checks['healed_fragments']}, heals queued {checks['queued_heals']}"
    )
    running = f"running, {scrub['done']} of {scrub['of']} segments" if scrub["running"] else "idle"
    lines.append(f"scrub:      {running}; {scrub['passes']} passes since start")
    if scrub.get("last"):
        lines.append(f"  last pass: {scrub['last']}")
    return "\n".join(lines)
