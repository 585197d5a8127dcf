"""objfs.cluster.snapshot — Raft snapshots made of the store's own state, not of pickles.

pysyncobj compacts its log by asking for a "full dump" of the state machine,
and sends that file to a follower whose next entry the leader has already
dropped. Left alone it pickles the SyncObj on the Raft thread. objfs gives it
a serializer, a checker and a deserializer (`SyncObjConf(serializer=,
serializeChecker=, deserializer=)`, wired by objfs.cluster.raft) that build the
dump from the store's index, the catalog and the recent proposal tags, and
that never hold the Raft thread for more than a file header.

Taking one (each node, when its log holds `store.snapshot_entries` entries):

1. pysyncobj calls `serialize(tmp, (last, prev, cluster))` on its thread;
   `last` is the entry it applied last. This only asks the event loop to
   capture the state and returns. (pysyncobj then renames `tmp` over the dump
   file; nothing was written there, so the rename fails and is ignored: the
   checker, not the serializer, reports how it went.)
2. On the event loop the callbacks run in the order they were queued, so every
   entry up to `last` has been applied when the capture runs: the index's
   `Snapshot` (two C-level copies), the catalog's changes, the recent tags.
3. A worker thread encodes and writes the file (temporary file, fdatasync,
   rename, directory fsync).
4. `check()`, which pysyncobj polls every tick, says SUCCESS; only then does
   pysyncobj drop the log entries before `prev`. A failure says FAILED and
   nothing is dropped.

Loading one: when the node starts (pysyncobj loads the file before it applies
anything) and when a follower has received one from the leader,
`deserialize(path)` runs on the Raft thread: it reads and checks the header,
makes the file durable (pysyncobj renames a received file without a sync),
cuts the journal so it starts at `prev` if it holds it (a crash between the
file's rename and the journal's cut would otherwise make pysyncobj throw the
journal's newer entries away), hard-links the file for the installer and asks
the event loop to `install` it. The `Replicator` holds back entries delivered
after that until the state is in place.

The file (`docs/format.md`, "Raft snapshot"):

    magic     "OBJFS-RAFT-SNAPSHOT\\n"
    head_len  u32, head_crc32c u32, head (JSON, below)
    body      objfs.store.checkpoint body of the index, lsn = the last index

    head = {"format": 1, "last": [index, term, command (base64)], "prev": [...],
            "cluster": [raft address, ...], "catalog": [change, ...],
            "recent": [[origin, tag], ...], "body_bytes": N, "body_crc32c": C}
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, final

import crc32c
import trio
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.node import TCPNode

from objfs.errors import Corrupted
from objfs.store.checkpoint import decode_body, encode_body
from objfs.store.device import link_file, read_file_part, sync_file, write_file_atomically
from objfs.store.index import Snapshot

log = logging.getLogger(__name__)

MAGIC = b"OBJFS-RAFT-SNAPSHOT\n"
FORMAT = 1
_HEAD = struct.Struct("<II")  # head_len, head_crc32c
_MAX_HEAD_BYTES = 256 << 20
Entry = tuple[bytes, int, int]  # pysyncobj's log entry: command, index, term


@dataclass(frozen=True, slots=True)
class State:
    """What a node's state machine is at one Raft index."""

    index: Snapshot  # the object index
    catalog: list[dict[str, Any]]  # the catalog's applied changes, in order
    recent: list[tuple[int, int]]  # (origin, tag) of the entries applied last


def _entry_json(entry: Entry) -> list[Any]:
    command, index, term = entry
    return [int(index), int(term), base64.b64encode(bytes(command)).decode("ascii")]


def _entry_of(raw: Any) -> Entry:
    index, term, command = raw
    return base64.b64decode(command), int(index), int(term)


def encode(state: State, last: Entry, prev: Entry, cluster: list[str]) -> bytes:
    """The snapshot file's bytes. Pure CPU (the index body): a worker thread's job."""
    body = encode_body(state.index, last[1])
    head = json.dumps(
        {
            "format": FORMAT,
            "last": _entry_json(last),
            "prev": _entry_json(prev),
            "cluster": cluster,
            "catalog": state.catalog,
            "recent": [list(pair) for pair in state.recent],
            "body_bytes": len(body),
            "body_crc32c": crc32c.crc32c(body),
        }
    ).encode()
    return b"".join((MAGIC, _HEAD.pack(len(head), crc32c.crc32c(head)), head, body))


def read_head(path: str) -> tuple[dict[str, Any], int]:
    """The checked head of a snapshot file and where its body starts. Blocking.

    Raises:
        Corrupted: not a snapshot file of this format, or its head is damaged.
    """
    try:
        start = read_file_part(path, 0, len(MAGIC) + _HEAD.size)
        if len(start) < len(MAGIC) + _HEAD.size or not start.startswith(MAGIC):
            raise Corrupted(f"{path} is not an objfs Raft snapshot")
        length, crc = _HEAD.unpack_from(start, len(MAGIC))
        if length > _MAX_HEAD_BYTES:
            raise Corrupted(f"{path}: a snapshot head of {length} bytes")
        raw = read_file_part(path, len(start), length)
    except OSError as exc:
        raise Corrupted(f"{path}: {exc.strerror}") from None
    if len(raw) != length or crc32c.crc32c(raw) != crc:
        raise Corrupted(f"{path}: the snapshot's head is torn or damaged")
    try:
        head = json.loads(raw)
        if head["format"] != FORMAT:
            raise Corrupted(f"{path}: snapshot format {head['format']} is not readable")
        _entry_of(head["last"]), _entry_of(head["prev"])
    except (ValueError, KeyError, TypeError) as exc:
        raise Corrupted(f"{path}: the snapshot's head does not parse: {exc!r}") from None
    return head, len(start) + length


def read(path: str) -> tuple[int, State]:
    """(last index, state) from a snapshot file. Blocking: a worker thread's job.

    Raises:
        Corrupted: the file is damaged or not a snapshot.
    """
    head, start = read_head(path)
    try:
        body = read_file_part(path, start)
    except OSError as exc:
        raise Corrupted(f"{path}: {exc.strerror}") from None
    if len(body) != head["body_bytes"] or crc32c.crc32c(body) != head["body_crc32c"]:
        raise Corrupted(f"{path}: the snapshot's body is torn or damaged")
    lsn, index = decode_body(body)
    last = _entry_of(head["last"])[1]
    if lsn != last:
        raise Corrupted(f"{path}: the body is of index {lsn}, the head says {last}")
    try:
        recent = [(int(origin), int(tag)) for origin, tag in head["recent"]]
        catalog = [dict(change) for change in head["catalog"]]
    except (ValueError, TypeError) as exc:
        raise Corrupted(f"{path}: the snapshot's head does not parse: {exc!r}") from None
    return last, State(index, catalog, recent)


@final
class RaftSnapshots:
    """pysyncobj's serializer, checker and deserializer for one node.

    Args:
        path: the dump file (pysyncobj's `fullDumpFile`), in the data directory.
        capture: on the event loop: the state now, if it is the state at the
            given Raft index (else None: that snapshot is given up).
        install: on the event loop: install the snapshot in the file given
            (a hard link this module made; the installer removes it), whose
            last entry has the given index.
    """

    def __init__(
        self,
        path: str,
        *,
        capture: Callable[[int], State | None],
        install: Callable[[str, int], None],
    ) -> None:
        self.path = path
        self._capture = capture
        self._install = install
        self.token: trio.lowlevel.TrioToken | None = None  # set before Raft starts
        self.nursery: trio.Nursery | None = None  # where files are written from
        # The journal pysyncobj has open (objfs.cluster.raft sets it before Raft starts).
        self.journal: Callable[[], Any] = lambda: None
        self._state = SERIALIZER_STATE.NOT_SERIALIZING  # set on the loop, read on Raft's
        self._links = itertools.count()
        self.taken = 0
        self.installed = 0
        self.last_index = 0  # of the newest snapshot taken or installed here
        self.last_bytes = 0

    # -- on pysyncobj's thread -----------------------------------------------------------

    def serialize(self, _tmp_path: str, data: tuple[Entry, Entry, Any]) -> None:
        last, prev, cluster = data
        self._state = SERIALIZER_STATE.SERIALIZING
        addresses = sorted(str(node.id) for node in cluster)
        if not self._soon(self._take, tuple(last), tuple(prev), addresses):
            self._state = SERIALIZER_STATE.FAILED

    def check(self) -> int:
        state = int(self._state)
        if state in (SERIALIZER_STATE.SUCCESS, SERIALIZER_STATE.FAILED):
            self._state = SERIALIZER_STATE.NOT_SERIALIZING
        return state

    def deserialize(self, path: str) -> tuple[Entry, Entry, list[TCPNode]]:
        """Raises Corrupted (pysyncobj logs it and goes on with its journal; the
        installer is told, so the node stops applying instead of diverging)."""
        try:
            head, _ = read_head(path)
        except Corrupted as exc:
            self._soon(self._install, "", -1)
            log.critical("the Raft snapshot cannot be loaded: %s", exc)
            raise
        sync_file(path)
        last, prev = _entry_of(head["last"]), _entry_of(head["prev"])
        self._cut_journal_to(prev)
        link = f"{path}.install-{os.getpid()}-{next(self._links)}"
        link_file(path, link)
        self._soon(self._install, link, last[1])
        return last, prev, [TCPNode(address) for address in head["cluster"]]

    def _cut_journal_to(self, prev: Entry) -> None:
        """Make the journal start at `prev` if it holds it: pysyncobj keeps the
        journal only if it starts with the snapshot's last two entries."""
        journal = self.journal()
        if journal is None or len(journal) == 0:
            return
        position = prev[1] - journal[0][1]
        if 0 < position < len(journal) and tuple(journal[position])[1:] == prev[1:]:
            journal.deleteEntriesTo(position)

    def _soon(self, function: Callable[..., Any], *args: Any) -> bool:
        token = self.token
        if token is None:
            return False
        try:
            token.run_sync_soon(function, *args)
        except trio.RunFinishedError:
            return False
        return True

    # -- on the event loop -----------------------------------------------------------------

    def _take(self, last: Entry, prev: Entry, cluster: list[str]) -> None:
        state = self._capture(last[1])
        if state is None or self.nursery is None:
            self._state = SERIALIZER_STATE.FAILED
            return
        self.nursery.start_soon(self._write, state, last, prev, cluster)

    async def _write(self, state: State, last: Entry, prev: Entry, cluster: list[str]) -> None:
        def write() -> int:
            data = encode(state, last, prev, cluster)
            write_file_atomically(self.path, data, mode=0o600)  # it holds users' secrets
            return len(data)

        try:
            size = await trio.to_thread.run_sync(write)
        except (OSError, ValueError) as exc:
            log.error("Raft snapshot at index %d not written: %s", last[1], exc)
            self._state = SERIALIZER_STATE.FAILED
            return
        self.taken += 1
        self.last_index, self.last_bytes = last[1], size
        log.info("Raft snapshot at index %d written (%d bytes)", last[1], size)
        self._state = SERIALIZER_STATE.SUCCESS
