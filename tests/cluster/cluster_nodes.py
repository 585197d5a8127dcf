"""Real objfs nodes in a cluster: child processes on loopback ports, separate data dirs.

`Cluster.start(3)` runs `objfs cluster init` for node 0 and `objfs cluster
join` for the others (through node 0's internal API), each followed by `objfs
serve` as systemd would run it (tests/e2e/service_node.py), and waits for
READY=1 from each. Every node gets its own S3, admin, Raft and API ports.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s3"))

from service_node import ServiceNode, mounted, objfs, s3_client, write_config

from objfs.cluster import peers

WORK_DIR = os.environ.get("OBJFS_TEST_DIR", "/var/tmp/objfs-tests")

SECRET = "a-cluster-secret-for-the-tests-0123456789"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("127.0.0.1", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


def send(
    address: str,
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, bytes]:
    """One request to a node's internal API, with exactly these headers."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def signed(
    address: str, method: str, target: str, body: bytes = b"", *, secret: str | None = SECRET
) -> tuple[int, bytes]:
    """One request to a node's internal API, signed with `secret` (None: unsigned)."""
    headers = {} if secret is None else peers.signed_headers(secret, method, target, body)
    return send(address, method, target, body, headers)


class Member:
    """One node: its directory, ports and (while it runs) its process."""

    def __init__(self, root: str, number: int, extra_config: str = "") -> None:
        self.number = number
        self.directory = os.path.join(root, f"node{number}")
        os.makedirs(self.directory)
        self.data = os.path.join(self.directory, "data")
        s3, raft, api = free_ports(3)
        self.s3_address = f"127.0.0.1:{s3}"
        self.raft_address = f"127.0.0.1:{raft}"
        self.api_address = f"127.0.0.1:{api}"
        self.mountpoint = os.path.join(self.directory, "mnt")
        os.makedirs(self.mountpoint)
        self.config = write_config(self.directory, extra_config, graceful_timeout_ms=5_000)
        self.node: ServiceNode | None = None
        self.starts = 0

    def cli(
        self, *args: str, environ: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return objfs("--config", self.config, "--data", self.data, *args, environ=environ)

    def serve(self, *, mount: bool = False) -> ServiceNode:
        self.starts += 1
        args = ["--config", self.config, "--s3-address", self.s3_address]
        if mount:
            args += ["--mount", self.mountpoint]
        self.node = ServiceNode(self.directory, self.data, args, f"serve{self.starts}")
        return self.node

    def ready(self, timeout: float = 90.0) -> None:
        """Until the node last served says READY=1 (a restart replays the whole log)."""
        assert self.node is not None
        self.node.wait_for("READY", timeout=timeout)

    def s3(self, **options: Any) -> Any:
        return s3_client(f"http://{self.s3_address}", **options)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.node is not None
        self.node.process.send_signal(sig)
        if sig == signal.SIGKILL:
            self.node.process.wait(30)

    def status(self) -> dict[str, Any]:
        assert self.node is not None
        code, body = self.node.admin("/admin/status")
        assert code == 200, body
        cluster: dict[str, Any] = json.loads(body)["cluster"]
        return cluster

    def close(self) -> None:
        if self.node is not None:
            self.node.close()
        if mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], stderr=subprocess.DEVNULL)


class Cluster:
    def __init__(self) -> None:
        os.makedirs(WORK_DIR, exist_ok=True)
        self.root = tempfile.mkdtemp(dir=WORK_DIR, prefix="cluster-")
        self.members: list[Member] = []
        # Node number -> lines added to its objfs.toml (after [node]), for nodes added later.
        self.extra_config: dict[int, str] = {}

    def add(self) -> Member:
        number = len(self.members)
        member = Member(self.root, number, self.extra_config.get(number, ""))
        self.members.append(member)
        return member

    def start(self, count: int, *, mount_first: bool = False) -> list[Member]:
        environ = {"OBJFS_CLUSTER_SECRET": SECRET}
        first = self.add()
        done = first.cli(
            "cluster",
            "init",
            "--name",
            "node0",
            "--raft-address",
            first.raft_address,
            "--api-address",
            first.api_address,
            "--device-count",
            "3",
            "--device-size",
            "64M",
            environ=environ,
        )
        assert done.returncode == 0, done.stderr
        first.serve(mount=mount_first).wait_for("READY")
        for _ in range(count - 1):
            member = self.add()
            done = member.cli(
                "cluster",
                "join",
                first.api_address,
                "--name",
                f"node{member.number}",
                "--raft-address",
                member.raft_address,
                "--api-address",
                member.api_address,
                "--device-count",
                "3",
                "--device-size",
                "64M",
                environ=environ,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            member.serve().wait_for("READY")
        return self.members

    def wait_for_members(self, count: int, timeout: float = 30.0) -> None:
        """Until every running node's catalog shows `count` voting members."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            views = [
                sum(n["admitted"] for n in m.status()["catalog"]["nodes"])
                for m in self.members
                if m.node is not None and m.node.process.poll() is None
            ]
            if views and all(v == count for v in views):
                return
            time.sleep(0.1)
        raise AssertionError(f"not {count} voting members within {timeout} s")

    def restart_all(self) -> None:
        """Every node killed (-9) at once, then all started again and ready."""
        for member in self.members:
            member.kill()
        for member in self.members:
            member.serve()
        for member in self.members:
            member.ready()

    def close(self) -> None:
        for member in self.members:
            member.close()
        shutil.rmtree(self.root, ignore_errors=True)
