"""pysyncobj on the durable journal: three real SyncObj nodes on loopback ports.

Method: three `SyncObj`s in this process (pysyncobj runs each on its own
thread), the Raft port encrypted with a password, each journal a
`DurableJournal` file. Replicated increments through every node; then all
three are destroyed and built again from their journal files alone (no full
dump): the state, the term and the ability to commit come back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_nodes import free_ports
from pysyncobj import SyncObj, SyncObjConf, replicated

from objfs.cluster import journal

journal.install()

PASSWORD = "cluster-secret-for-tests"


class Counter(SyncObj):  # type: ignore[misc]
    def __init__(
        self, me: str, others: list[str], journal_file: str, password: str = PASSWORD
    ) -> None:
        conf = SyncObjConf(
            password=password,
            journalFile=journal_file,
            appendEntriesUseBatch=False,
            useFork=False,
            dynamicMembershipChange=False,
        )
        super().__init__(me, others, conf=conf)
        self.value = 0

    @replicated  # type: ignore[untyped-decorator]
    def add_v1(self, amount: int) -> int:
        self.value += amount
        return self.value


def wait_for(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


@pytest.fixture
def addresses() -> list[str]:
    return [f"127.0.0.1:{port}" for port in free_ports(3)]


def start(addresses: list[str], directory: Path) -> list[Counter]:
    return [
        Counter(me, [a for a in addresses if a != me], str(directory / f"n{i}{journal.SUFFIX}"))
        for i, me in enumerate(addresses)
    ]


@pytest.fixture
def cluster(addresses: list[str], tmp_path: Path) -> Iterator[list[Counter]]:
    nodes = start(addresses, tmp_path)
    yield nodes
    for node in nodes:
        node.destroy()


def test_three_nodes_commit_through_every_node_and_come_back_from_their_journals(
    cluster: list[Counter], addresses: list[str], tmp_path: Path
) -> None:
    wait_for(lambda: all(node._getLeader() is not None for node in cluster))
    for round_ in range(30):
        node = cluster[round_ % 3]  # followers forward to the leader
        node.add_v1(1, sync=True, timeout=10)
    wait_for(lambda: all(node.value == 30 for node in cluster))
    for node in cluster:
        node.destroy()
    for i in range(3):  # what each node's disk holds now
        held = journal.DurableJournal(str(tmp_path / f"n{i}{journal.SUFFIX}"))
        commands = [held[j][0] for j in range(len(held))]
        assert sum(1 for command in commands if len(command) > 1) >= 30  # the increments
        assert held.getCurrentTerm() >= 1
        held._destroy()
    reborn = start(addresses, tmp_path)  # no full dump: the journals alone
    cluster[:] = reborn  # the fixture destroys these
    wait_for(lambda: all(node.value == 30 for node in reborn))
    assert reborn[1].add_v1(5, sync=True, timeout=10) == 35
    wait_for(lambda: all(node.value == 35 for node in reborn))


def test_a_node_with_the_wrong_password_takes_no_part(addresses: list[str], tmp_path: Path) -> None:
    good = [
        Counter(me, [a for a in addresses if a != me], str(tmp_path / f"n{i}{journal.SUFFIX}"))
        for i, me in enumerate(addresses[:2])
    ]
    intruder = Counter(
        addresses[2],
        addresses[:2],
        str(tmp_path / f"bad{journal.SUFFIX}"),
        password="not-the-cluster-secret",
    )
    try:
        wait_for(lambda: all(node._getLeader() is not None for node in good))
        assert good[0].add_v1(7, sync=True, timeout=10) == 7  # two of three: a majority
        wait_for(lambda: good[1].value == 7)
        time.sleep(1.0)
        assert intruder.value == 0
        assert intruder._getLeader() is None or intruder._getLeader() == intruder.selfNode
    finally:
        for node in [*good, intruder]:
            node.destroy()


def test_the_journal_files_are_durable_journals_not_pysyncobjs(
    cluster: list[Counter], tmp_path: Path
) -> None:
    wait_for(lambda: all(node._getLeader() is not None for node in cluster))
    cluster[0].add_v1(1, sync=True, timeout=10)
    path = tmp_path / f"n0{journal.SUFFIX}"
    with open(path, "rb") as file:
        head = file.read(9)
    assert not head.startswith(b"PYSYNCOBJ")  # pysyncobj's FileJournal header
    opened = journal.DurableJournal(str(path))
    assert len(opened) >= 2  # the leader's no-op and the increment, at least
    assert opened.getCurrentTerm() >= 1
    opened._destroy()
    assert os.stat(path).st_mode & 0o777 == 0o600
