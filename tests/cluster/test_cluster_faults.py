"""Nodes of a real three-node cluster killed, hung and restarted under load.

Method: client threads PUT objects on the nodes left standing and read each
back from another node, recording every acknowledgement and every failure with
its time. Two in three objects are small (inline in their records, so the Raft
log alone holds them); one in three is larger than `store.inline_max_bytes`,
so its 4+2 stripe is placed over the three nodes, two fragments each, and
reading it while a node is down decodes it from the other four. Then a node
is killed with SIGKILL (or stopped with SIGSTOP); the load goes on; finally
every acknowledged object must read back byte-exact on every node, the victim
included once it is back. The error window (first to last failed request) is
printed and bounded.
"""

from __future__ import annotations

import hashlib
import random
import signal
import threading
import time
from dataclasses import dataclass, field

from cluster_nodes import Cluster, Member

SMALL_BYTES = 2000  # inline: the record carries the bytes
LARGE_BYTES = 200_000  # a placed stripe


def content(name: str) -> bytes:
    chooser = random.Random(hashlib.sha256(name.encode()).digest())
    return chooser.randbytes(LARGE_BYTES if chooser.random() < 1 / 3 else SMALL_BYTES)


@dataclass
class Load:
    targets: list[Member]
    prefix: str = "w"
    acked: dict[str, bytes] = field(default_factory=dict)
    failures: list[tuple[float, str]] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, worker: int) -> None:
        clients = [m.s3(connect_timeout=5, read_timeout=30) for m in self.targets]
        n = 0
        while not self.stop.is_set():
            key = f"{self.prefix}{worker}-{n:05d}"
            n += 1
            body = content(key)
            writer, reader = clients[n % len(clients)], clients[(n + 1) % len(clients)]
            try:
                writer.put_object(Bucket="load", Key=key, Body=body)
            except Exception as exc:
                with self.lock:
                    self.failures.append((time.monotonic(), f"PUT {key}: {exc}"))
                continue
            with self.lock:
                self.acked[key] = body
            try:
                got = reader.get_object(Bucket="load", Key=key)["Body"].read()
            except Exception as exc:
                with self.lock:
                    self.failures.append((time.monotonic(), f"GET {key}: {exc}"))
                continue
            if got != body:
                self.wrong.append(key)

    def error_window(self) -> float:
        if not self.failures:
            return 0.0
        times = [at for at, _ in self.failures]
        return max(times) - min(times)


def run_load(load: Load, workers: int, during: float, event: object) -> None:
    threads = [threading.Thread(target=load.run, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)
        event()  # type: ignore[operator]
        time.sleep(during)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(60)


def check_everywhere(members: list[Member], acked: dict[str, bytes]) -> None:
    for member in members:
        client = member.s3()
        keys: list[str] = []
        token = None
        while True:
            page = client.list_objects_v2(
                Bucket="load", **({"ContinuationToken": token} if token else {})
            )
            keys += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                break
            token = page["NextContinuationToken"]
        assert set(acked) <= set(keys), f"node {member.number} lost {set(acked) - set(keys)}"
        for key in random.Random(member.number).sample(sorted(acked), min(200, len(acked))):
            assert client.get_object(Bucket="load", Key=key)["Body"].read() == acked[key]


def leader_of(members: list[Member]) -> Member:
    for member in members:
        if member.status()["raft"]["state"] == "leader":
            return member
    raise AssertionError("no leader")


def three_nodes_and_a_victim(cluster: Cluster) -> tuple[list[Member], Member, Member, list[Member]]:
    """A started cluster with the "load" bucket: (members, leader, a follower to
    fault, the others)."""
    members = cluster.start(3)
    cluster.wait_for_members(3)
    members[0].s3().create_bucket(Bucket="load")
    leader = leader_of(members)
    victim = next(m for m in members if m is not leader)
    return members, leader, victim, [m for m in members if m is not victim]


def test_killing_a_follower_then_the_leader_under_load_loses_nothing(cluster: Cluster) -> None:
    """One cluster, two faults in turn (a cluster start is the slow part)."""
    # A follower killed, and started again while the load goes on (it replays
    # the log and refuses fragments until caught up): no request fails at all.
    members, leader, victim, standing = three_nodes_and_a_victim(cluster)
    first = Load(standing, prefix="f")

    def kill_and_restart() -> None:
        victim.kill()
        time.sleep(2.0)
        victim.serve()

    run_load(first, workers=4, during=6.0, event=kill_and_restart)
    print(f"\nfollower killed: {len(first.acked)} PUTs acknowledged, {len(first.failures)} failed")
    assert not first.wrong
    assert first.failures == []
    check_everywhere(standing, first.acked)
    victim.ready()
    check_everywhere([victim], first.acked)

    # The leader killed: a bounded error window, nothing acknowledged lost.
    leader = leader_of(members)
    others = [m for m in members if m is not leader]
    second = Load(others, prefix="l")
    run_load(second, workers=4, during=8.0, event=leader.kill)
    print(
        f"leader killed: {len(second.acked)} PUTs acknowledged, {len(second.failures)} failed "
        f"requests, error window {second.error_window():.2f} s"
    )
    for _, failure in second.failures[:5]:
        print("  ", failure)
    assert not second.wrong
    assert len(second.acked) > 50
    assert second.error_window() < 10.0
    assert leader_of(others) is not leader
    acked = {**first.acked, **second.acked}
    check_everywhere(others, acked)
    leader.serve()
    leader.ready()
    check_everywhere([leader], acked)


def test_a_hung_node_is_carried_on_without_and_rejoins(cluster: Cluster) -> None:
    members, leader, victim, standing = three_nodes_and_a_victim(cluster)
    load = Load(standing)
    run_load(load, workers=2, during=30.0, event=lambda: victim.kill(signal.SIGSTOP))
    assert not load.wrong
    assert load.failures == []
    victim.kill(signal.SIGCONT)
    resumed = time.monotonic()
    target = leader.status()["raft"]["commit_index"]
    while victim.status()["raft"]["last_applied"] < target:
        assert time.monotonic() < resumed + 30, "the resumed node did not catch up in 30 s"
        time.sleep(0.1)
    print(f"\nhung node caught up {time.monotonic() - resumed:.2f} s after SIGCONT")
    check_everywhere(members, load.acked)
