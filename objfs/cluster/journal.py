"""objfs.cluster.journal — pysyncobj's Raft journal, durable before anything counts.

pysyncobj keeps its log in an mmap that nothing flushes, and its term and vote
in a file it renames into place without fsync: a killed process keeps them, a
power loss does not. Raft is only safe if an entry a node acknowledged, and the
vote it gave in a term, survive that node's crash. `DurableJournal` implements
pysyncobj's `Journal` interface over one append-only file and fdatasyncs every
change before the call returns. pysyncobj answers AppendEntries and
RequestVote only after those calls return, so nothing reaches a peer before it
is on disk.

The file (`docs/cluster.md`) is a sequence of frames:

    frame   = length:u32 crc32c:u32 body          (little-endian; crc over body)
    body    = kind:u8 payload
    ENTRY   = idx:u64 term:u64 command            (append one log entry)
    KEEP    = count:u64                           (keep the first count entries: deleteEntriesFrom)
    DROP    = count:u64                           (drop the first count entries: deleteEntriesTo)
    TERM    = term:u64 vote                       (vote: the node id voted for, UTF-8; empty: none)
    COMMIT  = index:u64                           (a hint: replay may start lower, never higher)

Replay reads frames until the first that is short or fails its CRC (the tail
a crash tore) and truncates the file there. When dead frames outweigh live
ones, the file is rewritten whole beside the old one, fsynced, and renamed over
it (then the directory is fsynced), so a crash leaves one or the other.

All of it runs on pysyncobj's own thread (never the event loop): the calls
block on the disk by design, since Raft must not answer before the disk has.
By default every call syncs. With `group_syncs` (what `objfs.cluster.raft`
sets), entry changes wait for `flush`, which the member calls before any
message leaves the node and at the start of each tick, before the leader
counts its own copy toward a commit: a follower catching up on a thousand
entries syncs once per AppendEntries, not a thousand times. A term or vote is
always synced at once.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any

import crc32c
from pysyncobj import journal as pysyncobj_journal
from pysyncobj import syncobj as pysyncobj_syncobj

from objfs.store.device import write_file_atomically

ENTRY, KEEP, DROP, TERM, COMMIT = 1, 2, 3, 4, 5
_HEADER = struct.Struct("<II")
_U64 = struct.Struct("<Q")
_ENTRY = struct.Struct("<QQ")
SUFFIX = ".objfs-journal"  # journal files with this suffix are DurableJournals
_COMPACT_MIN_BYTES = 4 << 20  # never rewrite a file smaller than this


class JournalFile:
    """The journal's file: appends, fdatasync, whole rewrites. Tests replace it
    with one that forgets what was not synced (a power loss)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        # It holds the cluster's users and their secret keys (catalog entries):
        # owner-only even if an older objfs, or a copy, left it wider.
        os.fchmod(self._fd, 0o600)

    def read_all(self) -> bytes:
        size = os.fstat(self._fd).st_size
        return os.pread(self._fd, size, 0) if size else b""

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def replace(self, data: bytes) -> None:
        """Make `data` the whole file, atomically across a crash."""
        write_file_atomically(self.path, data, mode=0o600)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self._fd)


_MEMBERSHIP = 2  # pysyncobj's _COMMAND_TYPE.MEMBERSHIP, the first byte of such a command


def _is_membership(command: bytes) -> bool:
    return command[:1] == bytes([_MEMBERSHIP])


def frame(kind: int, payload: bytes) -> bytes:
    body = bytes([kind]) + payload
    return _HEADER.pack(len(body), crc32c.crc32c(body)) + body


class DurableJournal(pysyncobj_journal.Journal):  # type: ignore[misc]
    """pysyncobj's Journal interface; every change is on disk when the call returns."""

    def __init__(self, path: str, *, opener: Callable[[str], Any] = JournalFile) -> None:
        self._file = opener(path)
        self._entries: list[tuple[bytes, int, int]] = []  # (command, idx, term)
        self._term = 0
        self._vote: str | None = None
        self._commit = 1  # pysyncobj's own default
        self._commit_saved = 1
        self._bytes = 0  # of the file
        # With group_syncs, entry changes are synced by `flush`, which the Raft
        # member calls before anything leaves the node and before each tick's
        # commit count (objfs.cluster.raft): one fdatasync per batch, not per entry.
        self.group_syncs = False
        self._unsynced = False
        self.syncs = 0
        self._pending_cut: int | None = None  # see deleteEntriesFrom
        self._replay()

    # -- replay and compaction ----------------------------------------------------

    def _replay(self) -> None:
        data = self._file.read_all()
        position = 0
        while position + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, position)
            body = data[position + _HEADER.size : position + _HEADER.size + length]
            if length == 0 or len(body) < length or crc32c.crc32c(body) != crc:
                break  # a torn tail: nothing after it was ever acknowledged
            self._apply(body[0], body[1:])
            position += _HEADER.size + length
        if position < len(data):
            self._file.truncate(position)
        self._bytes = position
        self._commit_saved = self._commit

    def _apply(self, kind: int, payload: bytes) -> None:
        if kind == ENTRY:
            idx, term = _ENTRY.unpack_from(payload)
            self._entries.append((payload[_ENTRY.size :], idx, term))
        elif kind == KEEP:
            del self._entries[_U64.unpack(payload)[0] :]
        elif kind == DROP:
            del self._entries[: _U64.unpack(payload)[0]]
        elif kind == TERM:
            self._term = _U64.unpack_from(payload)[0]
            vote = payload[_U64.size :]
            self._vote = vote.decode() if vote else None
        elif kind == COMMIT:
            self._commit = _U64.unpack(payload)[0]
        else:
            raise ValueError(f"{self._file.path}: unknown journal frame kind {kind}")

    def _write(self, *frames: bytes, sync: bool = True) -> None:
        data = b"".join(frames)
        self._file.append(data)
        self._bytes += len(data)
        if sync:
            self._file.sync()
            self.syncs += 1
            self._unsynced = False
        else:
            self._unsynced = True

    def _write_entry_change(self, data: bytes) -> None:
        self._write(data, sync=not self.group_syncs)

    def _live_frames(self) -> list[bytes]:
        frames = [
            frame(ENTRY, _ENTRY.pack(idx, term) + command) for command, idx, term in self._entries
        ]
        vote = (self._vote or "").encode()
        frames.append(frame(TERM, _U64.pack(self._term) + vote))
        frames.append(frame(COMMIT, _U64.pack(self._commit)))
        return frames

    def _compact_if_worth_it(self) -> None:
        live = sum(len(command) + 29 for command, _, _ in self._entries)  # 29: framing
        if self._bytes > _COMPACT_MIN_BYTES and self._bytes > 4 * live:
            data = b"".join(self._live_frames())
            self._file.replace(data)
            self._bytes = len(data)
            self._commit_saved = self._commit

    # -- pysyncobj's Journal ------------------------------------------------------

    def add(self, command: bytes | str, idx: int, term: int) -> None:
        raw = command.encode("latin-1") if isinstance(command, str) else bytes(command)
        cut = self._pending_cut
        if cut is not None:
            if cut >= len(self._entries) or self._entries[cut][1] != idx:
                self._settle()  # not the entry in that place: the cut is over
            elif self._entries[cut][2] == term:
                self._pending_cut = cut + 1  # the same entry again: nothing to change
                return
            else:
                self._cut(cut)  # the first real conflict: the tail goes from here
        self._write_entry_change(frame(ENTRY, _ENTRY.pack(idx, term) + raw))
        self._entries.append((raw, idx, term))

    def clear(self) -> None:
        self._settle()
        self._cut(0)

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """pysyncobj calls this before every AppendEntries' entries, whether or not
        they conflict with ours. Raft cuts a log only at a conflict (same index,
        another term): cutting entries that match would drop entries this node has
        acknowledged, and a resent or reordered AppendEntries does exactly that.
        So the cut waits: `add` skips entries we already hold and cuts at the first
        that differs; a tail nothing conflicted with is kept (`_settle`)."""
        self._settle()
        if entryFrom < len(self._entries):
            self._pending_cut = entryFrom

    def _cut(self, position: int) -> None:
        self._pending_cut = None
        if position < len(self._entries):
            self._write_entry_change(frame(KEEP, _U64.pack(position)))
            del self._entries[position:]

    def _settle(self) -> None:
        """End a pending cut that met no conflict: keep the tail. Except a tail
        with a membership change in it: pysyncobj has already undone that change
        in memory, so the tail is cut as pysyncobj meant (the leader sends it
        again)."""
        cut = self._pending_cut
        if cut is None:
            return
        self._pending_cut = None
        if any(_is_membership(command) for command, _, _ in self._entries[cut:]):
            self._cut(cut)

    def deleteEntriesTo(self, entryTo: int) -> None:
        self._settle()
        self._write(frame(DROP, _U64.pack(entryTo)))
        del self._entries[:entryTo]
        self._compact_if_worth_it()

    def __getitem__(self, item: Any) -> Any:
        self._settle()
        return self._entries[item]

    def __len__(self) -> int:
        self._settle()
        return len(self._entries)

    def _destroy(self) -> None:
        self._settle()
        if self._commit != self._commit_saved:
            self._write(frame(COMMIT, _U64.pack(self._commit)))
        self._file.close()

    def flush(self) -> None:
        """Sync what `group_syncs` left unsynced (nothing otherwise)."""
        self._settle()
        if self._unsynced:
            self._file.sync()
            self.syncs += 1
            self._unsynced = False

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        self._commit = raftCommitIndex  # saved lazily: a lower hint is safe

    def getRaftCommitIndex(self) -> int:
        return self._commit

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        self._settle()
        vote = "" if votedForNodeId is None else str(votedForNodeId)
        self._write(frame(TERM, _U64.pack(term) + vote.encode()))  # synced: votes at once
        self._term, self._vote = term, vote or None

    def getCurrentTerm(self) -> int:
        return self._term

    def getVotedForNodeId(self) -> str | None:
        return self._vote

    def onOneSecondTimer(self) -> None:
        if self._commit != self._commit_saved:
            self._write(frame(COMMIT, _U64.pack(self._commit)), sync=False)
            self._commit_saved = self._commit


_pysyncobj_create_journal = pysyncobj_syncobj.createJournal


def _create_journal(journalFile: str | None = None) -> Any:
    if journalFile is not None and journalFile.endswith(SUFFIX):
        return DurableJournal(journalFile)
    return _pysyncobj_create_journal(journalFile)


def install() -> None:
    """Make SyncObj open a `DurableJournal` for every journalFile ending in SUFFIX
    (SyncObj calls `createJournal` by name from its own module)."""
    pysyncobj_syncobj.createJournal = _create_journal
