"""Raft snapshots: the log is compacted, and a node that restarts or fell behind
rebuilds its state from a snapshot plus the log after it.

Method: three real nodes (tests/cluster/cluster_nodes.py) with
`store.snapshot_entries = 200`, so every few hundred S3 requests each node
writes a snapshot (objfs/cluster/snapshot.py) and pysyncobj drops the log
before it. Then, in turn:

- a node killed (-9) while the others take 300 more writes restarts: the
  leader's log no longer reaches back to where it stopped, so it is sent the
  leader's snapshot and installs it before it serves;
- a node stopped (SIGSTOP) while objects it holds fragments of are deleted
  and more are written is resumed: it installs a snapshot while serving, and
  frees the deleted objects' fragments on its devices;
- every node is killed at once and restarted: each loads its own snapshot and
  replays its journal after it.

After each step every object reads back byte-exact through the node in
question, and listings are exact (no deleted key, no missing key).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import time
from typing import Any

from cluster_nodes import Cluster, Member

SMALL = 1000  # inline: one Raft entry per PUT, nothing on the devices
LARGE = 3 << 20  # placed: fragments on every node


def content(key: str, size: int) -> bytes:
    return random.Random(hashlib.sha256(key.encode()).digest()).randbytes(size)


def put_many(member: Member, keys: list[str], size: int, objects: dict[str, bytes]) -> None:
    s3 = member.s3()
    for key in keys:
        body = content(key, size)
        s3.put_object(Bucket="snap", Key=key, Body=body)
        objects[key] = body


def check_all(member: Member, objects: dict[str, bytes]) -> None:
    s3 = member.s3()
    listed: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="snap"):
        listed.extend(entry["Key"] for entry in page.get("Contents", []))
    assert listed == sorted(objects), (len(listed), len(objects))
    for key, body in objects.items():
        if len(body) > SMALL or key.endswith("0"):  # every large one, a tenth of the small
            assert s3.get_object(Bucket="snap", Key=key)["Body"].read() == body, key


def snapshots(member: Member) -> dict[str, Any]:
    result: dict[str, Any] = member.status()["snapshots"]
    return result


def wait_for(what: str, condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {timeout} s"
        time.sleep(0.2)


def free_bytes(member: Member) -> int:
    assert member.node is not None
    code, body = member.node.admin("/admin/status")
    assert code == 200, body
    return sum(d.get("free_bytes", 0) for d in json.loads(body)["devices"])


def test_snapshots_compact_the_log_and_bring_nodes_back(cluster: Cluster) -> None:
    for number in range(3):
        cluster.extra_config[number] = "\n[store]\nsnapshot_entries = 200\n"
    first, second, third = members = cluster.start(3)
    cluster.wait_for_members(3)
    first.s3().create_bucket(Bucket="snap")
    objects: dict[str, bytes] = {}
    put_many(first, [f"a/{n:04}" for n in range(250)], SMALL, objects)
    put_many(second, [f"big/{n}" for n in range(3)], LARGE, objects)
    for member in members:
        wait_for("a snapshot on every node", lambda m=member: snapshots(m)["taken"] >= 1)
    journal = os.path.join(first.data, "raft.objfs-journal")
    assert first.status()["raft"]["log_entries"] < 400  # compacted, not the whole history

    # 1. A node that was down while the log moved on is sent a snapshot.
    third.kill()
    put_many(first, [f"b/{n:04}" for n in range(300)], SMALL, objects)
    wait_for("the leader's log compacted", lambda: snapshots(first)["taken"] >= 2)
    third.serve()
    third.ready()
    assert snapshots(third)["installed"] >= 1
    check_all(third, objects)
    shown = third.cli("cluster", "status")
    assert shown.returncode == 0, shown.stderr
    assert "snapshots: last at index" in shown.stdout and " installed" in shown.stdout, shown.stdout

    # 2. A node stopped while its fragments' objects are deleted installs a
    # snapshot while it serves, and frees those fragments.
    held = free_bytes(second)
    taken = snapshots(first)["taken"]
    second.kill(signal.SIGSTOP)
    s3 = first.s3()
    for n in range(3):
        s3.delete_object(Bucket="snap", Key=f"big/{n}")
        del objects[f"big/{n}"]
    put_many(first, [f"c/{n:04}" for n in range(300)], SMALL, objects)
    wait_for("the leader's log compacted", lambda: snapshots(first)["taken"] > taken)
    second.kill(signal.SIGCONT)
    wait_for("a snapshot installed live", lambda: snapshots(second)["installed"] >= 1)
    check_all(second, objects)
    # Each 3 MiB object had two fragments of ~0.75 MiB on this node.
    wait_for("the deleted objects' fragments freed", lambda: free_bytes(second) >= held + (4 << 20))

    # 3. Everything killed at once: each node loads its own snapshot, then its journal.
    cluster.restart_all()
    for member in members:
        check_all(member, objects)
    assert os.path.getsize(journal) < 4 << 20
