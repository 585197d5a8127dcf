"""The node as a service when things go wrong: `objfs serve` killed, misconfigured,
stopped in the middle of a request, losing its mount, or asked hostile things.

Goal: whatever happens to it, the node is either fully up or gone, says why in
one line, and loses nothing it acknowledged.

Method: the harness of test_service.py (service_node.ServiceNode: a child
`objfs serve` with a real NOTIFY_SOCKET) on three 128 MiB device files under
OBJFS_TEST_DIR, listeners on free loopback ports.

- kill -9 under load (S3 PUTs from two threads, fsync'd writes through the
  mount from a third), then `objfs serve` again with the same mount: the stale
  mount is cleared, READY=1 comes, every acknowledged PUT and fsync'd file reads
  back byte-exact over S3 and through the mount, a PUT in flight at the kill is
  whole or absent, `objfs status` finds the new node (not the dead one's
  node.json), and after a clean stop `objfs fsck --verify-data` is clean.
- /health/ready answers 503 (naming what it waits for) from the moment the
  admin listener runs until the node is ready (polled from the log line that
  says the admin listener runs).
- Bad configuration (file, OBJFS_* variable, ports in use, data on tmpfs):
  `objfs serve` prints one `objfs: ...` line naming the key, exits 2, no
  traceback, nothing left listening or mounted; `objfs config check` says the
  same line (ports in use are not its business: it runs beside the node).
- SIGTERM during a 64 MiB GET: the body still completes byte-exact, meanwhile
  /health/ready says 503 "stopping", new S3 connections are refused, exit 0. An
  upload that never finishes is cut after node.graceful_timeout_ms and the node
  still exits 0 soon after, with nothing of it stored; so is a download nobody
  reads (the node gives hypercorn's shielded sends the graceful deadline).
- `fusermount3 -u` from outside stops the whole node: exit 2 with one line,
  both ports closed, node.json gone.
- The admin API: 401 without the right token, JSON errors (400, 404, 409, never
  500) for hostile bucket names, `objfs bucket` and `objfs status` through the
  node, offline, and beside a stale node.json (a dead pid, a reused pid, torn).
  A second `objfs serve` refused on the same data leaves the running node's
  node.json alone.
"""

from __future__ import annotations

import concurrent.futures
import errno
import functools
import hashlib
import http.client
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

import botocore.exceptions
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from service_node import ServiceNode, env, mounted, objfs, s3_client, write_config

from objfs.config import NodeConfig, StoreConfig
from objfs.s3.users import Users
from objfs.store.format import create_data_dir

WORK_DIR = os.environ.get("OBJFS_TEST_DIR", "/var/tmp/objfs-tests")
MiB = 1024 * 1024
BUCKET = "load"

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse here")


@dataclass
class Site:
    """A test's directory: its data, its mountpoint, and the nodes started there."""

    path: str
    nodes: list[ServiceNode] = field(default_factory=list)

    @property
    def data(self) -> str:
        return os.path.join(self.path, "data")

    @property
    def mountpoint(self) -> str:
        return os.path.join(self.path, "mnt")

    def format(self) -> None:
        format_data_dir(self.data)

    def start(self, name: str, *args: str) -> ServiceNode:
        node = ServiceNode(self.path, self.data, list(args), name)
        self.nodes.append(node)
        return node


def format_data_dir(data: str) -> None:
    """What `objfs --data DATA format --device-count 3 --device-size 128M` does, without
    the second it takes to start a process (a busy machine makes it three)."""
    trio.run(functools.partial(create_data_dir, data, device_count=3, device_size_bytes=128 * MiB))


def clean_up(path: str, mountpoint: str, nodes: list[ServiceNode]) -> None:
    for node in nodes:
        node.close()  # kills what still runs
    # A killed node leaves a stale mount, which os.path.ismount cannot see (ENOTCONN).
    if mounted(mountpoint):
        subprocess.run(["fusermount3", "-u", "-z", mountpoint], stderr=subprocess.DEVNULL)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def site() -> Iterator[Site]:
    os.makedirs(WORK_DIR, exist_ok=True)
    made = Site(tempfile.mkdtemp(dir=WORK_DIR, prefix="faults-"))
    try:
        yield made
    finally:
        clean_up(made.path, made.mountpoint, made.nodes)


def content(name: str, size: int) -> bytes:
    """The bytes an object or file named `name` holds: a pure function of its name."""
    return random.Random(hashlib.sha256(name.encode()).digest()).randbytes(size)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def refused(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port (or it takes a connection and drops it
    without answering a request)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            if connection.getsockname() == connection.getpeername():
                return True  # TCP's self-connect: the kernel chose `port` as our own end
            connection.sendall(b"GET / HTTP/1.1\r\nHost: objfs\r\n\r\n")
            return connection.recv(100) == b""
    except (ConnectionRefusedError, ConnectionResetError):
        return True


def request(
    url: str, method: str = "GET", path: str = "", token: str | None = None
) -> tuple[int, str, Any]:
    """One HTTP request sent as written (no URL normalising): status, content
    type, the JSON body."""
    address = urlsplit(url)
    assert address.hostname is not None and address.port is not None
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), json.loads(response.read())
    finally:
        connection.close()


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one `objfs: ...` line of a refused command; everything else it
    printed to stderr must be log lines, and none a traceback."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("objfs: ")]
    assert len(lines) == 1, result.stderr
    others = [line for line in result.stderr.splitlines() if not line.startswith("objfs: ")]
    assert all(re.match(r"(INFO|WARNING) objfs", line) for line in others), result.stderr
    return lines[0]


# -- kill -9 under load, then serve again -------------------------------------------


S3_SIZES = (0, 100, 4000, 70_000, 700_000, 2_100_000)  # inline, one segment, several
FILE_SIZES = (10, 5000, 300_000, 1_500_000)


class Load:
    """Two threads PUT over S3 and one writes files through the mount with
    fsync; every object and file has its own name, and each thread remembers
    what was acknowledged and what was still in flight when the node went."""

    def __init__(self, endpoint: str, directory: str) -> None:
        self.endpoint = endpoint
        self.directory = directory
        self.put: dict[str, bytes] = {}  # acknowledged PUTs, by key
        self.in_flight: dict[str, bytes] = {}  # PUTs sent and never answered
        self.synced: dict[str, bytes] = {}  # files whose fsync returned, by name
        self.errors: list[str] = []  # S3 error answers (the node must not give any)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._put, args=(worker,), daemon=True) for worker in range(2)
        ]
        self._threads.append(threading.Thread(target=self._write, daemon=True))

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wait_for(self, puts: int, files: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if (len(self.put) >= puts and len(self.synced) >= files) or self.errors:
                    break
            time.sleep(0.01)
        assert not self.errors
        assert len(self.put) >= puts and len(self.synced) >= files, (self.put, self.synced)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
            assert not thread.is_alive(), "a load thread hangs on the killed node"

    def _put(self, worker: int) -> None:
        client = s3_client(self.endpoint)
        for number in itertools.count():
            if self._stop.is_set():
                return
            key = f"s3/{worker}/{number}"
            payload = content(key, S3_SIZES[number % len(S3_SIZES)])
            with self._lock:
                self.in_flight[key] = payload
            try:
                client.put_object(Bucket=BUCKET, Key=key, Body=payload)
            except botocore.exceptions.ClientError as exc:  # an answer, but an error
                self.errors.append(f"{key}: {exc}")
                return
            except botocore.exceptions.BotoCoreError:  # the node is gone
                return
            with self._lock:
                self.put[key] = self.in_flight.pop(key)

    def _write(self) -> None:
        for number in itertools.count():
            if self._stop.is_set():
                return
            name = f"file-{number}"
            payload = content(name, FILE_SIZES[number % len(FILE_SIZES)])
            try:
                with open(os.path.join(self.directory, name), "wb") as file:
                    file.write(payload)
                    file.flush()
                    os.fsync(file.fileno())
                    with self._lock:
                        self.synced[name] = payload
            except OSError:  # ENOTCONN: the node is gone
                return


def test_kill_9_under_load_then_serve_again_clears_the_mount_and_keeps_what_was_acknowledged(
    site: Site,
) -> None:
    site.format()
    config = write_config(site.path)
    node = site.start("killed", "--mount", site.mountpoint, "--config", config)
    node.wait_for("READY")
    s3_client(node.runtime()["s3"][0]).create_bucket(Bucket=BUCKET)
    load = Load(node.runtime()["s3"][0], os.path.join(site.mountpoint, BUCKET))
    load.start()
    load.wait_for(puts=8, files=3)
    node.process.kill()  # mid-way: every thread is in the middle of something
    node.process.wait(10)
    load.stop()
    assert not load.errors
    # What the killed node left: a stale mount and a node.json naming a dead pid.
    assert mounted(site.mountpoint)
    with pytest.raises(OSError) as stale:
        os.stat(site.mountpoint)
    assert stale.value.errno == errno.ENOTCONN
    assert node.runtime()["pid"] == node.process.pid

    again = site.start("again", "--mount", site.mountpoint, "--config", config)
    again.wait_for("READY")
    assert "clearing the stale mount" in again.log()
    assert os.path.ismount(site.mountpoint)
    assert os.listdir(site.mountpoint) == [BUCKET]
    runtime = again.runtime()
    assert runtime["pid"] == again.process.pid and runtime["mount"] == site.mountpoint
    client = s3_client(runtime["s3"][0])
    for key, payload in {**load.put, **load.synced}.items():
        got = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert got == payload, f"{key}: {len(got)} bytes, acknowledged {len(payload)}"
        with open(os.path.join(site.mountpoint, BUCKET, key), "rb") as file:
            assert file.read() == payload, key
    for key, payload in load.in_flight.items():  # a PUT is whole or absent
        try:
            got = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            continue
        assert got == payload, f"{key}: {len(got)} bytes of a PUT of {len(payload)}"
    shown = objfs("--data", site.data, "status")
    assert shown.returncode == 0, shown.stderr
    first = shown.stdout.splitlines()[0]
    assert f"pid {again.process.pid}" in first and first.endswith(", ready"), shown.stdout

    assert again.terminate() == 0, again.log()
    assert not mounted(site.mountpoint)
    assert "Traceback" not in again.log()
    checked = objfs("--data", site.data, "fsck", "--verify-data")
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- /health/ready before the node is ready ---------------------------------------------


def readiness_until_ready(admin: str, timeout: float = 30.0) -> list[tuple[int, list[str]]]:
    """Every distinct /health/ready answer from now until the first 200."""
    answers: list[tuple[int, list[str]]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = request(admin, path="/health/ready")
        assert body["ready"] is (status == 200), body
        if not answers or answers[-1] != (status, body["waiting_for"]):
            answers.append((status, body["waiting_for"]))
        if status == 200:
            return answers
    raise AssertionError(f"not ready within {timeout} s: {answers}")


def test_health_ready_answers_503_with_what_it_waits_for_until_the_node_is_ready(
    site: Site,
) -> None:
    """The window between the admin listener and READY is a few hundred ms
    (recovery, S3, the mount); polling from the log line that announces the
    listener catches it. On a machine so busy that the first answer comes after
    it, the node is started again (at most three times)."""
    site.format()
    config = write_config(site.path)
    for attempt in range(3):
        node = site.start(f"start{attempt}", "--mount", site.mountpoint, "--config", config)
        admin = node.wait_for_log(r"objfs\.admin\.server: Running on (http://\S+)")[1]
        answers = readiness_until_ready(admin)
        node.wait_for("READY")
        assert node.terminate() == 0, node.log()
        if answers[0][0] == 503:
            break
    assert answers[-1] == (200, [])
    assert answers[0][0] == 503, f"three starts were ready before the first answer: {answers}"
    services = {"store recovery", "S3 listener", "FUSE mount"}
    for status, waiting in answers[:-1]:
        assert status == 503 and waiting and set(waiting) <= services, answers
    # What it waits for only shrinks, in start-up order.
    for (_, before), (_, after) in itertools.pairwise(answers):
        assert set(after) < set(before), answers


# -- bad configuration -------------------------------------------------------------------

HELD = "HELD"  # stands for the address of a socket the test holds


@dataclass(frozen=True)
class BadConfig:
    sections: Mapping[str, Mapping[str, object]]  # over a config with free ports
    names: tuple[str, ...]  # what the one line must say
    environ: Mapping[str, str] = field(default_factory=dict)
    checked: bool = True  # `objfs config check` refuses it too
    tmpfs: bool = False  # the data directory is on /dev/shm


BAD_CONFIGS = {
    "unknown key": BadConfig(
        {"store": {"inline_max_bites": 100}}, ("store.inline_max_bites", "unknown key")
    ),
    "unknown section": BadConfig({"stor": {"inline_max_bytes": 100}}, ("stor", "unknown section")),
    "string for an int": BadConfig(
        {"node": {"graceful_timeout_ms": "10s"}}, ("node.graceful_timeout_ms", "whole number")
    ),
    "negative size": BadConfig(
        {"store": {"inline_max_bytes": -1}}, ("store.inline_max_bytes", "-1")
    ),
    "negative timeout": BadConfig(
        {"node": {"graceful_timeout_ms": -5}}, ("node.graceful_timeout_ms", "-5")
    ),
    "S3 port in use": BadConfig({"s3": {"address": HELD}}, ("s3.address", "in use"), checked=False),
    "admin port in use": BadConfig(
        {"node": {"admin_address": HELD}}, ("node.admin_address", "in use"), checked=False
    ),
    "bad OBJFS_S3_ADDRESS": BadConfig(
        {},
        ("OBJFS_S3_ADDRESS", "s3.address", "'localhost' is not host:port"),
        {"OBJFS_S3_ADDRESS": "localhost"},
    ),
    "bad OBJFS_NODE_GRACEFUL_TIMEOUT_MS": BadConfig(
        {},
        ("OBJFS_NODE_GRACEFUL_TIMEOUT_MS", "whole number"),
        {"OBJFS_NODE_GRACEFUL_TIMEOUT_MS": "soon"},
    ),
    "data on tmpfs": BadConfig({}, ("tmpfs", "store.buffered_io"), tmpfs=True),
}


def toml(sections: Mapping[str, Mapping[str, object]]) -> str:
    """Tables of strings, whole numbers and booleans (JSON's string escapes are TOML's)."""
    text = []
    for section, values in sections.items():
        text.append(f"[{section}]")
        for key, value in values.items():
            shown = json.dumps(value)  # true/false, 12, "text"
            text.append(f"{key} = {shown}")
        text.append("")
    return "\n".join(text)


@pytest.fixture(scope="module")
def formatted() -> Iterator[str]:
    """One formatted data directory for the bad-config cases (none of them writes to it
    beyond a checkpoint)."""
    os.makedirs(WORK_DIR, exist_ok=True)
    path = tempfile.mkdtemp(dir=WORK_DIR, prefix="faults-config-")
    try:
        format_data_dir(path)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("case", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_a_bad_config_is_one_line_naming_the_problem_and_nothing_is_left_running(
    site: Site, formatted: str, case: BadConfig
) -> None:
    if case.tmpfs and not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm here")
    s3_port, admin_port = free_port(), free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        holding = f"127.0.0.1:{held.getsockname()[1]}"
        sections: dict[str, dict[str, object]] = {
            "s3": {"address": f"127.0.0.1:{s3_port}"},
            "node": {"admin_address": f"127.0.0.1:{admin_port}", "graceful_timeout_ms": 10_000},
        }
        for section, values in case.sections.items():
            for key, value in values.items():
                sections.setdefault(section, {})[key] = holding if value == HELD else value
        config = os.path.join(site.path, "objfs.toml")
        with open(config, "w", encoding="utf-8") as file:
            file.write(toml(sections))
        shm = tempfile.mkdtemp(dir="/dev/shm", prefix="objfs-test-") if case.tmpfs else None
        data = formatted if shm is None else os.path.join(shm, "data")
        try:
            common = ("--data", data, "--config", config)
            # At once: each spends a second starting Python, and `config check` only
            # reads the config and looks at the data directory's filesystem.
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                serving = pool.submit(
                    objfs, *common, "serve", "--mount", site.mountpoint, environ=case.environ
                )
                checking = pool.submit(objfs, *common, "config", "check", environ=case.environ)
                served, checked = serving.result(), checking.result()
            if shm is not None:
                assert os.listdir(shm) == [], "files made on tmpfs"
        finally:
            if shm is not None:
                shutil.rmtree(shm)
        assert served.returncode == 2, served.stdout + served.stderr
        line = error_line(served)
        for name in case.names:
            assert name in line, line
        # Nothing left behind: no listener, no mount, no node.json. (Only a node that
        # got as far as binding could leave a listener; a port nobody bound might be
        # taken by another process on this machine meanwhile.)
        if case.sections.get("s3", {}).get("address") == HELD:
            assert refused(admin_port)  # the admin listener was up before S3 failed
        assert not mounted(site.mountpoint)
        assert not os.path.exists(os.path.join(formatted, "node.json"))
    if not case.checked:  # a port in use is the state of the machine, not of the config
        assert checked.returncode == 0, checked.stderr
        assert ": valid" in checked.stdout
    elif case.tmpfs:  # said the way the config check says things: by key
        assert checked.returncode == 2, checked.stdout + checked.stderr
        checked_line = error_line(checked)
        assert "store.data_dir" in checked_line, checked_line
        for name in case.names:
            assert name in checked_line, checked_line
    else:
        assert checked.returncode == 2, checked.stdout + checked.stderr
        assert checked.stderr == line + "\n"


def test_config_check_prints_every_effective_key(site: Site) -> None:
    config = os.path.join(site.path, "objfs.toml")
    with open(config, "w", encoding="utf-8") as file:
        file.write(toml({"s3": {"address": "127.0.0.1:0"}, "store": {"inline_max_bytes": 1000}}))
    checked = objfs(
        "--data",
        site.data,
        "--config",
        config,
        "config",
        "check",
        environ={"OBJFS_NODE_GRACEFUL_TIMEOUT_MS": "2500"},
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""
    assert checked.stdout.splitlines()[0] == f"config: {config}: valid"
    shown = dict(
        line.strip().split(" = ", 1) for line in checked.stdout.splitlines()[1:] if " = " in line
    )
    defaults = NodeConfig(StoreConfig())
    expected = {
        f"{section.name}.{item.name}"
        for section in fields(defaults)
        for item in fields(getattr(defaults, section.name))
    }
    assert set(shown) == expected
    assert shown["s3.address"] == "'127.0.0.1:0'"  # the file
    assert shown["store.inline_max_bytes"] == "1000"  # the file
    assert shown["node.graceful_timeout_ms"] == "2500"  # the environment
    assert shown["store.data_dir"] == repr(site.data)  # the flag
    assert shown["node.admin_address"] == "'127.0.0.1:9001'"  # the default


# -- SIGTERM: graceful drain -------------------------------------------------------------


def open_get(endpoint: str, bucket: str, key: str) -> http.client.HTTPResponse:
    """A GET of the whole object over its own connection (a presigned URL), headers read."""
    signer = s3_client(endpoint, signature_version="s3v4")
    url = urlsplit(
        signer.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    )
    assert url.hostname is not None and url.port is not None
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.request("GET", f"{url.path}?{url.query}")
    response = connection.getresponse()
    assert response.status == 200, response.read()
    return response


def test_sigterm_lets_a_large_get_finish_and_takes_no_new_connections(site: Site) -> None:
    site.format()
    node = site.start("draining", "--config", write_config(site.path))  # 10 s graceful
    node.wait_for("READY")
    runtime = node.runtime()
    endpoint, admin = runtime["s3"][0], runtime["admin"][0]
    s3_port = urlsplit(endpoint).port
    assert s3_port is not None
    client = s3_client(endpoint)
    client.create_bucket(Bucket="drain")
    payload = content("big", 64 * MiB)
    client.put_object(Bucket="drain", Key="big", Body=payload)

    response = open_get(endpoint, "drain", "big")
    first = response.read(4 * MiB)
    stopped = time.monotonic()
    node.process.send_signal(signal.SIGTERM)
    node.wait_for("STOPPING", timeout=10)
    node.process.send_signal(signal.SIGTERM)  # a second one changes nothing
    # The admin listener still answers while S3 drains: not ready, because stopping.
    status, _, body = request(admin, path="/health/ready")
    assert (status, body) == (503, {"ready": False, "waiting_for": ["stopping"]})
    assert request(admin, path="/health/live")[0] == 200
    # New connections are refused; a pooled idle one was closed, so the SDK's
    # next request fails too.
    assert refused(s3_port)
    with pytest.raises(botocore.exceptions.BotoCoreError):
        client.head_object(Bucket="drain", Key="big")
    assert node.process.poll() is None, "the node left before its request finished"

    rest = response.read()
    assert len(first) + len(rest) == len(payload)
    assert first + rest == payload
    assert node.process.wait(15) == 0, node.log()
    assert time.monotonic() - stopped < 10  # it did not wait out the graceful timeout
    assert not os.path.exists(os.path.join(site.data, "node.json"))
    assert refused(s3_port)
    assert "Traceback" not in node.log()
    assert "already stopping" in node.log()


GRACEFUL_MS = 1000
STOP_MARGIN_S = 5.0  # objfs.node gives the listeners this long past the graceful timeout
CHECKPOINT_S = 3.0  # and the final checkpoint takes at most about this long here


def wait_for_body_bytes(admin: str, at_least: int, timeout: float = 10.0) -> None:
    """Until /metrics says S3 has read `at_least` bytes of request bodies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(admin + "/metrics", timeout=10) as page:
            for family in text_string_to_metric_families(page.read().decode()):
                for sample in family.samples:
                    if sample.name == "objfs_s3_received_bytes_total" and sample.value >= at_least:
                        return
        time.sleep(0.02)
    raise AssertionError(f"S3 read less than {at_least} body bytes in {timeout} s")


def wait_for_exit(node: ServiceNode, timeout: float) -> tuple[int | None, float]:
    """Its exit code (None: still running after `timeout`) and when it came."""
    started = time.monotonic()
    try:
        code: int | None = node.process.wait(timeout)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - started


def test_an_upload_still_running_after_the_graceful_timeout_is_cut_and_the_node_exits_0(
    site: Site,
) -> None:
    site.format()
    config = write_config(site.path, graceful_timeout_ms=GRACEFUL_MS)
    node = site.start("cutting", "--config", config)
    node.wait_for("READY")
    signer = s3_client(node.runtime()["s3"][0], signature_version="s3v4")
    signer.create_bucket(Bucket="drain")
    url = urlsplit(
        signer.generate_presigned_url("put_object", Params={"Bucket": "drain", "Key": "cut"})
    )
    assert url.hostname is not None and url.port is not None
    upload = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    upload.putrequest("PUT", f"{url.path}?{url.query}")
    upload.putheader("Content-Length", str(64 * MiB))
    upload.endheaders()
    upload.send(content("cut", MiB))  # and never the rest
    wait_for_body_bytes(node.runtime()["admin"][0], 64 * 1024)  # the handler reads it
    node.process.send_signal(signal.SIGTERM)
    code, took = wait_for_exit(node, GRACEFUL_MS / 1000 + STOP_MARGIN_S + CHECKPOINT_S)
    assert code == 0, f"{code} after {took:.1f} s:\n{node.log()}"
    # It waited for the request, then cut it.
    assert took >= GRACEFUL_MS / 1000 - 0.1, took
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        upload.getresponse()
    assert "Traceback" not in node.log()
    # The cut PUT left nothing behind: no object, no space held.
    shown = objfs("--data", site.data, "status")
    assert "objects:    0 (0 versions, 0 bytes)" in shown.stdout, shown.stdout
    checked = objfs("--data", site.data, "fsck", "--verify-data")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_download_nobody_reads_is_cut_after_the_graceful_timeout_and_the_node_exits_0(
    site: Site,
) -> None:
    site.format()
    config = write_config(site.path, graceful_timeout_ms=GRACEFUL_MS)
    node = site.start("cutting", "--config", config)
    node.wait_for("READY")
    endpoint = node.runtime()["s3"][0]
    client = s3_client(endpoint)
    client.create_bucket(Bucket="drain")
    payload = content("big", 64 * MiB)
    client.put_object(Bucket="drain", Key="big", Body=payload)

    response = open_get(endpoint, "drain", "big")
    assert response.read(MiB) == payload[:MiB]  # and never another byte while the node runs
    node.process.send_signal(signal.SIGTERM)
    code, took = wait_for_exit(node, GRACEFUL_MS / 1000 + STOP_MARGIN_S + CHECKPOINT_S)
    assert code is not None, f"the node still runs {took:.1f} s after SIGTERM"
    assert code == 0, node.log()
    assert took >= GRACEFUL_MS / 1000 - 0.1, took
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        response.read()
    assert "Traceback" not in node.log()
    checked = objfs("--data", site.data, "fsck", "--verify-data")
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- a service failing stops the node ----------------------------------------------------


def test_unmounting_from_outside_stops_the_whole_node(site: Site) -> None:
    site.format()
    node = site.start("unmounted", "--mount", site.mountpoint, "--config", write_config(site.path))
    node.wait_for("READY")
    runtime = node.runtime()
    s3_port, admin_port = urlsplit(runtime["s3"][0]).port, urlsplit(runtime["admin"][0]).port
    assert s3_port is not None and admin_port is not None
    client = s3_client(runtime["s3"][0])
    client.create_bucket(Bucket="kept")
    client.put_object(Bucket="kept", Key="k", Body=b"kept through the stop")

    unmounted = subprocess.run(["fusermount3", "-u", site.mountpoint], capture_output=True)
    assert unmounted.returncode == 0, unmounted.stderr
    code = node.process.wait(15)  # a half-alive node would hang here
    assert code == 2, node.log()
    lines = [line for line in node.log().splitlines() if line.startswith("objfs: ")]
    assert lines[-1] == f"objfs: the mount at {site.mountpoint} ended while the node ran"
    assert "Traceback" not in node.log()
    assert refused(s3_port) and refused(admin_port)
    assert not os.path.exists(os.path.join(site.data, "node.json"))
    assert not mounted(site.mountpoint)
    checked = objfs("--data", site.data, "fsck", "--verify-data")
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- the admin API -----------------------------------------------------------------------

HOSTILE_PATHS = [
    "/admin/buckets/../x",
    "/admin/buckets/..%2Fx",
    "/admin/buckets/..",
    "/admin/buckets/a%00b",
    "/admin/buckets/%00",
    "/admin/buckets/" + "a" * 2048,
    "/admin/buckets/%ff%fe",
    "/admin/buckets/has%20space",
    "/admin/buckets/a/b",
    "/admin/buckets/UPPER",
    "/admin/buckets/fine-name?owner=%00",
    "/admin/buckets/fine-name?owner=nobody",
]


def test_admin_api_wants_the_token_and_answers_every_mistake_in_json(site: Site) -> None:
    site.format()
    node = site.start("admin", "--config", write_config(site.path))
    node.wait_for("READY")
    runtime = node.runtime()
    admin, token = runtime["admin"][0], runtime["token"]

    for given in (None, "wrong", token + "x", token[:-1]):
        status, kind, body = request(admin, path="/admin/status", token=given)
        assert (status, kind) == (401, "application/json") and "token" in body["error"]
    status, kind, body = request(admin, path="/admin/status", token=token)
    assert (status, kind) == (200, "application/json")
    assert body["ready"] is True and body["waiting_for"] == []
    assert body["pid"] == node.process.pid and body["s3"] == runtime["s3"]
    assert [device["state"] for device in body["devices"]] == ["up"] * 3
    assert body["erasure"].startswith("2+1") and body["health"] == "healthy"

    for path in HOSTILE_PATHS:
        status, kind, body = request(admin, "PUT", path, token)
        assert (status, kind) == (400, "application/json"), (path, status, body)
        assert isinstance(body["error"], str) and len(body["error"]) < 400, (path, body)
    assert request(admin, path="/admin/buckets", token=token)[2] == []  # none was made

    assert request(admin, "PUT", "/admin/buckets/full", token)[0] == 201
    s3_client(runtime["s3"][0]).put_object(Bucket="full", Key="k", Body=b"x")
    status, _, body = request(admin, "DELETE", "/admin/buckets/missing", token)
    assert status == 404 and "missing" in body["error"]
    status, _, body = request(admin, "DELETE", "/admin/buckets/full", token)
    assert status == 409 and "not empty" in body["error"]
    status, _, body = request(admin, "PUT", "/admin/buckets/full", token)
    assert status == 409 and "exists" in body["error"]
    assert request(admin, "POST", "/admin/buckets/full", token)[0] == 405
    assert request(admin, path="/admin/nothing", token=token)[0] == 404

    assert node.terminate() == 0
    log = node.log()
    assert "Traceback" not in log and "ERROR" not in log, log


def add_user(data: str, name: str) -> None:
    """What `objfs user create NAME` does (the root keys from the harness's environment)."""
    users, _ = Users.load(data, environ=env())
    users.create(name)


def bucket(data: str, *args: str) -> subprocess.CompletedProcess[str]:
    return objfs("--data", data, "bucket", *args)


def test_bucket_commands_through_the_running_node_show_owners_by_name(site: Site) -> None:
    site.format()
    add_user(site.data, "alice")
    node = site.start("buckets", "--config", write_config(site.path))
    node.wait_for("READY")
    runtime = node.runtime()

    assert bucket(site.data, "create", "by-root").stdout == "bucket by-root created\n"
    assert bucket(site.data, "create", "by-alice", "--owner", "alice").returncode == 0
    assert bucket(site.data, "list").stdout == "by-alice\talice\nby-root\troot\n"
    s3_client(runtime["s3"][0]).put_object(Bucket="by-root", Key="k", Body=b"x")
    full = bucket(site.data, "delete", "by-root")
    assert full.returncode == 2 and full.stdout == ""
    assert error_line(full) == "objfs: bucket 'by-root' is not empty"
    assert bucket(site.data, "delete", "by-alice").stdout == "bucket by-alice deleted\n"
    listed = request(runtime["admin"][0], path="/admin/buckets", token=runtime["token"])[2]
    assert [(each["name"], each["owner"]) for each in listed] == [("by-root", "root")]
    assert node.terminate() == 0
    assert "Traceback" not in node.log()


def test_bucket_commands_without_a_node_work_on_the_devices(site: Site) -> None:
    site.format()
    add_user(site.data, "alice")
    assert bucket(site.data, "create", "offline", "--owner", "alice").returncode == 0
    assert bucket(site.data, "list").stdout == "offline\talice\n"
    nobody = bucket(site.data, "create", "nobodys", "--owner", "nobody")
    assert nobody.returncode == 2
    assert error_line(nobody).startswith("objfs: no user named 'nobody'")
    assert bucket(site.data, "delete", "offline").stdout == "bucket offline deleted\n"
    assert bucket(site.data, "list").stdout == ""


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_status_beside_a_stale_node_json_reads_the_devices(site: Site) -> None:
    site.format()
    closed = f"http://127.0.0.1:{free_port()}"
    stale = {"admin": [closed], "s3": [], "mount": None, "token": "t", "version": "0.1.0"}
    for left in (
        {**stale, "pid": dead_pid()},  # killed: its pid is gone
        {**stale, "pid": os.getpid()},  # its pid taken by another process since
        '{"pid": ',  # torn
    ):
        with open(os.path.join(site.data, "node.json"), "w", encoding="utf-8") as file:
            file.write(left if isinstance(left, str) else json.dumps(left))
        shown = objfs("--data", site.data, "status")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(f"node:       not running on {site.data}"), shown.stdout
        devices = re.search(r"^devices: +(.*)$", shown.stdout, re.MULTILINE)
        assert devices is not None, shown.stdout
        assert devices[1].split(", ") == [
            os.path.join(site.data, "devices", f"dev{index}.img") for index in range(3)
        ]
    # The other commands that look for a node go to the devices too.
    made = bucket(site.data, "create", "beside-stale")
    assert made.returncode == 0, made.stderr


def test_a_second_serve_refused_on_the_same_data_leaves_the_running_node_reachable(
    site: Site,
) -> None:
    site.format()
    config = write_config(site.path)
    node = site.start("running", "--config", config)
    node.wait_for("READY")
    second = objfs("--data", site.data, "--config", config, "serve", timeout=60)
    assert second.returncode == 2
    assert error_line(second).endswith("in use by another objfs process")
    assert node.process.poll() is None
    shown = objfs("--data", site.data, "status")
    assert shown.returncode == 0, shown.stderr
    assert f"pid {node.process.pid}" in shown.stdout
    assert os.path.exists(os.path.join(site.data, "node.json"))
    assert node.terminate() == 0
