"""objfs.cluster.replication — the store's records and the catalog's changes through Raft.

`Replicator` stands where the WAL stands on a single node (the store's
`committer`): `append(record)` proposes the record as a Raft entry and returns
once this node has applied it, with what applying it returned (or the
ObjfsError it raised: every node raises the same one, since applying is
deterministic). Any other exception is a bug: this node stops applying
(`failure`), and the caller hears `OutcomeUnknown`, for the entry is committed
and other nodes have applied it. `deliver(index, entry)` is called by `objfs.cluster.raft` on
the event loop for every committed entry, in log order, on every node.

Retries (docs/cluster.md, "Errors"): a proposal refused for want of a leader
is proposed again, with backoff, for up to `RETRY_S`; then `Unavailable`. An
entry whose fate is unknown (the leader changed under it, or nothing answered
for `RESEND_S`) is proposed again with the same tag, and `deliver` applies a
tag only once, so a retry cannot apply a change twice. If time runs out with the fate still unknown,
`OutcomeUnknown`: the caller must not free what the entry would reference.

Applying happens inside `deliver`, synchronously: nothing else runs on the
event loop between two entries, as with the WAL's apply.

Snapshots (objfs.cluster.snapshot): `capture` gives the state at the entry
applied last; `install` replaces the state with a snapshot's. Reading and
decoding a snapshot takes a worker thread, so from the moment `install` is
called, entries delivered after it wait in a backlog, in order, and are applied
once the snapshot is in; "caught up" waits for them too.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, final

import trio

from objfs.cluster import entries, snapshot
from objfs.cluster.catalog import Catalog
from objfs.cluster.placement import Placement
from objfs.cluster.raft import MAYBE_APPENDED, Raft
from objfs.errors import Corrupted, ObjfsError, OutcomeUnknown, Unavailable
from objfs.store import Store
from objfs.store.device import remove_file
from objfs.store.index import ObjectIndex
from objfs.store.records import MoveSegment, Record, new_segments

log = logging.getLogger(__name__)

RETRY_S = 5.0  # how long a proposal is retried while there is no leader
COMMIT_WAIT_S = 15.0  # how long a proposal the leader took may wait to commit
RESEND_S = 2.0  # a proposal nobody has answered for this long is sent again
RECENT_TAGS = (
    100_000  # entries remembered for "apply a tag once" (log order, so alike on every node)
)


@final
class _Waiter:
    def __init__(self) -> None:
        self.done = False
        self.result: Any = None
        self.error: ObjfsError | None = None
        self.failure: tuple[str, str] | None = None
        self.wake = trio.Event()

    def finish(self, result: Any, error: ObjfsError | None) -> None:
        self.done, self.result, self.error = True, result, error
        self.wake.set()

    def failed(self, kind: str, reason: str) -> None:
        self.failure = (kind, reason)
        self.wake.set()


@final
class _Round:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: str | None = None


@final
class Replicator:
    """Args:
    store: applies records (its index, its space, its watchers).
    catalog: applies catalog changes.
    node_number: this node's, written into every entry it proposes.
    """

    def __init__(self, store: Store, catalog: Catalog, node_number: int) -> None:
        self.store = store
        self.catalog = catalog
        self.node_number = node_number
        self.raft: Raft | None = None
        self.applied_index = 0
        self.caught_up = trio.Event()
        self.failure: str | None = None
        self.on_catalog_change: Callable[[], None] = lambda: None
        self.placement: Placement | None = None  # checks fragment ages before a commit
        self._waiting: dict[int, _Waiter] = {}
        self._next_round: _Round | None = None  # barrier callers not yet proposed for
        self._barrier_wanted = trio.Event()
        self._recent: OrderedDict[tuple[int, int], None] = OrderedDict()
        # While a snapshot installs: what was delivered after it, in order
        # ("entry", index, raw) or ("install", path, index); None otherwise.
        self._backlog: deque[tuple[str, Any, Any]] | None = None
        self._caught_up_waiting = False
        self.nursery: trio.Nursery | None = None  # where snapshots are installed from
        self.snapshots_installed = 0
        self.installed_index = 0  # the Raft index of the last snapshot installed

    # -- the event loop side of the Raft thread ---------------------------------------

    def deliver(self, index: int, raw: bytes) -> None:
        """Apply one committed entry (event loop, log order, every node)."""
        if self._backlog is not None:
            self._backlog.append(("entry", index, raw))
            return
        self._apply(index, raw)

    def _apply(self, index: int, raw: bytes) -> None:
        self.applied_index = index
        if self.failure is not None:
            return
        try:
            entry = entries.decode(raw)
        except Corrupted as exc:  # every node skips it alike
            log.error("Raft entry %d skipped: %s", index, exc)
            return
        key = (entry.origin, entry.tag)
        if key in self._recent:
            return  # proposed twice (a retry after a leader change): applied once
        self._recent[key] = None
        if len(self._recent) > RECENT_TAGS:
            self._recent.popitem(last=False)
        result: Any = None
        error: ObjfsError | None = None
        try:
            if entry.kind == entries.Kind.RECORD:
                record = entry.record()
                self._refuse_retired(record)
                self.store.apply_replicated(record)
            elif entry.kind == entries.Kind.BARRIER:
                pass
            else:
                change = entry.change()
                result = self.catalog.apply(change)
                if change.get("op") == "remove_node_v1" and result == self.node_number:
                    self.failure = (
                        "this node was removed from the cluster (objfs cluster remove); it "
                        "serves nothing now: give it an empty data directory to use it again"
                    )
                    log.warning("%s", self.failure)
                self.on_catalog_change()
        except ObjfsError as exc:
            error = exc
        except Exception as exc:  # a broken invariant: the index may be half changed
            self.failure = f"applying Raft entry {index} failed: {exc!r}"
            log.critical(
                "%s; this node stops applying (restart it to rebuild from the log)", self.failure
            )
            # The entry is committed, and applied on the other nodes: its writer
            # must keep what it names (its fresh fragments here), not free them.
            error = OutcomeUnknown(f"{self.failure}; the change is committed, on other nodes")
        if entry.origin == self.node_number:
            waiter = self._waiting.pop(entry.tag, None)
            if waiter is not None:
                waiter.finish(result, error)

    def _refuse_retired(self, record: Record) -> None:
        """A record may not put a new segment on a device of a node that is leaving
        or gone: its coordinator placed it before it knew (every node refuses it
        alike, at the same point of the log), and it is written again."""
        retired = self.catalog.retired_devices()
        if not retired:
            return
        index = self.store.index
        for segment in new_segments(record):
            if not isinstance(record, MoveSegment) and index.references(segment.segment_id):
                continue  # already stored (a copy by reference): it is moved with the rest
            on = sorted({f.extent.device_index for f in segment.fragments} & retired)
            if on:
                raise Unavailable(
                    f"a new stripe was placed on devices {on} of a node leaving the "
                    "cluster; write it again"
                )

    def mark_caught_up(self) -> None:
        if self._backlog is not None:
            self._caught_up_waiting = True  # once the backlog is applied
            return
        if not self.caught_up.is_set():
            log.info("caught up with the cluster at Raft index %d", self.applied_index)
            self.caught_up.set()

    # -- snapshots ----------------------------------------------------------------------

    def capture(self, index: int) -> snapshot.State | None:
        """The state now, as the state at Raft index `index` (None if it cannot be).

        Every entry up to `index` that reaches `deliver` has been delivered when
        this runs; pysyncobj's own entries (a new leader's no-op, membership
        changes) never do, so the last one applied may be later than ours."""
        if self._backlog is not None or self.failure is not None:
            return None  # installing one, or stopped: pysyncobj asks again later
        if index < self.applied_index:
            log.error("no Raft snapshot at index %d: applied %d", index, self.applied_index)
            return None
        self.applied_index = index
        return snapshot.State(
            self.store.index.snapshot(), list(self.catalog.history), list(self._recent)
        )

    def install(self, path: str, index: int) -> None:
        """Replace the state with the snapshot in `path` (a link of the dump file,
        removed when done) whose last entry is `index`, after what was delivered
        before this call; "" if the node's snapshot cannot be read."""
        if not path:
            self.failure = (
                "the Raft snapshot in the data directory cannot be read: this node "
                "cannot rebuild its state (see the log); remove it from the cluster "
                "and join it again with an empty data directory"
            )
            return
        if self._backlog is None:
            self._backlog = deque()
            if self.nursery is None:
                self.failure = "a Raft snapshot arrived before the member could install it"
                return
            self.nursery.start_soon(self._drain)
        self._backlog.append(("install", path, index))

    async def _drain(self) -> None:
        """Install snapshots and apply entries in the order they came, until none wait."""
        backlog = self._backlog
        assert backlog is not None
        while backlog:
            kind, first, second = backlog.popleft()
            if kind == "entry":
                self._apply(first, second)
            else:
                await self._install(first, second)
        self._backlog = None
        if self._caught_up_waiting:
            self._caught_up_waiting = False
            self.mark_caught_up()

    async def _install(self, path: str, index: int) -> None:
        def load() -> tuple[int, snapshot.State, ObjectIndex]:
            last, state = snapshot.read(path)
            return last, state, ObjectIndex.from_snapshot(state.index)

        try:
            last, state, new_index = await trio.to_thread.run_sync(load)
        except Corrupted as exc:
            self.failure = f"the Raft snapshot at index {index} cannot be installed: {exc}"
            log.critical("%s; this node stops applying", self.failure)
            return
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(remove_file, path)
        self.store.install_index(new_index)
        self.catalog.restore(state.catalog)
        self._recent = OrderedDict.fromkeys(state.recent)
        self.applied_index = self.installed_index = last
        self.snapshots_installed += 1
        log.info(
            "Raft snapshot at index %d installed: %d objects, %d catalog changes",
            last,
            new_index.object_count(),
            len(state.catalog),
        )
        self.on_catalog_change()

    # -- proposing ----------------------------------------------------------------------

    async def append(self, record: Record) -> Any:
        """The store's committer: the record through Raft, applied here, its result."""
        if self.placement is not None:
            self.placement.check_age(new_segments(record))
        # Fragments on disk before any record names them (the WAL's before_write).
        await self.store.datapath.flush_dirty()
        tag = entries.new_tag()
        return await self._propose(tag, entries.record_entry(self.node_number, tag, record))

    async def barrier(self) -> None:
        """Return once this node has applied every entry committed before the call:
        a read after it sees every write acknowledged (by any node) before it.

        One barrier entry goes through the log per round; every caller that arrived
        while a round was in flight waits for the next one, so a burst of reads
        costs two commits, not one each.

        Raises:
            Unavailable: the cluster could not commit the barrier.
        """
        if self._next_round is None:
            self._next_round = _Round()
        joined = self._next_round
        self._barrier_wanted.set()
        await joined.done.wait()
        if joined.error is not None:
            raise Unavailable(joined.error)

    async def settle(self) -> None:
        """Return once a barrier proposed now is applied here, retrying for as long
        as the cluster cannot commit. pysyncobj says "caught up" once this node
        has applied the commit index it knows, which at a start may be older
        than what the cluster had committed: entries from before the start can
        still arrive. After `settle` none can, so the space map rebuilt then
        knows every extent a record from before the start names.

        Raises:
            Unavailable: this node stopped applying (`failure`).
        """
        while True:
            tag = entries.new_tag()
            try:
                await self._propose(tag, entries.barrier_entry(self.node_number, tag))
                return
            except Unavailable as exc:
                if self.failure is not None:
                    raise
                log.info("waiting for the cluster to commit a barrier: %s", exc)
                await trio.sleep(1.0)

    async def run_barriers(self) -> None:
        """The barrier rounds, for as long as the member runs."""
        while True:
            await self._barrier_wanted.wait()
            self._barrier_wanted = trio.Event()
            current, self._next_round = self._next_round, None
            if current is None:
                continue
            tag = entries.new_tag()
            try:
                await self._propose(tag, entries.barrier_entry(self.node_number, tag))
            except ObjfsError as exc:
                current.error = str(exc)
            current.done.set()

    async def change_catalog(self, change: dict[str, Any]) -> Any:
        tag = entries.new_tag()
        return await self._propose(tag, entries.catalog_entry(self.node_number, tag, change))

    async def _propose(self, tag: int, raw: bytes) -> Any:
        if self.failure is not None:
            raise Unavailable(self.failure)
        raft = self.raft
        if raft is None:
            raise Unavailable("the cluster member is not running")
        waiter = _Waiter()
        self._waiting[tag] = waiter
        started = trio.current_time()
        delay = 0.05
        maybe_appended = False
        reason = "no answer from the leader"
        try:
            with trio.CancelScope(shield=True):  # once proposed, learn the outcome
                with trio.move_on_at(started + COMMIT_WAIT_S):
                    while True:
                        waiter.failure = None
                        waiter.wake = trio.Event()
                        raft.propose(raw, waiter.failed)
                        with trio.move_on_after(RESEND_S):
                            await waiter.wake.wait()
                        if waiter.done:
                            break
                        if waiter.failure is None:
                            # No word at all: the forward to the leader may be lost
                            # on a dead connection. Again (applied once, by tag).
                            maybe_appended = True
                            continue
                        kind, reason = waiter.failure
                        maybe_appended |= kind == MAYBE_APPENDED
                        if trio.current_time() + delay > started + RETRY_S:
                            break
                        with trio.move_on_after(delay):
                            waiter.wake = trio.Event()
                            await waiter.wake.wait()  # it may yet be applied meanwhile
                        if waiter.done:
                            break
                        delay = min(delay * 2, 0.5)
                if not waiter.done and waiter.failure is None:
                    maybe_appended = True  # the leader took it and never committed it
        finally:
            self._waiting.pop(tag, None)
        if waiter.done:
            if waiter.error is not None:
                raise waiter.error
            return waiter.result
        if maybe_appended:
            raise OutcomeUnknown(f"the cluster did not confirm the change in time ({reason})")
        raise Unavailable(f"the cluster cannot commit now: {reason}")
