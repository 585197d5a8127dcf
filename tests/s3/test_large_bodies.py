"""A 2 GiB object streams through the S3 face with a flat server RSS, both ways.

Method: the node runs as a subprocess (`python -m objfs --config CFG serve`, as
an operator runs it) on three 2 GiB device files in /var/tmp (2+1 erasure
coding: 4 GiB of data room), so its RSS is its own. The PUT is a raw
`http.client` request signed with SigV4 and `UNSIGNED-PAYLOAD`, whose body is
generated block by block while it is sent (nothing holds the 2 GiB, on either
side); the GET is boto3's streaming body read in 1 MiB chunks. A sampler reads
/proc/PID/status VmRSS every 100 ms during each transfer; the growth over the
value just before it must stay under 64 MiB. A 64 MiB round trip first warms
the paths (worker threads, allocator arenas, imports), so that one-time costs
are not counted as growth. Bytes are checked by MD5: the PUT's ETag (the
server's MD5 of what it received) and the MD5 of what the GET returned must
both equal the MD5 of what was sent.

objfs sets M_MMAP_THRESHOLD=32 MiB and M_TRIM_THRESHOLD=256 MiB at start
(store/erasure.py, for pyeclib's speed); with one glibc arena per worker thread
freed 1-3 MiB segment buffers stayed in each thread's arena and the RSS climbed
to a plateau 100+ MiB up. objfs therefore also caps the arenas at two
(M_ARENA_MAX), and this test holds it to that: the whole 2 GiB round trip must
move the RSS by less than 64 MiB.

Last, bodies a client abandons half-way, on an in-process node (s3_node.py)
whose free space the tests can read: a cut GET must release what its reader
pinned, a cut PUT must free what its writer stored.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from s3_node import ROOT_KEY, ROOT_SECRET, WORK_DIR, Node, boto3_client

from objfs.store.format import create_data_dir

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
OBJECT_SIZE_BYTES = 2 * GiB
RSS_GROWTH_MAX_BYTES = 64 * MiB
SAMPLE_INTERVAL_S = 0.1
BLOCK_BYTES = 1 * MiB


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    endpoint: str
    log_path: Path


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """Format (as `objfs format` does), then `objfs serve` in a subprocess; stopped with
    SIGINT (Ctrl-C)."""
    os.makedirs(WORK_DIR, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="large-", dir=WORK_DIR))
    data, config, log_path = root / "data", root / "objfs.toml", root / "node.log"
    # Port 0: the kernel picks a free port, which the ready line names (no race).
    config.write_text(
        '[store]\nscrub_rate_bytes_per_s = 0\n\n[s3]\naddress = "127.0.0.1:0"\n'
        '\n[node]\nadmin_address = "127.0.0.1:0"\n',
        encoding="utf-8",
    )
    # Two malloc arenas: see the module docstring.
    env = dict(
        os.environ,
        OBJFS_ROOT_ACCESS_KEY=ROOT_KEY,
        OBJFS_ROOT_SECRET_KEY=ROOT_SECRET,
    )
    objfs = [sys.executable, "-m", "objfs", "--data", str(data), "--config", str(config)]
    # What `objfs format --device-count 3 --device-size 2G` does, in this process
    # (starting `objfs` costs a second of imports; serve below is the one that counts).
    trio.run(
        functools.partial(create_data_dir, str(data), device_count=3, device_size_bytes=2 * GiB)
    )
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [*objfs, "serve"], env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"serving S3 on (http://\S+?)[,;]", log_path.read_text())):
            assert process.poll() is None, f"objfs serve exited:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"objfs serve not ready:\n{log_path.read_text()}"
            time.sleep(0.05)
        yield ServerProcess(process, found.group(1), log_path)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        finally:
            log = log_path.read_text(encoding="utf-8", errors="replace")
            shutil.rmtree(root, ignore_errors=True)
        assert code == 0 and "stopped cleanly" in log, log
        assert "ERROR" not in log and "Traceback" not in log, log


@dataclass
class RssSampler:
    """VmRSS of `pid` every 100 ms, in a thread, while in its `with` block."""

    pid: int
    samples_bytes: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * KiB
        raise AssertionError("no VmRSS line")

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self.samples_bytes.append(self.rss_bytes())

    def __enter__(self) -> RssSampler:
        self.before_bytes = self.rss_bytes()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples_bytes.append(self.rss_bytes())

    def growth_bytes(self) -> int:
        return max(self.samples_bytes) - self.before_bytes

    def describe(self) -> str:
        return (
            f"RSS before {self.before_bytes / MiB:.1f} MiB, peak "
            f"{max(self.samples_bytes) / MiB:.1f} MiB over {len(self.samples_bytes)} samples"
        )


def generated_blocks(size_bytes: int, seed: int) -> Iterator[bytes]:
    """`size_bytes` of deterministic pseudo-random bytes, 1 MiB at a time, made on the fly.

    Block i is one random 1 MiB block rotated by an i-dependent amount and stamped
    with i, so every block differs (a misplaced block changes the MD5) and making
    one costs a copy, not a random generator's time."""
    base = random.Random(seed).randbytes(BLOCK_BYTES)
    for index in range(-(-size_bytes // BLOCK_BYTES)):
        shift = (index * 7919) % BLOCK_BYTES
        block = index.to_bytes(8, "big") + (base[shift:] + base[:shift])[8:]
        yield block[: min(BLOCK_BYTES, size_bytes - index * BLOCK_BYTES)]


def signed_put(
    endpoint: str, path: str, size_bytes: int, blocks: Iterator[bytes]
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """PUT `blocks` to `path` as one streamed body (Content-Length, SigV4, UNSIGNED-PAYLOAD).

    Returns the answer's status, headers (any case) and body."""
    request = AWSRequest(
        method="PUT",
        url=f"{endpoint}{path}",
        headers={"Content-Length": str(size_bytes), "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"},
    )
    SigV4Auth(Credentials(ROOT_KEY, ROOT_SECRET), "s3", "us-east-1").add_auth(request)
    host = endpoint.removeprefix("http://")
    connection = http.client.HTTPConnection(host, timeout=120)
    try:
        connection.putrequest("PUT", path, skip_accept_encoding=True)
        for name, value in request.headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        for block in blocks:
            connection.send(block)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def hashed(blocks: Iterator[bytes], md5: Any) -> Iterator[bytes]:
    for block in blocks:
        md5.update(block)
        yield block


def client(server: ServerProcess) -> Any:
    return boto3_client(server.endpoint, read_timeout=120)


def round_trip(server: ServerProcess, key: str, size_bytes: int) -> tuple[RssSampler, RssSampler]:
    """PUT then GET `size_bytes` under `key`, sampling the server's RSS during each."""
    s3 = client(server)
    sent = hashlib.md5()
    with RssSampler(server.process.pid) as put_rss:
        status, headers, body = signed_put(
            server.endpoint,
            f"/large/{key}",
            size_bytes,
            hashed(generated_blocks(size_bytes, seed=size_bytes), sent),
        )
    assert status == 200, body
    assert headers["ETag"] == f'"{sent.hexdigest()}"'
    received, received_bytes = hashlib.md5(), 0
    with RssSampler(server.process.pid) as get_rss:
        got = s3.get_object(Bucket="large", Key=key)
        assert got["ContentLength"] == size_bytes
        for chunk in got["Body"].iter_chunks(BLOCK_BYTES):
            received.update(chunk)
            received_bytes += len(chunk)
    assert received_bytes == size_bytes
    assert received.hexdigest() == sent.hexdigest()
    return put_rss, get_rss


def test_2gib_put_and_get_stream_with_flat_rss(server: ServerProcess) -> None:
    s3 = client(server)
    s3.create_bucket(Bucket="large")
    round_trip(server, "warm-up", 64 * MiB)
    s3.delete_object(Bucket="large", Key="warm-up")
    started = time.monotonic()
    put_rss, get_rss = round_trip(server, "two-gib", OBJECT_SIZE_BYTES)
    elapsed_s = time.monotonic() - started
    print(f"2 GiB PUT+GET in {elapsed_s:.1f} s; PUT {put_rss.describe()}; GET {get_rss.describe()}")
    assert put_rss.growth_bytes() < RSS_GROWTH_MAX_BYTES, put_rss.describe()
    assert get_rss.growth_bytes() < RSS_GROWTH_MAX_BYTES, get_rss.describe()
    head = s3.head_object(Bucket="large", Key="two-gib")
    assert head["ContentLength"] == OBJECT_SIZE_BYTES


# -- bodies cut off by the client (an in-process node: its free space is visible) -------


def free_bytes(node: Node) -> int:
    return int(node.call(lambda: node.store.statistics().free_bytes))


def wait_for_free_bytes(node: Node, expected: int, timeout_s: float = 2.0) -> int:
    """Free space once it is `expected` again (or what it is after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while (now := free_bytes(node)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return now


def objfs_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("objfs") and record.levelno >= logging.ERROR
    ]


def test_get_cut_off_by_the_client_releases_the_version(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    """The reader pins the version's segments; a GET abandoned half-way must unpin
    them, or deleting the object would not give its space back."""
    s3 = node.client()
    s3.create_bucket(Bucket="cut-get")
    before = free_bytes(node)
    data = os.urandom(48 * MiB)
    s3.put_object(Bucket="cut-get", Key="k", Body=data)
    body = s3.get_object(Bucket="cut-get", Key="k")["Body"]
    assert body.read(8 * MiB) == data[: 8 * MiB]
    body.close()  # drops the connection with 40 MiB unread
    assert s3.get_object(Bucket="cut-get", Key="k")["Body"].read() == data
    s3.delete_object(Bucket="cut-get", Key="k")
    assert wait_for_free_bytes(node, before) == before
    assert objfs_errors(caplog) == []


def test_put_cut_off_by_the_client_frees_its_space(node: Node) -> None:
    """A client that declares 64 MiB, sends 24 MiB and hangs up: nothing becomes
    visible, and every segment already stored is freed."""
    s3 = node.client()
    s3.create_bucket(Bucket="cut-put")
    before = free_bytes(node)
    request = AWSRequest(
        method="PUT",
        url=f"{node.endpoint}/cut-put/partial",
        headers={"Content-Length": str(64 * MiB), "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"},
    )
    SigV4Auth(Credentials(ROOT_KEY, ROOT_SECRET), "s3", "us-east-1").add_auth(request)
    connection = http.client.HTTPConnection(node.endpoint.removeprefix("http://"), timeout=30)
    connection.putrequest("PUT", "/cut-put/partial", skip_accept_encoding=True)
    for name, value in request.headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    for block in generated_blocks(24 * MiB, seed=24):
        connection.send(block)
    assert connection.sock is not None
    connection.sock.shutdown(socket.SHUT_RDWR)
    connection.close()
    time.sleep(0.5)
    assert s3.list_objects_v2(Bucket="cut-put").get("Contents", []) == []
    assert wait_for_free_bytes(node, before) == before
