"""Raft as objfs runs it: commit latency, records/s at the leader, failover time.

Three pysyncobj members in this process on loopback ports (`objfs.cluster.raft
.new_member`: objfs's configuration, the durable journal with grouped syncs,
password on), each journal on its own file under --base (a disk, not tmpfs).
The machine's own limit is measured in the same run: the latency of one
4 KiB append + fdatasync on the same filesystem. A commit needs at least the
leader's and one follower's sync, one after the other, plus two loopback hops.

Figures:
- commit latency at the leader and through a follower (p50, p99), sequential;
- records/s at the leader with --window proposals in flight;
- failover: the leader's member destroyed, time until another member has
  committed a proposal (median of --failovers rounds, a fresh cluster each).

2 cores are shared by three members' threads and the client; read the ratio
to fdatasync, not the absolute figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Any

from _util import Summary, percentile, scratch_dir

from objfs.cluster import journal
from objfs.cluster.raft import new_member

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "cluster")
)

from cluster_nodes import free_ports

SECRET = "bench-cluster-secret-0123456789"


def fdatasync_latency(directory: str, count: int = 200) -> list[float]:
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = b"x" * 4096
    times = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        os.unlink(path)
    return times


class Cluster:
    def __init__(self, directory: str, run: int) -> None:
        addresses = [f"127.0.0.1:{port}" for port in free_ports(3)]
        self.members: list[Any] = []
        for i, me in enumerate(addresses):
            path = os.path.join(directory, f"r{run}-n{i}{journal.SUFFIX}")
            others = [a for a in addresses if a != me]
            self.members.append(
                new_member(me, others, secret=SECRET, journal_path=path, deliver=lambda i, e: None)
            )

    def leader(self, timeout: float = 30.0, among: list[Any] | None = None) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for member in among or self.members:
                if member._isLeader():
                    return member
            time.sleep(0.005)
        raise RuntimeError("no leader")

    def close(self) -> None:
        for member in self.members:
            member.destroy_synchronous()


def commit(member: Any, payload: bytes, timeout: float = 30.0) -> bool:
    done = threading.Event()
    outcome: list[int] = []

    def finished(_result: Any, error: int) -> None:
        outcome.append(error)
        done.set()

    member.apply_v1(payload, callback=finished)
    return done.wait(timeout) and outcome[0] == 0


def sequential(member: Any, count: int) -> list[float]:
    times = []
    for n in range(count):
        started = time.perf_counter()
        if commit(member, b"bench %d" % n):
            times.append(time.perf_counter() - started)
    return times


def throughput(member: Any, count: int, window: int) -> float:
    slots = threading.Semaphore(window)
    finished = threading.Event()
    left = [count]
    lock = threading.Lock()

    def done(_result: Any, _error: int) -> None:
        slots.release()
        with lock:
            left[0] -= 1
            if left[0] == 0:
                finished.set()

    started = time.perf_counter()
    for n in range(count):
        slots.acquire()
        member.apply_v1(b"throughput %d" % n, callback=done)
    finished.wait(120)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="/var/tmp")
    parser.add_argument("--commits", type=int, default=300)
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--failovers", type=int, default=3)
    args = parser.parse_args()
    with scratch_dir(args.base, "objfs-bench-cluster-") as directory:
        syncs = fdatasync_latency(directory)
        sync_p50 = percentile(syncs, 0.5)
        print(
            f"fdatasync of a 4 KiB append: p50 {sync_p50 * 1e3:.2f} ms, "
            f"p99 {percentile(syncs, 0.99) * 1e3:.2f} ms"
        )
        cluster = Cluster(directory, 0)
        try:
            leader = cluster.leader()
            commit(leader, b"warm-up")
            follower = next(m for m in cluster.members if m is not leader)
            for name, member in (("leader", leader), ("follower", follower)):
                times = sequential(member, args.commits)
                p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
                print(
                    f"commit through the {name}: p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms "
                    f"({p50 / sync_p50:.1f}x one fdatasync; n={len(times)})"
                )
            rates = [throughput(leader, args.records, args.window) for _ in range(3)]
            summary = Summary.of(rates)
            print(f"records/s at the leader, {args.window} in flight: {summary.show(0)}")
            print(f"  = {summary.median * sync_p50:.1f} records per fdatasync time")
        finally:
            cluster.close()
        failovers = []
        for run in range(1, args.failovers + 1):
            cluster = Cluster(directory, run)
            try:
                leader = cluster.leader()
                commit(leader, b"before")
                survivors = [m for m in cluster.members if m is not leader]
                started = time.perf_counter()
                leader.destroy_synchronous()
                cluster.members.remove(leader)
                while True:
                    new_leader = cluster.leader(among=survivors)
                    if commit(new_leader, b"after", timeout=5):
                        break
                failovers.append(time.perf_counter() - started)
            finally:
                cluster.close()
        shown = Summary.of(failovers).show(2, "s")
        print(f"failover (leader gone -> a commit on the new leader): {shown}")


if __name__ == "__main__":
    main()
