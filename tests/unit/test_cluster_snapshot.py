"""Raft snapshots (objfs/cluster/snapshot.py): the file, its checks, and the bridge
between pysyncobj's thread and the event loop.

Method: snapshot files of a small real index are written and read back, then
damaged (torn, a flipped bit in the head or the body, a foreign file). The
bridge runs inside trio with pysyncobj's calls made from a worker thread, as
the Raft thread makes them: `serialize` then `check` polled until it answers,
and `deserialize` of a file whose journal holds more than the snapshot. The
cluster tests run it under real nodes (tests/cluster/test_cluster_snapshots.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.node import TCPNode

from objfs.cluster import snapshot
from objfs.cluster.journal import DurableJournal
from objfs.cluster.snapshot import RaftSnapshots, State
from objfs.errors import Corrupted
from objfs.store.index import ObjectIndex
from objfs.store.records import CreateBucket
from objfs.store.types import BucketName

LAST = (b"last command", 41, 3)
PREV = (b"prev command", 40, 3)
CATALOG = [
    {"op": "init_v1", "cluster_id": "c", "name": "n0", "raft_address": "a", "api_address": "b"}
]


def small_state() -> State:
    index = ObjectIndex()
    for name in ("alpha", "beta"):
        index.apply(CreateBucket(BucketName(name), "root", 7))
    return State(index.snapshot(), CATALOG, [(0, 5), (1, 9)])


def test_a_snapshot_file_reads_back_as_written(tmp_path: Path) -> None:
    path = str(tmp_path / "raft-snapshot")
    with open(path, "wb") as file:
        file.write(snapshot.encode(small_state(), LAST, PREV, ["127.0.0.1:1", "127.0.0.1:2"]))
    head, _ = snapshot.read_head(path)
    assert head["cluster"] == ["127.0.0.1:1", "127.0.0.1:2"]
    last, state = snapshot.read(path)
    assert last == 41
    assert [b.name for b in ObjectIndex.from_snapshot(state.index).buckets()] == ["alpha", "beta"]
    assert state.catalog == CATALOG
    assert state.recent == [(0, 5), (1, 9)]


@pytest.mark.parametrize("damage", ["torn", "head bit", "body bit", "foreign", "empty"])
def test_a_damaged_snapshot_is_corrupted_never_a_wrong_state(tmp_path: Path, damage: str) -> None:
    path = str(tmp_path / "raft-snapshot")
    data = bytearray(snapshot.encode(small_state(), LAST, PREV, []))
    if damage == "torn":
        data = data[: len(data) - 3]
    elif damage == "head bit":
        data[len(snapshot.MAGIC) + 12] ^= 0x10
    elif damage == "body bit":
        data[-5] ^= 0x01
    elif damage == "foreign":
        data = bytearray(b"\x80\x04pickle" + bytes(100))
    else:
        data = bytearray()
    with open(path, "wb") as file:
        file.write(data)
    with pytest.raises(Corrupted):
        snapshot.read(path)


def test_serialize_writes_the_state_the_loop_captured_then_check_says_success(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "raft-snapshot")
    asked: list[int] = []

    def capture(index: int) -> State | None:
        asked.append(index)
        return small_state() if index == 41 else None

    async def main() -> None:
        snapshots = RaftSnapshots(path, capture=capture, install=lambda p, i: None)
        snapshots.token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            snapshots.nursery = nursery
            cluster = {TCPNode("127.0.0.1:7001"), TCPNode("127.0.0.1:7002")}
            # As pysyncobj's thread calls it: the rename it tries after is its own.
            await trio.to_thread.run_sync(snapshots.serialize, path + ".tmp", (LAST, PREV, cluster))
            states: list[int] = []
            while not states or states[-1] == SERIALIZER_STATE.SERIALIZING:
                await trio.sleep(0.01)
                states.append(await trio.to_thread.run_sync(snapshots.check))
            assert states[-1] == SERIALIZER_STATE.SUCCESS
            assert snapshots.check() == SERIALIZER_STATE.NOT_SERIALIZING  # said once
            # A capture at an index the loop is not at gives up, and says so once.
            await trio.to_thread.run_sync(
                snapshots.serialize, path + ".tmp", ((b"", 50, 3), PREV, cluster)
            )
            await trio.sleep(0.05)
            assert snapshots.check() == SERIALIZER_STATE.FAILED
            assert snapshots.check() == SERIALIZER_STATE.NOT_SERIALIZING

    trio.run(main)
    assert asked == [41, 50]
    assert os.stat(path).st_mode & 0o777 == 0o600  # the catalog holds users' secrets
    last, state = snapshot.read(path)
    assert last == 41 and state.recent == [(0, 5), (1, 9)]
    assert snapshot.read_head(path)[0]["cluster"] == ["127.0.0.1:7001", "127.0.0.1:7002"]


def test_deserialize_cuts_the_journal_to_the_snapshot_and_hands_a_link_to_the_loop(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "raft-snapshot")
    with open(path, "wb") as file:
        file.write(snapshot.encode(small_state(), LAST, PREV, ["127.0.0.1:7001"]))
    journal = DurableJournal(str(tmp_path / "raft.objfs-journal"))
    for index in range(30, 46):  # the journal still holds entries before the snapshot
        journal.add(PREV[0] if index == 40 else LAST[0] if index == 41 else b"x", index, 3)
    installs: list[tuple[str, int]] = []

    async def main() -> tuple[snapshot.Entry, snapshot.Entry, list[TCPNode]]:
        snapshots = RaftSnapshots(
            path, capture=lambda i: None, install=lambda p, i: installs.append((p, i))
        )
        snapshots.token = trio.lowlevel.current_trio_token()
        snapshots.journal = lambda: journal
        loaded = await trio.to_thread.run_sync(snapshots.deserialize, path)
        await trio.lowlevel.checkpoint()
        return loaded

    last, prev, cluster = trio.run(main)
    assert (last, prev) == (LAST, PREV)
    assert [node.id for node in cluster] == ["127.0.0.1:7001"]
    # pysyncobj keeps a journal that starts with the snapshot's last two entries.
    assert journal[0] == PREV and journal[1] == LAST and journal[-1][1] == 45
    [(link, index)] = installs
    assert index == 41 and link != path and os.path.samefile(link, path)


def test_an_unreadable_snapshot_is_refused_and_the_loop_is_told(tmp_path: Path) -> None:
    path = str(tmp_path / "raft-snapshot")
    with open(path, "wb") as file:
        file.write(b"not a snapshot at all")
    installs: list[tuple[str, int]] = []

    async def main() -> None:
        snapshots = RaftSnapshots(
            path, capture=lambda i: None, install=lambda p, i: installs.append((p, i))
        )
        snapshots.token = trio.lowlevel.current_trio_token()
        with pytest.raises(Corrupted):
            await trio.to_thread.run_sync(snapshots.deserialize, path)
        await trio.lowlevel.checkpoint()

    trio.run(main)
    assert installs == [("", -1)]  # the replicator stops applying instead of diverging
