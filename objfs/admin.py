"""objfs.admin — the node's admin listener: metrics, health, and the operator's API.

A small Quart-Trio app served by its own hypercorn listener (`node.admin_address`,
loopback by default), apart from S3 so scrapers and probes never meet S3's
authentication or its load:

    GET    /metrics              Prometheus text format (no auth, as scrapers expect)
    GET    /health/live          200 while the event loop answers
    GET    /health/ready         200 once recovery is done and every service is up,
                                 503 before that and while stopping (JSON says why)
    GET    /admin/status         the node as JSON (what `objfs status` prints)
    GET    /admin/buckets        buckets as JSON
    PUT    /admin/buckets/NAME   create (?owner=USER, default root)
    DELETE /admin/buckets/NAME   delete an empty bucket
    POST   /admin/scrub          one scrub pass now {"repair"?, "rate"?} -> {"report", "clean"}
    GET    /admin/users          users as JSON (name, access key, canonical id; no secrets)
    POST   /admin/users          a cluster node: create {"name", "access_key"?, "secret_key"?}
                                 through the cluster's catalog; 201 with the keys, once
                                 applied on this node
    DELETE /admin/users/NAME     a cluster node: delete a user (not root), likewise
    POST   /admin/cluster/remove a cluster node: {"node": N} moves node N's stripes to
                                 the other nodes, then removes it -> {"removed", "stripes_moved"}

A single node's users are `DATA_DIR/users.json`, which `objfs user` edits
itself: POST and DELETE /admin/users answer 400 there.

/admin/* need `Authorization: Bearer TOKEN`, the token the node writes to
`DATA_DIR/node.json` (mode 0600) at start: whoever may read the data directory
may run the node's admin commands, nobody else. Errors are JSON
`{"error": message}` with 400/401/404/409, 503 when the cluster cannot commit.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import quart
from quart import request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from objfs import __version__
from objfs.cluster.member import ClusterMember
from objfs.config import NodeConfig
from objfs.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    NotFound,
    ObjfsError,
    UsageError,
)
from objfs.metrics import CONTENT_TYPE, Metrics
from objfs.s3.users import Users, new_user
from objfs.store import Store
from objfs.store.device import write_file_atomically
from objfs.store.superblock import FORMAT_VERSION

log = logging.getLogger(__name__)

RUNTIME_FILE = "node.json"  # in the data directory while the node runs


@dataclass
class NodeState:
    """What the node has brought up so far; readiness is read from here."""

    config: NodeConfig
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    started: float = field(default_factory=time.time)
    store: Store | None = None  # set once recovery is done
    users: Users | None = None
    s3_addresses: list[str] = field(default_factory=list)
    admin_addresses: list[str] = field(default_factory=list)
    mountpoint: str | None = None  # set once the mount answers
    cluster: ClusterMember | None = None  # in a cluster: set once its member starts
    ready: bool = False
    stopping: bool = False

    def not_ready(self) -> list[str]:
        """What readiness is waiting for (empty: ready)."""
        waiting = []
        if self.stopping:
            waiting.append("stopping")
        if self.store is None:
            waiting.append("store recovery")
        if self.cluster is not None and self.cluster.waiting_for:
            waiting.append(f"cluster: {self.cluster.waiting_for}")
        if self.config.s3.address and not self.s3_addresses:
            waiting.append("S3 listener")
        if self.config.fuse.mountpoint and self.mountpoint is None:
            waiting.append("FUSE mount")
        if not self.ready and not waiting:
            waiting.append("start-up")
        return waiting


def write_runtime_file(state: NodeState) -> str:
    """DATA_DIR/node.json (0600): where the running node listens and its admin
    token, written whole and renamed into place. Blocking: call from a thread."""
    path = os.path.join(state.config.store.data_dir, RUNTIME_FILE)
    body = {
        "pid": os.getpid(),
        "admin": state.admin_addresses,
        "s3": state.s3_addresses,
        "mount": state.mountpoint,
        "token": state.token,
        "version": __version__,
    }
    write_file_atomically(path, json.dumps(body).encode())
    return path


def remove_runtime_file(state: NodeState) -> None:
    """Remove node.json if this process wrote it: a second `objfs serve` refused
    on the same data (devices in use) must not hide the running node."""
    path = os.path.join(state.config.store.data_dir, RUNTIME_FILE)
    try:
        with open(path, encoding="utf-8") as file:
            if json.load(file).get("pid") != os.getpid():
                return
        os.unlink(path)
    except (OSError, ValueError, AttributeError):
        pass  # gone, or not ours to judge: leave it


def versions() -> dict[str, str]:
    """objfs, its on-disk format, Python and the libraries that shape behaviour."""
    found = {
        "objfs": __version__,
        "format": str(FORMAT_VERSION),
        "python": platform.python_version(),
    }
    for name in ("trio", "hypercorn", "quart-trio", "pyfuse3", "pyeclib", "prometheus-client"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def status_of(state: NodeState) -> dict[str, Any]:
    """The node's status as plain data (JSON-ready)."""
    store = state.store
    result: dict[str, Any] = {
        "version": __version__,
        "versions": versions(),
        "pid": os.getpid(),
        "uptime_s": round(time.time() - state.started, 1),
        "ready": state.ready and not state.stopping,
        "waiting_for": state.not_ready(),
        "s3": state.s3_addresses,
        "admin": state.admin_addresses,
        "mount": None,
    }
    if state.cluster is not None:
        result["cluster"] = state.cluster.status()
    if state.mountpoint is not None:
        result["mount"] = {
            "path": state.mountpoint,
            "bucket": state.config.fuse.bucket or None,
        }
    if store is None:
        return result
    stats = store.statistics()
    health = store.health.statistics()
    scrubber = store.scrubber
    devices = []
    for index in health.device_indexes:
        device = store.devices.get(index)
        allocator = store.space.allocators.get(index)
        entry: dict[str, Any] = {
            "index": index,
            "state": "down"
            if index in health.down_devices
            else "owed"
            if index in health.owed_devices
            else "up",
        }
        if device is not None:
            io = device.statistics()
            entry.update(path=device.path, size_bytes=io.size_bytes, io_errors=io.io_errors)
        if allocator is not None:
            entry["free_bytes"] = allocator.free_bytes
        devices.append(entry)
    last = scrubber.last_report
    result.update(
        erasure=store.policy.describe(),
        health="degraded" if health.degraded else "healthy",
        devices=devices,
        space={"total_bytes": stats.device_bytes, "free_bytes": stats.free_bytes},
        objects={
            "buckets": stats.buckets,
            "objects": stats.objects,
            "versions": stats.versions,
            "logical_bytes": stats.logical_bytes,
        },
        wal={
            "used_bytes": stats.wal_bytes_used,
            "size_bytes": stats.wal_bytes_total,
            "lsn": stats.last_lsn,
            "checkpoint_lsn": stats.checkpoint_lsn,
        },
        checks={
            "bad_fragments": health.bad_fragments,
            "healed_fragments": health.healed_fragments,
            "queued_heals": health.queued_heals,
        },
        scrub={
            "passes": scrubber.passes,
            "running": scrubber.pass_total > 0,
            "done": scrubber.pass_done,
            "of": scrubber.pass_total,
            "last": None if last is None else last.render().replace("\n", "; "),
        },
    )
    return result


def create_admin_app(state: NodeState, metrics: Metrics) -> QuartTrio:
    app = QuartTrio(__name__)
    app.config["RESPONSE_TIMEOUT"] = None  # a scrub the operator asked for takes its time

    def answer(body: Any, status: int = 200) -> quart.Response:
        return quart.Response(
            json.dumps(body, indent=1) + "\n", status=status, content_type="application/json"
        )

    def authorized() -> bool:
        given = request.headers.get("Authorization", "")
        return given.startswith("Bearer ") and secrets.compare_digest(
            given[len("Bearer ") :].encode(), state.token.encode()
        )

    @app.before_request
    async def check_token() -> quart.Response | None:
        if request.path.startswith("/admin/") and not authorized():
            return answer(
                {"error": "the admin token (Authorization: Bearer) is missing or wrong"}, 401
            )
        return None

    @app.get("/metrics")
    async def metrics_page() -> quart.Response:
        return quart.Response(metrics.render(), content_type=CONTENT_TYPE)

    @app.get("/health/live")
    async def live() -> quart.Response:
        return answer({"live": True})

    @app.get("/health/ready")
    async def ready() -> quart.Response:
        waiting = state.not_ready()
        return answer({"ready": not waiting, "waiting_for": waiting}, 200 if not waiting else 503)

    @app.get("/admin/status")
    async def status() -> quart.Response:
        return answer(status_of(state))

    @app.get("/admin/buckets")
    async def list_buckets() -> quart.Response:
        store = _store(state)
        return answer(
            [
                {"name": b.name, "owner": _owner_name(state, b.owner), "created_ns": b.created_ns}
                for b in store.list_buckets()
            ]
        )

    @app.put("/admin/buckets/<path:name>")
    async def create_bucket(name: str) -> quart.Response:
        store = _store(state)
        owner = request.args.get("owner", "root")
        user = None if state.users is None else state.users.get(owner)
        if user is None:
            return answer({"error": f"no user named {owner!r}"}, 400)
        info = await store.create_bucket(name, owner=user.canonical_id)  # as S3 records it
        return answer({"name": info.name, "owner": owner}, 201)

    @app.delete("/admin/buckets/<path:name>")
    async def delete_bucket(name: str) -> quart.Response:
        await _store(state).delete_bucket(name)
        return answer({"deleted": name})

    @app.post("/admin/scrub")
    async def scrub() -> quart.Response:
        """One scrub pass now, at `rate` bytes/s (0: full speed); the report."""
        store = _store(state)
        body = await request.get_json(force=True, silent=True) or {}
        repair, rate = body.get("repair", True), body.get("rate", 0)
        if not isinstance(repair, bool) or not isinstance(rate, int) or rate < 0:
            raise UsageError('a scrub is {"repair": true|false, "rate": bytes per second}')
        scrubber = store.scrubber
        background, scrubber.rate_bytes_per_s = scrubber.rate_bytes_per_s, rate
        try:
            report = await scrubber.scrub(repair=repair)
        finally:
            scrubber.rate_bytes_per_s = background
        return answer({"report": report.render(), "clean": report.clean})

    @app.get("/admin/users")
    async def list_users() -> quart.Response:
        if state.users is None:
            raise _NotRecovered("the node has no users loaded yet")
        return answer(
            [
                {"name": u.name, "access_key": u.access_key, "canonical_id": u.canonical_id}
                for u in state.users.all()
            ]
        )

    @app.post("/admin/users")
    async def create_user() -> quart.Response:
        member = _cluster_member(state)
        body = await request.get_json(force=True, silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise UsageError('a user to create is a JSON object {"name": ...}')
        keys = [body.get("access_key"), body.get("secret_key")]
        if not all(key is None or isinstance(key, str) for key in keys):
            raise UsageError("access_key and secret_key are strings when given")
        # Keys are made here, by the proposer: applying the change is pure.
        user = new_user(body["name"], *keys)
        await member.replicator.change_catalog({"op": "user_add_v1", **asdict(user)})
        return answer(asdict(user), 201)

    @app.delete("/admin/users/<path:name>")
    async def delete_user(name: str) -> quart.Response:
        member = _cluster_member(state)
        await member.replicator.change_catalog({"op": "user_delete_v1", "name": name})
        return answer({"deleted": name})

    @app.post("/admin/cluster/remove")
    async def remove_node() -> quart.Response:
        """`objfs cluster remove`: move a node's stripes away, then remove it."""
        member = _cluster_member(state, "there are no other nodes to remove")
        body = await request.get_json(force=True, silent=True)
        number = body.get("node") if isinstance(body, dict) else None
        if not isinstance(number, int) or isinstance(number, bool):
            raise UsageError('a node to remove is a JSON object {"node": NUMBER}')
        return answer(await member.remove_node(number))

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> quart.Response:
        return answer({"error": f"{request.method} {request.path}: {exc.name}"}, exc.code or 500)

    @app.errorhandler(ObjfsError)
    async def objfs_error(exc: ObjfsError) -> quart.Response:
        code = (
            404
            if isinstance(exc, NotFound)
            else 409
            if isinstance(exc, AlreadyExists | Conflict)
            else 400
            if isinstance(exc, InvalidArgument | UsageError)
            else 503
        )
        return answer({"error": str(exc)}, code)

    return app


def _owner_name(state: NodeState, canonical_id: str) -> str:
    user = None if state.users is None else state.users.by_canonical_id(canonical_id)
    return canonical_id if user is None else user.name


class _NotRecovered(ObjfsError):
    """The store is not open yet (or any more)."""


_USERS_ALONE = "its users are DATA_DIR/users.json, which `objfs user` changes itself"


def _cluster_member(state: NodeState, alone: str = _USERS_ALONE) -> ClusterMember:
    """The node's cluster member; UsageError saying `alone` if it is a single node."""
    if state.cluster is None:
        raise UsageError(f"this node is not in a cluster: {alone}")
    return state.cluster


def _store(state: NodeState) -> Store:
    if state.store is None:
        raise _NotRecovered("the store is not open (starting or stopping)")
    return state.store
