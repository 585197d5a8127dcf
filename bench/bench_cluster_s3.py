"""Cluster S3: PUT/GET throughput of 3 nodes vs 1 on one machine, network bytes per user byte.

Real nodes, as the cluster tests start them (tests/cluster/cluster_nodes.py's
`Member`): `objfs cluster init` for node 0, `objfs cluster join` for the
others, each followed by `objfs serve` (no mount) in a child process on
loopback ports, OBJFS_CLUSTER_SECRET in the environment, every node with
--devices device files of --device-size (fallocated by init, not
preconditioned: both clusters pay ext4's first-write conversion) in a fresh
directory under --base (a disk, not tmpfs). First a 1-node cluster (three
devices: 2+1), then a 3-node one (nine devices: 4+2, two fragments per node).

Workload, with boto3 (path-style, root keys as tests/e2e/service_node.py sets
them, `when_required` checksums: the client shares the cores with the nodes)
from --threads client threads, request i going to node i mod n (round-robin
over every node of the cluster), each thread with its own client per node:

- PUT then GET of --objects objects of 4 MiB (GET bodies compared);
- PUT then GET of --small objects of 4 KiB. These are inline (at most
  `store.inline_max_bytes`): they travel inside their Raft record, so this
  round measures commits and read barriers, not fragments.

Each phase is timed from the first request's start to the last one's end:
MB/s and objects/s, the median request latency, and the nodes' CPU (utime +
stime of every node process, /proc) per object. Every figure is the median of
--rounds rounds (fresh keys each round; the large objects are deleted after
it, unmeasured), with the ratio 3-node / 1-node of the medians.

Network bytes per user byte, from each node's /admin/status ("cluster" ->
"placement" -> "bytes_sent": fragment bytes this node sent to other nodes) and
/metrics (objfs_device_written_bytes_total, objfs_device_read_bytes_total),
summed over the nodes over one phase and divided by the user bytes:

- fragment bytes sent per byte PUT: each stripe is k+m fragments of 1/k of
  its bytes, m of them stay on the coordinator (at most m per node: 2 of 6
  for 4+2 on 3 nodes), so the expectation is (k+m)/k x k/(k+m) = 1.0;
- device bytes written per byte PUT: (k+m)/k = 1.5 for 4+2 and for 2+1, plus
  WAL records and checkpoints;
- remote fragment bytes read per byte of GET: not counted by the nodes, so
  measured in one more (untimed) pass that GETs every large object through
  node 0 alone: the device bytes nodes 1 and 2 read meanwhile are what they
  served to node 0. Expected (if a healthy read fetches only the k data
  fragments, and a node holds m of the k+m at random positions): 1 - m/(k+m)
  = 2/3; device bytes read in all per byte GET: 1.0.

A 2-core machine runs all three node processes, their Raft threads, the
encoding and the client on the same two cores and one disk: every byte is
encoded once and written to the one disk either way, k of the k+m fragments
cross loopback (a memory copy, not a network), and every write's Raft commit
needs two nodes' fdatasync. So the 3-node figure measures the cluster's
overhead (Raft, fragment hops, erasure coding), not scale-out; on three
machines each node would have its own cores and disk. The 1-node cluster is
no free baseline either: with no follower to answer, its Raft leader commits
only on pysyncobj's tick (~50 ms), so each commit and each read barrier waits
for one, and at 8 threads it is latency-bound, not CPU-bound.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _util import DEFAULT_BASE_DIR, MB, Summary, print_row, scratch_dir
from bench_s3 import own_cpu_seconds, process_cpu_seconds

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "cluster")
)

from cluster_nodes import SECRET, Member

BUCKET = "bench-cluster"
LARGE_BYTES = 4 * 1024 * 1024
SMALL_BYTES = 4096
QUICK = {"objects": 16, "small": 200, "rounds": 2}
FULL = {"objects": 32, "small": 400, "rounds": 3}
CLIENT_OPTIONS = {
    "request_checksum_calculation": "when_required",
    "response_checksum_validation": "when_required",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=DEFAULT_BASE_DIR, help="where the nodes' data goes")
    parser.add_argument("--device-size", default="256M", help="each device file (init/join)")
    parser.add_argument("--devices", type=int, default=3, help="device files per node")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--objects", type=int, help="4 MiB objects per round (32; quick 16)")
    parser.add_argument("--small", type=int, help="4 KiB objects per round (400; quick 200)")
    parser.add_argument("--rounds", type=int, help="rounds per cluster (3; quick 2)")
    parser.add_argument("--quick", action="store_true", help="smaller counts (~1 min)")
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


# -- the nodes -------------------------------------------------------------------


class Nodes:
    """A cluster of `count` real nodes under `root` (cluster_nodes.Member each)."""

    def __init__(self, root: str, count: int, devices: int, device_size: str) -> None:
        self.root = root
        self.members: list[Member] = []
        self.count = count
        self.devices = ["--device-count", str(devices), "--device-size", device_size]

    def start(self) -> None:
        environ = {"OBJFS_CLUSTER_SECRET": SECRET}
        for number in range(self.count):
            member = Member(self.root, number)
            self.members.append(member)
            where = ["--raft-address", member.raft_address, "--api-address", member.api_address]
            if number == 0:
                how = ["init", "--name", "node0", *where, *self.devices]
            else:
                first = self.members[0].api_address
                how = ["join", first, "--name", f"node{number}", *where, *self.devices]
            done = member.cli("cluster", *how, environ=environ)
            if done.returncode != 0:
                raise RuntimeError(f"cluster {how[0]} failed: {done.stdout}{done.stderr}")
            member.serve().wait_for("READY", timeout=90)
        self.wait_until_placed()

    def wait_until_placed(self, timeout: float = 60.0) -> None:
        """Until every node sees all members admitted and places stripes for all of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            views = [m.status() for m in self.members]
            if all(
                sum(n["admitted"] for n in v["catalog"]["nodes"]) == self.count
                and v["placement"]["policy_now"] == v["placement"]["policy"]
                and not v["placement"]["unreachable"]
                for v in views
            ):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.count} nodes not all admitted and placing within {timeout} s")

    def policy(self) -> tuple[int, int, str]:
        described = self.members[0].status()["placement"]["policy"]
        found = re.match(r"(\d+)\+(\d+)", described)
        if found is None:
            raise RuntimeError(f"unexpected policy {described!r}")
        return int(found[1]), int(found[2]), described

    def clients(self) -> list[Any]:
        return [m.s3(max_pool_connections=4, **CLIENT_OPTIONS) for m in self.members]

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(m.node.process.pid) for m in self.members if m.node)

    def counters(self) -> list[dict[str, float]]:
        """Per node: fragment bytes sent, device bytes read and written so far."""
        result = []
        for member in self.members:
            assert member.node is not None
            code, body = member.node.admin("/metrics")
            if code != 200:
                raise RuntimeError(f"/metrics answered {code}")
            figures = {"sent": float(member.status()["placement"]["bytes_sent"])}
            for name in ("read", "written"):
                prefix = f"objfs_device_{name}_bytes_total{{"
                figures[name] = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in body.decode().splitlines()
                    if line.startswith(prefix)
                )
            result.append(figures)
        return result

    def close(self) -> None:
        for member in self.members:
            member.close()


def delta(before: list[dict[str, float]], after: list[dict[str, float]], name: str) -> list[float]:
    return [a[name] - b[name] for a, b in zip(after, before, strict=True)]


# -- the workload ----------------------------------------------------------------


class Phase:
    """One timed phase: `count` requests from `threads` threads, request i on node i mod n."""

    def __init__(self, nodes: Nodes, threads: int) -> None:
        self.nodes = nodes
        self.threads = threads
        self.local = threading.local()

    def client(self, number: int) -> Any:
        if not hasattr(self.local, "clients"):
            self.local.clients = self.nodes.clients()
        return self.local.clients[number]

    def run(
        self, count: int, request: Callable[[Any, int], None], only: int | None = None
    ) -> tuple[float, float, float]:
        """Wall seconds, the nodes' CPU seconds and the median request latency of `count`
        requests (all on node `only` if given)."""
        n = len(self.nodes.members)
        latencies: list[float] = []

        def one(i: int) -> None:
            client = self.client(i % n if only is None else only)
            started = time.perf_counter()
            request(client, i)
            latencies.append(time.perf_counter() - started)

        cpu = self.nodes.cpu_seconds()
        started = time.perf_counter()
        with ThreadPoolExecutor(self.threads) as pool:
            for future in [pool.submit(one, i) for i in range(count)]:
                future.result()
        elapsed = time.perf_counter() - started
        return elapsed, self.nodes.cpu_seconds() - cpu, statistics.median(latencies)

    def warm(self) -> None:
        """Every thread makes its clients and one request to each node (unmeasured)."""
        n = len(self.nodes.members)
        self.run(self.threads * n, lambda s3, i: s3.head_bucket(Bucket=BUCKET))


def measure(nodes: Nodes, args: argparse.Namespace, large: bytes, small: bytes) -> dict[str, Any]:
    """All rounds on one running cluster; per figure, the list of per-round values."""
    figures: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    def timed(name: str, count: int, size: int, took: tuple[float, float, float]) -> None:
        seconds, cpu, latency = took
        if size > SMALL_BYTES:
            add(f"{name} MB/s", count * size / seconds / MB)
        add(f"{name} objects/s", count / seconds)
        add(f"{name} latency p50 ms", latency * 1e3)
        add(f"{name} node CPU ms/object", cpu / count * 1e3)

    nodes.members[0].s3().create_bucket(Bucket=BUCKET)
    phase = Phase(nodes, args.threads)
    phase.warm()

    def put(body: bytes, prefix: str) -> Callable[[Any, int], None]:
        return lambda s3, i: s3.put_object(Bucket=BUCKET, Key=f"{prefix}{i}", Body=body)

    def get(body: bytes, prefix: str) -> Callable[[Any, int], None]:
        def request(s3: Any, i: int) -> None:
            if s3.get_object(Bucket=BUCKET, Key=f"{prefix}{i}")["Body"].read() != body:
                raise RuntimeError(f"GET {prefix}{i}: body differs")

        return request

    def delete(prefix: str) -> Callable[[Any, int], None]:
        return lambda s3, i: s3.delete_object(Bucket=BUCKET, Key=f"{prefix}{i}")

    # A few unmeasured large PUTs and GETs: worker threads, buffers, connections.
    phase.run(2 * len(nodes.members), put(large, "warm/"))
    phase.run(2 * len(nodes.members), get(large, "warm/"))
    k, m, _ = nodes.policy()
    for number in range(args.rounds):
        big, little = f"r{number}/large/", f"r{number}/small/"
        user = args.objects * LARGE_BYTES
        before = nodes.counters()
        timed("4 MiB PUT", args.objects, LARGE_BYTES, phase.run(args.objects, put(large, big)))
        after = nodes.counters()
        add("fragment bytes sent / byte PUT", sum(delta(before, after, "sent")) / user)
        add("device bytes written / byte PUT", sum(delta(before, after, "written")) / user)

        before = nodes.counters()
        timed("4 MiB GET", args.objects, LARGE_BYTES, phase.run(args.objects, get(large, big)))
        after = nodes.counters()
        add("device bytes read / byte GET", sum(delta(before, after, "read")) / user)

        if len(nodes.members) > 1:  # every large object through node 0 alone, untimed
            before = nodes.counters()
            phase.run(args.objects, get(large, big), only=0)
            read = delta(before, nodes.counters(), "read")
            add("remote fragment bytes read / byte GET", sum(read[1:]) / user)

        timed("4 KiB PUT", args.small, SMALL_BYTES, phase.run(args.small, put(small, little)))
        timed("4 KiB GET", args.small, SMALL_BYTES, phase.run(args.small, get(small, little)))

        phase.run(args.objects, delete(big))
    return {"figures": figures, "k": k, "m": m}


def run_cluster(base: str, count: int, args: argparse.Namespace, large: bytes, small: bytes) -> Any:
    with scratch_dir(base, f"objfs-bench-cluster-s3-{count}n-") as root:
        nodes = Nodes(root, count, args.devices, args.device_size)
        try:
            started = time.perf_counter()
            nodes.start()
            described = nodes.policy()[2]
            print(
                f"{count} node(s) up in {time.perf_counter() - started:.1f} s: "
                f"{count * args.devices} devices, {described}",
                flush=True,
            )
            client_cpu = own_cpu_seconds()
            outcome = measure(nodes, args, large, small)
            outcome["client_cpu"] = own_cpu_seconds() - client_cpu
            return outcome
        except Exception:
            for member in nodes.members:
                if member.node is not None:
                    print(f"--- node{member.number} log (tail) ---\n{member.node.log()[-3000:]}")
            raise
        finally:
            nodes.close()


def show(values: Sequence[float], digits: int) -> str:
    return Summary.of(values).show(digits)


def main() -> None:
    args = parse_args()
    # SIGTERM as Ctrl-C: the finally clauses stop the nodes and remove their directories.
    signal.signal(signal.SIGTERM, lambda _signal, _frame: sys.exit(143))
    large = os.urandom(LARGE_BYTES)
    small = os.urandom(SMALL_BYTES)
    print(
        f"{args.threads} client threads, {args.rounds} rounds: {args.objects} x 4 MiB and "
        f"{args.small} x 4 KiB objects per round, round-robin over the nodes; "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    one = run_cluster(args.base, 1, args, large, small)
    three = run_cluster(args.base, 3, args, large, small)
    print(f"\nThroughput, medians of {args.rounds} rounds (min, max):")
    for name in one["figures"]:
        if "bytes" in name:
            continue
        digits = 0 if "objects/s" in name else 1
        a, b = one["figures"][name], three["figures"][name]
        ratio = statistics.median(b) / statistics.median(a)
        print_row(name, f"1 node {show(a, digits)}")
        print_row("", f"3 nodes {show(b, digits)}  -> 3/1 = {ratio:.2f}")

    k, m = three["k"], three["m"]
    sent = (k + m) / k * k / (k + m)  # (k+m)/k bytes of fragments, m of k+m stay local
    remote = 1 - m / (k + m)
    k1, m1 = one["k"], one["m"]
    print(f"\nBytes per user byte, summed over the nodes ({k}+{m} on 3 nodes, {m} fragments each):")
    for name, expected in (
        ("fragment bytes sent / byte PUT", sent),
        ("device bytes written / byte PUT", (k + m) / k),
        ("remote fragment bytes read / byte GET", remote),
        ("device bytes read / byte GET", 1.0),
    ):
        print_row(name, f"3 nodes {show(three['figures'][name], 3)}; expected {expected:.3f}")
        if name in one["figures"]:
            expected = 0.0 if "sent" in name else (k1 + m1) / k1 if "written" in name else 1.0
            shown = show(one["figures"][name], 3)
            print_row("", f"1 node ({k1}+{m1}) {shown}; expected {expected:.3f}")
    print(
        f"\nClient CPU (this process): {one['client_cpu']:.1f} s for the 1-node run, "
        f"{three['client_cpu']:.1f} s for the 3-node run."
    )
    print(
        f"This machine has {os.cpu_count()} CPUs and one disk: the three nodes of the 3-node "
        "cluster share them with each other and with the client, so the 3-node / 1-node ratio "
        "measures what the cluster costs per request (a Raft commit on two nodes' fdatasync, "
        "fragments hopping over loopback, 4+2 instead of 2+1 encoding), not scale-out, which "
        "needs each node on its own cores and disk."
    )


if __name__ == "__main__":
    main()
