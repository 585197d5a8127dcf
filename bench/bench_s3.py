"""S3 face: boto3 PUT/GET of 64 MiB objects, 4 KiB ops/s; against the store and the framework.

What it measures, in one run, on a node started as `python -m objfs serve` in a
child process (six 512 MiB device files under --dir, 4+2 as the embedded
default; root keys from OBJFS_ROOT_ACCESS_KEY / OBJFS_ROOT_SECRET_KEY):

1. **Large objects**: PUT (`put_object` with a 64 MiB `bytes` body) and GET
   (`get_object`, body read whole) of 64 MiB objects from 1 and from 4 client
   threads at once, each with its own boto3 client (aggregate MB/s from the
   first request's start to the last one's end). Twice: with boto3's defaults
   (a CRC32 of the body on the client side, sent as x-amz-checksum-crc32 and
   checked by the node; GETs ask for it back and check it) and with
   `request_checksum_calculation` and `response_checksum_validation` =
   "when_required" (neither). Over http, botocore always signs the payload: the
   client computes its SHA256 and the node checks it, in both variants.
   **Limit**: the store itself, measured the same round on the same data
   directory by a child process (the node stopped) that opens it as the node
   does (`open_store` of the same config) and runs `open_writer` (1 MiB writes,
   durable `commit()`) and `open_reader` (1 MiB reads, compared and dropped) of
   64 MiB, 1 and 4 at once (trio tasks). Target: S3 / store >= 0.6.

2. **Small objects**: 4 KiB PUT and GET ops/s with 32 connections kept busy
   for a few seconds by one light client: a `selectors` loop in this process
   that sends raw HTTP/1.1 requests signed beforehand (SigV4 with
   `botocore.auth.S3SigV4Auth`, payload SHA256 signed as boto3 does over http;
   one set of keys per connection, 16 each) and parses the responses itself
   (status 200, Content-Length, GET bodies compared); it spends 40-140 us of CPU
   per request. boto3 spends ~2 ms per 4 KiB call here (2.2 ms PUT, 1.8 ms GET,
   one thread), twice what the framework server spends, so 32 boto3 threads
   would measure the client, not the server. **Limit**: the
   framework ceiling -- a minimal QuartTrio app (one route: GET returns 4 KiB,
   PUT reads the body), served by `hypercorn.trio.serve` with the node's own
   hypercorn config (`objfs.node.hypercorn_config`) in another child process on
   another loopback port, hit by the same client with the same requests.
   Targets: objfs / framework >= 0.7 for GET, >= 0.5 for PUT.

Server CPU per request (or per object) is the child process's CPU time (utime
+ stime of all its threads, /proc/PID/stat) over the phase, divided by the
requests, with the share of its main thread (the trio event loop, which runs
all of hypercorn, Quart and the handlers) beside it; the client's own CPU
(getrusage of this process) is printed too, since client and servers share the
machine's two vCPUs. The node runs as `python -m objfs --data DIR --config CFG
serve` (CFG: `[s3] address = "127.0.0.1:PORT"`); `python -m objfs.cli` would
import the CLI without running it.

How: the device files are created, written whole once (so nobody pays ext4's
conversion of unwritten extents; --no-precondition skips it) and formatted with
`python -m objfs format DEVICES...`. The framework server runs for the whole
run; the node is started for each round and stopped (SIGTERM) before the store
child runs, since both open the same devices. Each round: start the node; one
unmeasured 64 MiB PUT and GET (a fresh process starts its worker threads and
faults in its buffers); the large-object phases (the two checksum variants
taking turns at going first); the small-object phases (objfs and framework
taking turns at going first); stop the node; the store child (which also warms
up with one unmeasured PUT and GET). Ratios are taken within a round; every
figure is the median over --repeat rounds with min and max.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from _util import (
    DEFAULT_BASE_DIR,
    MB,
    Rounds,
    Summary,
    percentile,
    precondition,
    print_row,
    scratch_dir,
    verdict,
)

BUCKET = "bench"
ROOT_KEY, ROOT_SECRET = "BENCHROOTKEY0123", "bench-root-secret-0123456789abcdef"
REGION = "us-east-1"
MiB = 1024 * 1024
SMALL_BYTES = 4096
LARGE_TARGET = 0.6
SMALL_GET_TARGET = 0.7
SMALL_PUT_TARGET = 0.5
VARIANTS = {
    "default": {},
    "when_required": {
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    },
}
STARTUP_TIMEOUT_S = 60.0


def small_body() -> bytes:
    """The 4 KiB body every small PUT sends and the framework's GET returns."""
    return random.Random(SMALL_BYTES).randbytes(SMALL_BYTES)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=DEFAULT_BASE_DIR, help="where the device files go")
    parser.add_argument("--device-mib", type=int, default=512, help="size of each device file")
    parser.add_argument("--devices", type=int, default=6, help="device files (6: 4+2)")
    parser.add_argument("--object-mib", type=int, default=64, help="large object size (MiB)")
    parser.add_argument(
        "--clients", default="1,4", help="client threads for the large objects (comma list)"
    )
    parser.add_argument("--connections", type=int, default=32, help="small-object connections")
    parser.add_argument("--keys", type=int, default=16, help="small-object keys per connection")
    parser.add_argument("--seconds", type=float, default=2.5, help="length of each small phase")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (median of them)")
    parser.add_argument(
        "--no-precondition", action="store_true", help="do not write the device files first"
    )
    # Internal: this script is also each child process.
    parser.add_argument("--framework-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store-step", help=argparse.SUPPRESS)
    return parser.parse_args()


# -- child processes -----------------------------------------------------------


def process_cpu_seconds(pid: int, thread: bool = False) -> float:
    """utime + stime so far of process `pid` (every thread, dead ones too), or only of
    its main thread (the event loop of a trio server), from /proc."""
    with open(f"/proc/{pid}/task/{pid}/stat" if thread else f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Server:
    """A server in a child process, ready once `ready_text` appears in its log."""

    def __init__(self, argv: list[str], log_path: str, ready_text: str, env: dict[str, str]):
        self.argv, self.log_path, self.ready_text, self.env = argv, log_path, ready_text, env
        self.process: subprocess.Popen[bytes] | None = None
        self.log_offset = 0

    def start(self) -> float:
        """Start and wait until ready; returns the seconds that took."""
        start = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.log_offset = log.tell()  # the log of earlier starts is kept before it
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        while self.ready_text not in self.log_text():
            if self.process.poll() is not None or time.perf_counter() - start > STARTUP_TIMEOUT_S:
                self.process.kill()
                self.process.wait()
                raise RuntimeError(f"{self.argv} did not start:\n{self.log_text()[-2000:]}")
            time.sleep(0.02)
        return time.perf_counter() - start

    def log_text(self) -> str:
        """What this start has logged so far."""
        with open(self.log_path, "rb") as file:
            file.seek(self.log_offset)
            return file.read().decode(errors="replace")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU seconds so far: (the whole process, its main thread)."""
        return process_cpu_seconds(self.pid), process_cpu_seconds(self.pid, thread=True)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"{self.argv} did not stop in 60 s") from None
        if code != 0:
            raise RuntimeError(f"{self.argv} exited with {code}:\n{self.log_text()[-2000:]}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_framework(port: int) -> None:
    """The framework ceiling: a minimal QuartTrio app on the node's hypercorn setup."""
    import trio
    from hypercorn.trio import serve
    from quart import Response, request
    from quart_trio import QuartTrio

    from objfs.config import NodeConfig, S3Config, StoreConfig
    from objfs.node import hypercorn_config

    body = small_body()
    app = QuartTrio("framework")

    @app.route("/<path:path>", methods=["GET", "PUT"])
    async def route(path: str) -> Response:
        if request.method == "PUT":
            await request.get_data()
            return Response(b"")
        return Response(body, content_type="binary/octet-stream")

    config = hypercorn_config(NodeConfig(StoreConfig(), S3Config(address=f"127.0.0.1:{port}")))

    async def main() -> None:
        stop = trio.Event()

        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    stop.set()
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signal)
            bound = await nursery.start(
                partial(serve, app, config, shutdown_trigger=stop.wait, mode="asgi")
            )
            print(f"framework: serving on {', '.join(bound)}", flush=True)

    trio.run(main)


def store_step(data_dir: str, object_mib: int, counts: list[int]) -> None:
    """The store-level limit, in its own process (the node stopped): PUT and GET of
    64 MiB, `count` at once; prints one JSON line of MB/s and CPU per object."""
    import trio

    from objfs.config import load_config
    from objfs.store import Store, open_store

    data = os.urandom(object_mib * MiB)
    view = memoryview(data)
    etag = hashlib.md5(data).hexdigest()
    config = load_config(None, data_dir=data_dir).store
    results: dict[str, float] = {}

    async def put(store: Store, key: str) -> None:
        async with store.open_writer(BUCKET, key) as writer:
            for offset in range(0, len(data), MiB):
                await writer.write(view[offset : offset + MiB])
            version = await writer.commit()
        if version.etag != etag:
            raise RuntimeError("the stored ETag is not the MD5 of the bytes")

    async def get(store: Store, key: str) -> None:
        wrong = 0
        async with store.open_reader(BUCKET, key) as reader:
            for offset in range(0, reader.size_bytes, MiB):
                chunk = await reader.read(offset, MiB)
                wrong += chunk != data[offset : offset + len(chunk)]
        if wrong:
            raise RuntimeError("a store GET returned other bytes")

    async def timed(
        store: Store, operation: Callable[[Store, str], Any], count: int
    ) -> tuple[float, float]:
        cpu = own_cpu_seconds()
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for index in range(count):
                nursery.start_soon(operation, store, f"store-{index}")
        seconds = time.perf_counter() - start
        return count * len(data) / seconds / MB, (own_cpu_seconds() - cpu) / count

    async def main() -> None:
        async with open_store(config) as store:
            for operation in (put, get):  # warm-up, as the node gets
                await timed(store, operation, 1)
            for count in counts:
                for name, operation in (("put", put), ("get", get)):
                    rate, cpu = await timed(store, operation, count)
                    results[f"{name}{count}"] = rate
                    results[f"{name}{count}_cpu"] = cpu

    trio.run(main)
    print(json.dumps(results), flush=True)


# -- large objects through boto3 -------------------------------------------------


def boto_client(endpoint: str, **config: Any) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ROOT_KEY,
        aws_secret_access_key=ROOT_SECRET,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
    )


def run_threads(jobs: Sequence[Callable[[], object]]) -> tuple[float, list[object]]:
    """Run the jobs in threads released together; (seconds until the last ends, results)."""
    barrier = threading.Barrier(len(jobs) + 1)
    results: list[object] = [None] * len(jobs)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        barrier.wait()
        try:
            results[index] = jobs[index]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    return seconds, results


@dataclass
class LargePhase:
    """MB/s, and CPU seconds per object of the node (all threads, and its event-loop
    thread) and of this process (the client)."""

    rate: float
    server_cpu: float
    server_loop_cpu: float
    client_cpu: float


def large_phase(node: Server, clients: list[Any], operation: str, data: bytes) -> LargePhase:
    def put(client: Any, key: str) -> None:
        client.put_object(Bucket=BUCKET, Key=key, Body=data)

    def get(client: Any, key: str) -> bytes:
        return bytes(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    job = put if operation == "put" else get
    jobs = [partial(job, client, f"large-{i}") for i, client in enumerate(clients)]
    (server_cpu, loop_cpu), client_cpu = node.cpu_seconds(), own_cpu_seconds()
    seconds, results = run_threads(jobs)
    (server_after, loop_after), client_after = node.cpu_seconds(), own_cpu_seconds()
    if operation == "get" and any(body != data for body in results):
        raise RuntimeError("a GET returned other bytes than were PUT")
    count = len(clients)
    return LargePhase(
        count * len(data) / seconds / MB,
        (server_after - server_cpu) / count,
        (loop_after - loop_cpu) / count,
        (client_after - client_cpu) / count,
    )


# -- small objects through a light client ---------------------------------------


def signed_requests(address: str, method: str, keys: Sequence[str], body: bytes) -> list[bytes]:
    """Raw HTTP/1.1 requests for `keys`, SigV4-signed now (valid for the node's clock skew)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    signer = S3SigV4Auth(Credentials(ROOT_KEY, ROOT_SECRET), "s3", REGION)
    requests = []
    for key in keys:
        path = f"/{BUCKET}/{key}"
        request = AWSRequest(method=method, url=f"http://{address}{path}", data=body)
        signer.add_auth(request)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {address}"]
        lines += [f"{name}: {value}" for name, value in request.headers.items()]
        if method == "PUT":
            lines.append(f"Content-Length: {len(body)}")
        requests.append(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    return requests


@dataclass
class _Connection:
    sock: socket.socket
    requests: list[bytes]
    next_index: int = 0
    sent_at: float = 0.0
    buffer: bytearray = field(default_factory=bytearray)
    head_bytes: int = -1  # of the response being received, once its headers are in
    body_bytes: int = 0

    def send_next(self) -> None:
        request = self.requests[self.next_index % len(self.requests)]
        self.next_index += 1
        self.sent_at = time.perf_counter()
        self.sock.sendall(request)

    def take_response(self, expected_body: bytes | None) -> bool:
        """True when a whole response is in the buffer (and consumed); checks it."""
        if self.head_bytes < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = bytes(self.buffer[:end]).decode("latin-1")
            status_line, *header_lines = head.split("\r\n")
            length = None
            for line in header_lines:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if length is None:
                raise RuntimeError(f"a response without Content-Length:\n{head}")
            if status_line.split(" ", 2)[1] != "200":
                raise RuntimeError(f"the server answered {status_line!r}:\n{self.buffer!r}")
            self.head_bytes, self.body_bytes = end + 4, length
        total = self.head_bytes + self.body_bytes
        if len(self.buffer) < total:
            return False
        if expected_body is not None and self.buffer[self.head_bytes : total] != expected_body:
            raise RuntimeError("a GET returned other bytes than were PUT")
        del self.buffer[:total]
        self.head_bytes = -1
        return True


@dataclass
class SmallPhase:
    ops: float  # per second
    server_cpu_us: float  # per request
    server_loop_cpu_us: float  # ... of it in the server's event-loop thread
    client_cpu_us: float
    p50_ms: float
    p99_ms: float


def hammer(
    server: Server,
    port: int,
    requests: list[list[bytes]],
    seconds: float,
    expected_body: bytes | None,
    at_least: int = 0,
) -> SmallPhase:
    """Keep one request in flight on each connection for `seconds` (and until each
    connection has sent `at_least`); then let the last ones finish (counted)."""
    selector = selectors.DefaultSelector()
    connections = []
    for own in requests:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = _Connection(sock, own)
        selector.register(sock, selectors.EVENT_READ, connection)
        connections.append(connection)
    latencies: list[float] = []
    try:
        (server_cpu, loop_cpu), client_cpu = server.cpu_seconds(), own_cpu_seconds()
        start = time.perf_counter()
        deadline = start + seconds
        for connection in connections:
            connection.send_next()
        busy = len(connections)
        while busy:
            for key, _ in selector.select():
                connection = key.data
                data = connection.sock.recv(1 << 18)
                if not data:
                    raise RuntimeError("the server closed a connection")
                connection.buffer += data
                while connection.take_response(expected_body):
                    now = time.perf_counter()
                    latencies.append(now - connection.sent_at)
                    if now < deadline or connection.next_index < at_least:
                        connection.send_next()
                    else:
                        busy -= 1
        elapsed = time.perf_counter() - start
        (server_after, loop_after), client_after = server.cpu_seconds(), own_cpu_seconds()
    finally:
        for connection in connections:
            selector.unregister(connection.sock)
            connection.sock.close()
        selector.close()
    count = len(latencies)
    return SmallPhase(
        count / elapsed,
        (server_after - server_cpu) / count * 1e6,
        (loop_after - loop_cpu) / count * 1e6,
        (client_after - client_cpu) / count * 1e6,
        percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.99) * 1000,
    )


# -- the run ---------------------------------------------------------------------


def setup(args: argparse.Namespace, root: str, env: dict[str, str]) -> str:
    """Device files under ROOT/data/devices, written whole, formatted by the CLI."""
    from objfs.store.device import create_device_file, make_directory

    data_dir = os.path.join(root, "data")
    directory = os.path.join(data_dir, "devices")
    make_directory(directory)
    size = args.device_mib * MiB
    paths = [os.path.join(directory, f"dev{i}.img") for i in range(args.devices)]
    for path in paths:
        create_device_file(path, size)
    start = time.perf_counter()
    if not args.no_precondition:
        precondition(paths, size)
    seconds = time.perf_counter() - start
    subprocess.run(
        [sys.executable, "-m", "objfs", "--data", data_dir, "format", *paths],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    done = "written whole" if not args.no_precondition else "fallocated only"
    print(
        f"{args.devices} device files of {args.device_mib} MiB under {directory}, {done} "
        f"({seconds:.1f} s), formatted with `python -m objfs format`",
        flush=True,
    )
    return data_dir


def run(args: argparse.Namespace) -> Rounds:
    counts = [int(n) for n in args.clients.split(",")]
    rounds = Rounds()
    env = {**os.environ, "OBJFS_ROOT_ACCESS_KEY": ROOT_KEY, "OBJFS_ROOT_SECRET_KEY": ROOT_SECRET}
    data = os.urandom(args.object_mib * MiB)
    body = small_body()
    me = os.path.abspath(__file__)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with scratch_dir(args.dir, "objfs-bench-s3-") as root:
        data_dir = setup(args, root, env)
        node_port, framework_port = free_port(), free_port()
        config_path = os.path.join(root, "objfs.toml")
        with open(config_path, "w") as file:
            file.write(
                f'[s3]\naddress = "127.0.0.1:{node_port}"\n'
                '\n[node]\nadmin_address = "127.0.0.1:0"\n'
            )
        node = Server(
            [sys.executable, "-m", "objfs", "--data", data_dir, "--config", config_path, "serve"],
            os.path.join(root, "node.log"),
            "objfs: serving S3",
            env,
        )
        framework = Server(
            [sys.executable, me, "--framework-server", str(framework_port)],
            os.path.join(root, "framework.log"),
            "framework: serving",
            env,
        )
        endpoint = f"http://127.0.0.1:{node_port}"
        clients = {
            variant: [boto_client(endpoint, **config) for _ in range(max(counts))]
            for variant, config in VARIANTS.items()
        }
        # Small-object requests: signed once for the whole run (the node accepts a
        # signature for 15 minutes), for each server's Host.
        keys = [
            [f"small/{c:02d}/{k:02d}" for k in range(args.keys)] for c in range(args.connections)
        ]
        requests = {
            (port, method): [
                signed_requests(f"127.0.0.1:{port}", method, own, body if method == "PUT" else b"")
                for own in keys
            ]
            for port in (node_port, framework_port)
            for method in ("PUT", "GET")
        }
        framework.start()
        try:
            for round_number in range(args.repeat):
                started = node.start()
                rounds.add("node_start_s", started)
                if round_number == 0:
                    clients["default"][0].create_bucket(Bucket=BUCKET)
                    # Every small key exists before the first measured GET.
                    hammer(node, node_port, requests[(node_port, "PUT")], 0, None, args.keys)
                # Warm-up, not measured: a fresh node's first large PUT and GET also
                # start its worker threads and fault in its buffers.
                for operation in ("put", "get"):
                    large_phase(node, clients["when_required"][:1], operation, data)
                variants = list(clients.items())
                if round_number % 2:
                    variants.reverse()  # the two variants take turns at going first
                for variant, variant_clients in variants:
                    for count in counts:
                        for operation in ("put", "get"):
                            phase = large_phase(node, variant_clients[:count], operation, data)
                            name = f"{variant}_{operation}{count}"
                            rounds.add(name, phase.rate)
                            rounds.add(name + "_server_cpu", phase.server_cpu)
                            rounds.add(name + "_server_loop_cpu", phase.server_loop_cpu)
                            rounds.add(name + "_client_cpu", phase.client_cpu)
                servers = [("objfs", node, node_port), ("framework", framework, framework_port)]
                if round_number % 2:
                    servers.reverse()
                for name, server, port in servers:
                    for method in ("PUT", "GET"):
                        small = hammer(
                            server,
                            port,
                            requests[(port, method)],
                            args.seconds,
                            body if method == "GET" else None,
                        )
                        prefix = f"{name}_{method.lower()}"
                        rounds.add(prefix, small.ops)
                        rounds.add(prefix + "_server_cpu_us", small.server_cpu_us)
                        rounds.add(prefix + "_server_loop_cpu_us", small.server_loop_cpu_us)
                        rounds.add(prefix + "_client_cpu_us", small.client_cpu_us)
                        rounds.add(prefix + "_p50_ms", small.p50_ms)
                        rounds.add(prefix + "_p99_ms", small.p99_ms)
                node.stop()
                step = subprocess.run(
                    [
                        sys.executable,
                        me,
                        "--store-step",
                        data_dir,
                        "--object-mib",
                        str(args.object_mib),
                        "--clients",
                        args.clients,
                    ],
                    check=True,
                    env=env,
                    capture_output=True,
                    text=True,
                )
                for name, value in json.loads(step.stdout.strip().splitlines()[-1]).items():
                    rounds.add(f"store_{name}", value)
                print(f"round {round_number + 1}/{args.repeat} done", flush=True)
        finally:
            try:
                node.stop()
            finally:
                framework.stop()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    return rounds


def report(args: argparse.Namespace, rounds: Rounds) -> None:
    counts = [int(n) for n in args.clients.split(",")]
    mib = args.object_mib
    show = Summary.show

    def scaled(name: str, factor: float) -> Summary:
        return Summary.of([value * factor for value in rounds.figures[name]])

    def ratio_row(label: str, summary: Summary, target: float | None) -> None:
        suffix = f"  {verdict(summary.median, target)} (>= {target})" if target else ""
        print_row(label, summary.show(2) + suffix)

    print(f"store, {mib} MiB objects (own process, same data directory, node stopped):")
    for count in counts:
        for operation in ("put", "get"):
            name = f"store_{operation}{count}"
            print_row(f"{operation.upper()} x{count} at once", show(rounds.of(name), 0, "MB/s"))
            print_row(f"  process CPU per {mib} MiB", show(scaled(name + "_cpu", 1000), 0, "ms"))
    for variant in VARIANTS:
        print(f"S3 via boto3, checksums {variant}, {mib} MiB objects (aggregate):")
        for count in counts:
            for operation in ("put", "get"):
                name = f"{variant}_{operation}{count}"
                label = f"{operation.upper()} x{count} client threads"
                print_row(label, show(rounds.of(name), 0, "MB/s"))
                print_row(
                    f"  node CPU per {mib} MiB", show(scaled(name + "_server_cpu", 1000), 0, "ms")
                )
                print_row(
                    "    of which its event-loop thread",
                    show(scaled(name + "_server_loop_cpu", 1000), 0, "ms"),
                )
                print_row(
                    f"  client CPU per {mib} MiB",
                    show(scaled(name + "_client_cpu", 1000), 0, "ms"),
                )
    print(f"ratios S3 / store, same round (target >= {LARGE_TARGET}):")
    for variant in VARIANTS:
        for count in counts:
            for operation in ("put", "get"):
                ratio_row(
                    f"{operation.upper()} x{count}, {variant}",
                    rounds.ratio(f"{variant}_{operation}{count}", f"store_{operation}{count}"),
                    LARGE_TARGET,
                )

    print(
        f"4 KiB objects, {args.connections} connections, one selectors client "
        "(pre-signed SigV4 requests):"
    )
    for name in ("framework", "objfs"):
        for method in ("put", "get"):
            prefix = f"{name}_{method}"
            print_row(f"{name} {method.upper()}", show(rounds.of(prefix), 0, "ops/s"))
            print_row(
                "  server CPU per request", show(rounds.of(prefix + "_server_cpu_us"), 0, "us")
            )
            print_row(
                "    of which its event-loop thread",
                show(rounds.of(prefix + "_server_loop_cpu_us"), 0, "us"),
            )
            print_row(
                "  client CPU per request", show(rounds.of(prefix + "_client_cpu_us"), 0, "us")
            )
            print_row("  latency p50", show(rounds.of(prefix + "_p50_ms"), 2, "ms"))
            print_row("  latency p99", show(rounds.of(prefix + "_p99_ms"), 2, "ms"))
    print("ratios objfs / framework, same round:")
    ratio_row("GET ops/s", rounds.ratio("objfs_get", "framework_get"), SMALL_GET_TARGET)
    ratio_row("PUT ops/s", rounds.ratio("objfs_put", "framework_put"), SMALL_PUT_TARGET)
    print("  the ops/s ratio if both were bound by server CPU (framework CPU / objfs CPU):")
    for method in ("get", "put"):
        ratio_row(
            f"  {method.upper()}",
            rounds.ratio(f"framework_{method}_server_cpu_us", f"objfs_{method}_server_cpu_us"),
            None,
        )
    print_row("node start (objfs serve, to listening)", show(rounds.of("node_start_s"), 2, "s"))


def main() -> None:
    args = parse_args()
    if args.framework_server is not None:
        serve_framework(args.framework_server)
    elif args.store_step is not None:
        store_step(args.store_step, args.object_mib, [int(n) for n in args.clients.split(",")])
    else:
        start = time.perf_counter()
        rounds = run(args)
        report(args, rounds)
        print(f"took {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
