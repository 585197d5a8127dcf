"""objfs.cluster.raft — pysyncobj behind a small API that speaks to trio.

Owns the SyncObj: its thread, its camelCase, its configuration made safe
(docs/cluster.md, "Raft, made safe"):

- `password=` is the cluster secret, so nothing from a peer without it is
  ever unpickled;
- one replicated method, `apply_v1(entry: bytes)`: versioned, plain bytes;
- the journal is `DurableJournal` (fdatasynced before a reply counts);
- `appendEntriesUseBatch=False` (~1 ms commits instead of ~100 ms),
  `useFork=False`, dynamic membership on;
- log compaction writes snapshots of the store's own state, off the Raft
  thread (objfs.cluster.snapshot), once the log holds `snapshot_entries`.

Everything pysyncobj calls back runs on its thread; this module hands each
call to the event loop with `trio_token.run_sync_soon`, which runs callbacks in
the order they were queued. So committed entries reach `deliver` on the event
loop in log order, and nothing on the Raft thread touches the store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, final

import trio
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

from objfs.cluster import journal
from objfs.cluster.snapshot import RaftSnapshots
from objfs.errors import ConfigError

log = logging.getLogger(__name__)

journal.install()


class _ResentAppendFilter(logging.Filter):
    """pysyncobj logs a critical "truncating already-applied log entries" before
    every AppendEntries that overlaps what a follower has, resends included. The
    DurableJournal cuts only at a real conflict (journal.deleteEntriesFrom), so
    the message is not true of objfs: it is dropped rather than alarm operators."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("truncating already-applied log entries")


logging.getLogger("pysyncobj.syncobj").addFilter(_ResentAppendFilter())

# What a failed proposal means for a retry of the same entry.
NOT_APPENDED = "not appended"  # certainly not in the log: propose again
MAYBE_APPENDED = "maybe appended"  # it may still commit: propose again, apply once (by tag)
_REASONS = {
    FAIL_REASON.QUEUE_FULL: (NOT_APPENDED, "the leader's queue is full"),
    FAIL_REASON.MISSING_LEADER: (NOT_APPENDED, "no leader"),
    FAIL_REASON.NOT_LEADER: (NOT_APPENDED, "asked a node that is no longer the leader"),
    FAIL_REASON.REQUEST_DENIED: (NOT_APPENDED, "the request was denied"),
    FAIL_REASON.DISCARDED: (NOT_APPENDED, "a new leader replaced the entry"),
    FAIL_REASON.LEADER_CHANGED: (MAYBE_APPENDED, "the leader changed"),
}


@final
class _Member(SyncObj):  # type: ignore[misc]
    def __init__(
        self,
        me: str,
        others: list[str],
        conf: SyncObjConf,
        deliver: Callable[[int, bytes], None],
        snapshots: RaftSnapshots | None = None,
    ) -> None:
        self._objfs_deliver = deliver
        if snapshots is not None:  # the journal is made in SyncObj.__init__, used later
            snapshots.journal = lambda: getattr(self, "_SyncObj__raftLog", None)
        super().__init__(me, others, conf=conf)
        # pysyncobj's tick thread stops when the thread that built the SyncObj ends.
        # That is a trio worker (the journal is read off the event loop), which
        # trio retires when idle: tie the tick thread to the process instead.
        self._SyncObj__mainThread = threading.main_thread()
        # One journal sync per batch: before anything is sent (a follower's ack, a
        # vote, the leader's AppendEntries) and at the start of each tick (before
        # the leader counts its own copy of new entries toward a commit).
        self._objfs_journal = self._SyncObj__raftLog
        transport = self._SyncObj__transport
        send = transport.send

        def send_synced(node: Any, message: Any) -> Any:
            self._objfs_journal.flush()
            return send(node, message)

        transport.send = send_synced
        if isinstance(self._objfs_journal, journal.DurableJournal):
            self._objfs_journal.group_syncs = True

    def _onTick(self, timeToWait: float = 0.0) -> None:
        self._objfs_journal.flush()
        super()._onTick(timeToWait)

    @replicated  # type: ignore[untyped-decorator]
    def apply_v1(self, entry: bytes) -> int:
        """Runs on every node for every committed entry, in log order. Never rename
        or remove: pysyncobj numbers methods by sorted name, and old entries name it."""
        index: int = self.raftLastApplied + 1
        self._objfs_deliver(index, entry)
        return index


def safe_conf(
    *,
    secret: str,
    journal_path: str,
    on_ready: Callable[[], None] | None = None,
    snapshots: RaftSnapshots | None = None,
    snapshot_entries: int = 100_000,
) -> SyncObjConf:
    """pysyncobj's configuration as objfs runs it (the module docstring says why).
    Without `snapshots` the log is never compacted (benchmarks, journal tests)."""
    assert journal_path.endswith(journal.SUFFIX)
    compaction: dict[str, Any] = {"logCompactionMinEntries": 1 << 62}
    if snapshots is not None:
        compaction = {
            "logCompactionMinEntries": snapshot_entries,
            "fullDumpFile": snapshots.path,
            "serializer": snapshots.serialize,
            "serializeChecker": snapshots.check,
            "deserializer": snapshots.deserialize,
        }
    return SyncObjConf(
        password=secret,
        journalFile=journal_path,
        appendEntriesUseBatch=False,
        useFork=False,
        dynamicMembershipChange=True,
        logCompactionMinTime=1 << 31,  # by entries only
        onReady=on_ready,
        connectionRetryTime=1.0,
        maxBindRetries=3,
        bindRetryTime=0.5,
        **compaction,
    )


def new_member(
    me: str,
    others: list[str],
    *,
    secret: str,
    journal_path: str,
    deliver: Callable[[int, bytes], None],
) -> SyncObj:
    """A bare member on pysyncobj's thread, no event loop (benchmarks, tests)."""
    return _Member(me, others, safe_conf(secret=secret, journal_path=journal_path), deliver)


@final
class Raft:
    """One node's Raft member. Start it inside `trio.run`; `close` it before the run ends.

    Args:
        me: this node's Raft address, host:port (it listens there).
        others: the other members' Raft addresses.
        deliver: `deliver(raft_index, entry)`, on the event loop, for every
            committed entry in log order (again from the start after a restart).
        on_caught_up: on the event loop, once: this node has applied everything
            the leader had committed when it first heard from one.
    """

    def __init__(
        self,
        *,
        me: str,
        others: list[str],
        journal_path: str,
        secret: str,
        deliver: Callable[[int, bytes], None],
        on_caught_up: Callable[[], None],
        token: trio.lowlevel.TrioToken,
        snapshots: RaftSnapshots | None = None,
        snapshot_entries: int = 100_000,
    ) -> None:
        """Blocks (reads the journal, binds the port): call it off the event loop,
        as `start_raft` does."""
        self.me = me
        self._token = token
        self._deliver = deliver
        if snapshots is not None:
            snapshots.token = token
        conf = safe_conf(
            secret=secret,
            journal_path=journal_path,
            on_ready=lambda: self._soon(on_caught_up),
            snapshots=snapshots,
            snapshot_entries=snapshot_entries,
        )
        self._member = _Member(me, others, conf, lambda i, e: self._soon(deliver, i, e), snapshots)

    def _soon(self, function: Callable[..., None], *args: Any) -> None:
        """From the Raft thread: run `function(*args)` on the event loop, in order."""
        try:
            self._token.run_sync_soon(function, *args)
        except trio.RunFinishedError:
            pass  # the node is gone; the journal has the entry for the next start

    def propose(self, entry: bytes, failed: Callable[[str, str], None]) -> None:
        """Append `entry` through the leader. Success shows as its delivery;
        `failed(kind, reason)` (on the event loop) when it was refused or its fate
        is unknown, `kind` being NOT_APPENDED or MAYBE_APPENDED."""

        def done(_result: Any, error: int) -> None:
            if error != FAIL_REASON.SUCCESS:
                kind, reason = _REASONS.get(error, (MAYBE_APPENDED, f"pysyncobj error {error}"))
                self._soon(failed, kind, reason)

        self._member.apply_v1(entry, callback=done)

    def add_member(self, address: str, done: Callable[[str | None], None]) -> None:
        """Make `address` a voting member; `done(None)` once committed, else
        `done(reason)` (on the event loop)."""

        def finished(_result: Any, error: int) -> None:
            reason = (
                None if error == FAIL_REASON.SUCCESS else _REASONS.get(error, ("", str(error)))[1]
            )
            self._soon(done, reason)

        self._member.addNodeToCluster(address, callback=finished)

    def remove_member(self, address: str, done: Callable[[str | None], None]) -> None:
        def finished(_result: Any, error: int) -> None:
            reason = (
                None if error == FAIL_REASON.SUCCESS else _REASONS.get(error, ("", str(error)))[1]
            )
            self._soon(done, reason)

        self._member.removeNodeFromCluster(address, callback=finished)

    def status(self) -> dict[str, Any]:
        """Leader, members and progress, read from the Raft thread's fields
        (a snapshot that may be a tick old)."""
        for _ in range(3):
            try:
                raw = self._member.getStatus()
                break
            except RuntimeError:  # a set changed size while being read: read again
                continue
        else:
            return {}
        leader = raw.get("leader")
        members = {
            key.removeprefix("partner_node_status_server_"): value == 2
            for key, value in raw.items()
            if key.startswith("partner_node_status_server_")
        }
        match = {
            key.removeprefix("match_idx_server_"): value
            for key, value in raw.items()
            if key.startswith("match_idx_server_")
        }
        return {
            "self": self.me,
            "state": {0: "follower", 1: "candidate", 2: "leader"}.get(raw.get("state"), "?"),
            "leader": None if leader is None else str(leader),
            "has_quorum": bool(raw.get("has_quorum")),
            "term": raw.get("raft_term"),
            "commit_index": raw.get("commit_idx"),
            "last_applied": raw.get("last_applied"),
            "log_entries": raw.get("log_len"),
            "peers_connected": members,
            "peers_match_index": match,
        }

    def members(self) -> set[str]:
        """Every Raft member's address, as this node knows them: a membership change
        counts from when its entry reaches this node's log, before it commits
        (empty if they could not be read)."""
        status = self.status()
        return {self.me, *status["peers_connected"]} if status else set()

    def bound(self) -> bool:
        """Whether the Raft port is listening (blocks up to a second or so)."""
        try:
            self._member.waitBinded()
        except Exception:  # pysyncobj's SyncObjException, or a socket error
            return False
        return True

    def close(self) -> None:
        """Stop the Raft thread and close the journal (blocks until it has)."""
        self._member.destroy_synchronous()


async def start_raft(
    *,
    me: str,
    others: list[str],
    journal_path: str,
    secret: str,
    deliver: Callable[[int, bytes], None],
    on_caught_up: Callable[[], None],
    snapshots: RaftSnapshots | None = None,
    snapshot_entries: int = 100_000,
) -> Raft:
    """Build the member off the event loop (the journal is read whole).

    Raises:
        ConfigError: the Raft address cannot be listened on.
    """
    token = trio.lowlevel.current_trio_token()
    raft = await trio.to_thread.run_sync(
        lambda: Raft(
            me=me,
            others=others,
            journal_path=journal_path,
            secret=secret,
            deliver=deliver,
            on_caught_up=on_caught_up,
            token=token,
            snapshots=snapshots,
            snapshot_entries=snapshot_entries,
        )
    )
    if not await trio.to_thread.run_sync(raft.bound):
        await trio.to_thread.run_sync(raft.close)
        raise ConfigError(f"cluster raft_address: cannot listen on {me} (in use?)")
    return raft
