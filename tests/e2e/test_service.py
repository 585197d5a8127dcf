"""The node as a service, end to end: `objfs serve` run the way systemd runs it.

One child process with a real NOTIFY_SOCKET (bound by the test), a mount and
both listeners on free ports:

- READY=1 comes once: by then the S3 port accepts, the mount answers, and
  /health/ready says 200; WATCHDOG=1 keeps coming about every second (half of
  WATCHDOG_USEC).
- boto3 PUTs an object; the mount reads the same bytes.
- /metrics parses with prometheus-client's own parser and its counters move
  with traffic (S3 requests by operation and status, FUSE operations, device
  bytes); /admin/* refuses a request without the token; `objfs status` and
  `objfs bucket` talk to the running node.
- SIGTERM: STOPPING=1, exit 0 well within the graceful timeout, the mount
  gone, node.json gone; a restart finds the data, then `objfs fsck` is clean.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families
from service_node import WATCHDOG_USEC, ServiceNode, objfs, s3_client, write_config

WORK_DIR = os.environ.get("OBJFS_TEST_DIR", "/var/tmp/objfs-tests")

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse here")


@pytest.fixture
def directory() -> Iterator[str]:
    os.makedirs(WORK_DIR, exist_ok=True)
    path = tempfile.mkdtemp(dir=WORK_DIR, prefix="service-")
    try:
        yield path
    finally:
        # A killed node leaves a stale mount, which os.path.ismount cannot see (ENOTCONN).
        subprocess.run(
            ["fusermount3", "-u", "-z", os.path.join(path, "mnt")],
            stderr=subprocess.DEVNULL,
            check=False,
        )
        shutil.rmtree(path, ignore_errors=True)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(
    page: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return page.get((name, tuple(sorted(labels.items()))), 0.0)


def test_serve_notify_metrics_stop_and_restart(directory: str) -> None:
    data, mountpoint = os.path.join(directory, "data"), os.path.join(directory, "mnt")
    formatted = objfs("--data", data, "format", "--device-count", "3", "--device-size", "128M")
    assert formatted.returncode == 0, formatted.stderr
    config = write_config(directory)
    node = ServiceNode(directory, data, ["--mount", mountpoint, "--config", config], "first")
    try:
        ready_at = node.wait_for("READY")
        # By READY=1 every service answers.
        runtime = node.runtime()
        s3 = runtime["s3"][0]
        address = urlsplit(s3)
        with socket.create_connection((address.hostname, address.port), timeout=5):
            pass
        assert os.path.ismount(mountpoint)
        assert runtime["mount"] == mountpoint
        status, body = node.admin("/health/ready", token=False)
        assert status == 200 and json.loads(body)["ready"] is True
        assert len(node.sent("READY")) == 1
        # The watchdog: about every WATCHDOG_USEC / 2, from the event loop.
        time.sleep(2.5)
        pings = [at for at in node.sent("WATCHDOG") if at >= ready_at]
        assert len(pings) >= 2, node.messages
        assert all(b - a < WATCHDOG_USEC / 1e6 for a, b in itertools.pairwise(pings))

        s3client = s3_client(s3)
        payload = os.urandom(3 * 1024 * 1024 + 17)
        s3client.create_bucket(Bucket="svc")
        s3client.put_object(Bucket="svc", Key="dir/obj", Body=payload)
        with open(os.path.join(mountpoint, "svc", "dir", "obj"), "rb") as file:
            assert file.read() == payload

        # /metrics: parsed by Prometheus' parser; counters move with traffic.
        status, text = node.admin("/metrics", token=False)
        assert status == 200
        before = samples(text.decode())
        puts = value(before, "objfs_s3_requests_total", operation="put_object", status="200")
        assert puts == 1
        assert value(before, "objfs_fuse_operations_total", operation="read") >= 1
        assert value(before, "objfs_wal_commits_total") >= 2
        assert value(before, "objfs_device_up", device="0") == 1
        written = sum(v for (n, _), v in before.items() if n == "objfs_device_written_bytes_total")
        assert written >= len(payload)
        s3client.put_object(Bucket="svc", Key="again", Body=b"x" * 100_000)
        after = samples(node.admin("/metrics", token=False)[1].decode())
        assert value(after, "objfs_s3_requests_total", operation="put_object", status="200") == 2
        assert (
            value(after, "objfs_s3_received_bytes_total")
            >= value(before, "objfs_s3_received_bytes_total") + 100_000
        )
        assert value(after, "objfs_wal_commit_seconds_count") > value(
            before, "objfs_wal_commit_seconds_count"
        )

        # The admin API wants the token; the CLI finds it in node.json.
        assert node.admin("/admin/status", token=False)[0] == 401
        shown = objfs("--data", data, "status")
        assert shown.returncode == 0, shown.stderr
        assert "ready" in shown.stdout and f"at {mountpoint}" in shown.stdout
        made = objfs("--data", data, "bucket", "create", "made-by-cli")
        assert made.returncode == 0, made.stderr
        assert os.path.isdir(os.path.join(mountpoint, "made-by-cli"))
        listed = objfs("--data", data, "bucket", "list")
        assert listed.stdout.split() == ["made-by-cli", "root", "svc", "root"]

        # SIGTERM: STOPPING=1, a clean exit well within the graceful timeout.
        stopped = time.monotonic()
        assert node.terminate(timeout=30) == 0, node.log()
        assert time.monotonic() - stopped < 10 + 5
        assert node.sent("STOPPING")
        assert not os.path.ismount(mountpoint)
        assert not os.path.exists(os.path.join(data, "node.json"))
        assert "Traceback" not in node.log()
    finally:
        node.close()

    again = ServiceNode(directory, data, ["--config", config], "second")
    try:
        again.wait_for("READY")
        s3client = s3_client(again.runtime()["s3"][0])
        got = s3client.get_object(Bucket="svc", Key="dir/obj")["Body"].read()
        assert got == payload
        assert again.terminate() == 0
    finally:
        again.close()
    checked = objfs("--data", data, "fsck", "--verify-data")
    assert checked.returncode == 0, checked.stdout + checked.stderr
