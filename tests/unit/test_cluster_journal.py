"""The Raft journal: what a call acknowledged survives a power loss, a torn tail is cut.

Method: `DurableJournal` over `PowerLossFile`, which keeps appends in a page
cache until `sync` and, at a "power loss", keeps only what was synced plus a
random prefix of the rest (a torn write). Random sequences of pysyncobj's calls
run against a plain model; after a loss at a random point the reopened journal
must equal the model as of the last call that returned. Then the real file,
reopened, and pysyncobj's SyncObj on top of it (tests/cluster has the nodes).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from objfs.cluster.journal import DurableJournal, JournalFile


class PowerLossFile:
    """A file whose unsynced appends a power loss may drop, or cut anywhere."""

    disks: dict[str, bytes] = {}  # path -> what a power loss keeps

    def __init__(self, path: str) -> None:
        self.path = path
        self.durable = self.disks.get(path, b"")
        self.cache = b""  # appended, not yet synced

    def read_all(self) -> bytes:
        return self.durable + self.cache

    def truncate(self, size: int) -> None:
        whole = self.read_all()[:size]
        self.durable, self.cache = whole, b""
        self.disks[self.path] = whole

    def append(self, data: bytes) -> None:
        self.cache += data

    def sync(self) -> None:
        self.durable += self.cache
        self.cache = b""
        self.disks[self.path] = self.durable

    def replace(self, data: bytes) -> None:
        self.durable, self.cache = data, b""
        self.disks[self.path] = data

    def close(self) -> None:
        pass

    def lose_power(self, rng: random.Random) -> None:
        self.disks[self.path] = self.durable + self.cache[: rng.randint(0, len(self.cache))]


class Model:
    def __init__(self) -> None:
        self.entries: list[tuple[bytes, int, int]] = []
        self.term = 0
        self.vote: str | None = None


def state(journal: DurableJournal) -> tuple[list[tuple[bytes, int, int]], int, str | None]:
    return (
        [journal[i] for i in range(len(journal))],
        journal.getCurrentTerm(),
        journal.getVotedForNodeId(),
    )


def step(journal: DurableJournal, model: Model, rng: random.Random, next_idx: int) -> int:
    """One random pysyncobj call on both; the next log index."""
    roll = rng.random()
    if roll < 0.6:
        command = rng.randbytes(rng.randint(0, 300))
        term = model.term
        journal.add(command, next_idx, term)
        model.entries.append((command, next_idx, term))
        return next_idx + 1
    if roll < 0.7 and model.entries:
        # pysyncobj cuts before every AppendEntries' entries; the journal cuts only
        # at a conflict (Raft's rule), so a resent AppendEntries keeps the tail.
        keep = rng.randint(0, len(model.entries) - 1)
        journal.deleteEntriesFrom(keep)
        if rng.random() < 0.5:  # a resend: some of the same entries again
            for entry in model.entries[keep : keep + rng.randint(0, 3)]:
                journal.add(*entry)
            return next_idx
        _, idx, term = model.entries[keep]  # a new leader's entry in that place
        conflicting = (rng.randbytes(rng.randint(0, 50)), idx, term + 1)
        journal.add(*conflicting)
        model.entries[keep:] = [conflicting]
        return idx + 1
    if roll < 0.8 and model.entries:
        drop = rng.randint(0, len(model.entries))
        journal.deleteEntriesTo(drop)
        del model.entries[:drop]
        return next_idx
    if roll < 0.95:
        model.term += rng.randint(0, 2)
        model.vote = rng.choice([None, "127.0.0.1:4321", "127.0.0.1:4322", "n\u00e9"])
        journal.setCurrentTerm(model.term, model.vote)
        return next_idx
    journal.setRaftCommitIndex(rng.randint(1, next_idx))
    journal.onOneSecondTimer()
    return next_idx


@pytest.mark.parametrize("seed", range(40))
def test_a_power_loss_keeps_every_call_that_returned(seed: int) -> None:
    rng = random.Random(seed)
    path = f"journal-{seed}"
    PowerLossFile.disks.pop(path, None)
    files: list[PowerLossFile] = []

    def opener(name: str) -> PowerLossFile:
        files.append(PowerLossFile(name))
        return files[-1]

    model = Model()
    next_idx = 1
    for _ in range(rng.randint(1, 6)):  # several lives, each ended by a power loss
        journal = DurableJournal(path, opener=opener)
        assert state(journal) == (model.entries, model.term, model.vote)
        for _ in range(rng.randint(0, 60)):
            next_idx = step(journal, model, rng, next_idx)
        files[-1].lose_power(rng)
    assert state(DurableJournal(path, opener=opener)) == (model.entries, model.term, model.vote)


def test_the_real_file_reopens_with_entries_term_vote_and_commit_hint(tmp_path: Path) -> None:
    path = str(tmp_path / "raft.objfs-journal")
    journal = DurableJournal(path)
    journal.add(b"\x00first", 1, 1)
    journal.add("second", 2, 1)  # pysyncobj may hand str on old paths: latin-1
    journal.setCurrentTerm(3, "127.0.0.1:7001")
    journal.add(b"third", 3, 3)
    journal.deleteEntriesFrom(2)  # a conflicting tail replaced (another term)
    journal.add(b"other", 3, 4)
    journal.setRaftCommitIndex(2)
    journal._destroy()
    again = DurableJournal(path)
    assert [again[i] for i in range(len(again))] == [
        (b"\x00first", 1, 1),
        (b"second", 2, 1),
        (b"other", 3, 4),
    ]
    assert again[-1] == (b"other", 3, 4)
    assert again.getCurrentTerm() == 3 and again.getVotedForNodeId() == "127.0.0.1:7001"
    assert again.getRaftCommitIndex() == 2
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    again._destroy()


def test_a_resent_append_keeps_acknowledged_entries(tmp_path: Path) -> None:
    """pysyncobj cuts the log before every AppendEntries' entries. A resent or
    reordered AppendEntries carrying fewer entries than this node has (and
    acknowledged) must not shorten it: Raft cuts only at a conflict."""
    journal = DurableJournal(str(tmp_path / "raft.objfs-journal"))
    for idx in range(1, 6):
        journal.add(b"entry %d" % idx, idx, 1)
    journal.deleteEntriesFrom(1)  # prevLogIdx = 1, entries 2..3 again
    journal.add(b"entry 2", 2, 1)
    journal.add(b"entry 3", 3, 1)
    assert len(journal) == 5  # 4 and 5 stay
    journal.deleteEntriesFrom(3)  # a heartbeat from an older position: nothing in it
    journal.flush()
    assert [journal[i][1] for i in range(len(journal))] == [1, 2, 3, 4, 5]
    journal.deleteEntriesFrom(3)  # a new leader's entry 4 in term 2: 4 and 5 go
    journal.add(b"new 4", 4, 2)
    assert [journal[i][1:] for i in range(len(journal))] == [(1, 1), (2, 1), (3, 1), (4, 2)]
    journal._destroy()
    again = DurableJournal(str(tmp_path / "raft.objfs-journal"))
    assert [again[i][1:] for i in range(len(again))] == [(1, 1), (2, 1), (3, 1), (4, 2)]
    again._destroy()


def test_a_torn_tail_is_cut_and_later_appends_follow_the_last_whole_frame(tmp_path: Path) -> None:
    path = str(tmp_path / "raft.objfs-journal")
    journal = DurableJournal(path)
    for idx in range(1, 4):
        journal.add(b"x" * 100, idx, 1)
    journal._destroy()
    with open(path, "r+b") as file:  # the last frame half written
        file.truncate(os.path.getsize(path) - 50)
    again = DurableJournal(path)
    assert len(again) == 2
    again.add(b"new", 3, 2)
    again._destroy()
    third = DurableJournal(path)
    assert [third[i][1:] for i in range(len(third))] == [(1, 1), (2, 1), (3, 2)]
    third._destroy()


def test_compaction_rewrites_the_file_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from objfs.cluster import journal as module

    monkeypatch.setattr(module, "_COMPACT_MIN_BYTES", 10_000)
    path = str(tmp_path / "raft.objfs-journal")
    journal = DurableJournal(path)
    for idx in range(1, 201):
        journal.add(os.urandom(200), idx, 5)
    journal.setCurrentTerm(5, None)
    kept = [journal[i] for i in range(190, 200)]
    before = os.path.getsize(path)
    journal.deleteEntriesTo(190)  # a snapshot took the first 190
    assert os.path.getsize(path) < before // 4
    journal.add(b"after", 201, 5)
    journal._destroy()
    again = DurableJournal(path)
    assert [again[i] for i in range(len(again))] == [*kept, (b"after", 201, 5)]
    assert again.getCurrentTerm() == 5 and again.getVotedForNodeId() is None
    again._destroy()


def test_the_journal_file_syncs_what_it_appends(tmp_path: Path) -> None:
    """JournalFile is the only part of the journal that makes syscalls."""
    file = JournalFile(str(tmp_path / "f"))
    file.append(b"abc")
    file.sync()
    file.replace(b"whole")
    file.append(b"+")
    assert file.read_all() == b"whole+"
    file.truncate(2)
    assert file.read_all() == b"wh"
    file.close()


def test_grouped_syncs_wait_for_flush_and_votes_do_not(tmp_path: Path) -> None:
    """With group_syncs, entry changes are durable only after flush(); a vote at once
    (and it carries the entries written before it)."""
    path = str(tmp_path / "grouped.objfs-journal")
    grouped = DurableJournal(path, opener=PowerLossFile)
    grouped.group_syncs = True
    for idx in range(1, 6):
        grouped.add(b"entry %d" % idx, idx, 1)
    assert grouped.syncs == 0
    assert len(DurableJournal(path, opener=PowerLossFile)) == 0  # power lost now: none
    grouped.setCurrentTerm(2, "127.0.0.1:1")
    grouped.add(b"unsynced", 6, 2)
    assert grouped.syncs == 1
    lost = DurableJournal(path, opener=PowerLossFile)
    assert (len(lost), lost.getCurrentTerm()) == (5, 2)

    grouped.flush()
    grouped.flush()  # nothing new: no second sync
    assert grouped.syncs == 2
    kept = DurableJournal(path, opener=PowerLossFile)
    assert kept[len(kept) - 1] == (b"unsynced", 6, 2)
