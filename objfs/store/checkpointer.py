"""objfs.store.checkpointer — writing checkpoints: the A/B slots, generations, the WAL head.

Owns which slot holds which checkpoint, the generation counter, and the order of
a checkpoint's writes: body copies (flushed), then the pointer into the slot that
does not hold the checkpoint the index came from (flushed), then freeing the body
that pointer replaced and moving the WAL head to the fallback's start. Runs as a
background task on request (WAL filling) or on an interval (docs/concurrency.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import final

import crc32c
import trio

from objfs.errors import DeviceError, NoSpace, ObjfsError, ReadOnly
from objfs.store.checkpoint import CheckpointPointer, encode_body, max_extents_per_pointer
from objfs.store.device import BlockDevice, WriteData, round_up
from objfs.store.index import Snapshot
from objfs.store.space import Space
from objfs.store.superblock import CHECKPOINT_SLOT_OFFSETS_BYTES
from objfs.store.types import Extent
from objfs.store.wal import Wal

log = logging.getLogger(__name__)


@final
class Checkpointer:
    """Args:
    pointers: slot -> the pointer it holds on every metadata mirror.
    current: the checkpoint the index was loaded from (the newest good one).
    stale_extents: extents named by pointers no slot holds any more, still
        reserved (read-only opens do not rewrite slots); freed by the next checkpoint.
    """

    def __init__(
        self,
        *,
        devices: dict[int, BlockDevice],
        space: Space,
        wal: Wal,
        snapshot: Callable[[], Snapshot],
        pointers: dict[int, CheckpointPointer],
        current: CheckpointPointer,
        max_generation: int,
        stale_extents: list[Extent],
        base_reserve_bytes: int,
    ) -> None:
        self._devices = devices
        self._space = space
        self._wal = wal
        self._snapshot = snapshot
        self.pointers = pointers
        self.current = current
        self._max_generation = max_generation
        self.stale_extents = stale_extents
        self._base_reserve_bytes = base_reserve_bytes
        self._lock = trio.Lock()
        self.writing: list[Extent] = []  # a body's extents until its pointer is written
        self._wanted = trio.Event()
        self.checkpoints = 0
        self._suspended = False

    def reserve_bytes(self) -> int:
        """Space each metadata device keeps from data writes for the next body.

        The next body is at most the current one plus what was logged since: a
        record adds no more to the index than its own size. Twice that bound,
        so fragmentation cannot make it miss.
        """
        growth = max(self._wal.applied_position - self.current.wal_start, 0)
        return max(self._base_reserve_bytes, 2 * round_up(self.current.body_bytes + growth))

    def suspend(self) -> None:
        """Write no checkpoint from now on (a cluster node: its index comes from the
        cluster's log at each start, and a local checkpoint of it would be applied
        twice)."""
        self._suspended = True

    def request(self) -> None:
        """Ask the background task for a checkpoint soon (never blocks)."""
        self._wanted.set()

    async def run(self, interval_ms: int) -> None:
        """The background task: a checkpoint on request, or every `interval_ms`."""
        while True:
            with trio.move_on_after(interval_ms / 1000):
                await self._wanted.wait()
            self._wanted = trio.Event()
            if self._wal.failure is not None:
                continue  # read-only until a restart: checkpoints would not be safe
            try:
                await self.checkpoint()
            except ObjfsError as exc:
                log.error("checkpoint failed: %s; retrying in 1 s", exc)
                self._wal.no_room(exc)
                await trio.sleep(1)

    async def checkpoint(self, *, force: bool = False) -> bool:
        """Write a checkpoint of the index if it would cover anything new (or if
        `force`: a replaced metadata device needs a body of its own).

        Returns whether one was written. Checkpoints are serialised by a lock.

        Raises:
            NoSpace: no room for the body.
            ReadOnly: the WAL has failed, or the pointer write failed (which also
                fails the WAL: the slots may now disagree until a restart).
        """
        async with self._lock:
            if self._suspended:
                return False
            if self._wal.failure is not None:
                # The index may lack records that some mirror holds, and their
                # extents may have been freed: a checkpoint now could be wrong.
                raise ReadOnly(f"no checkpoint: the store is read-only: {self._wal.failure}")
            current = self.current
            other = self.pointers.get(1 - current.slot)
            lsn, position = self._wal.applied_lsn, self._wal.applied_position
            if lsn == current.lsn and other is not None and other.lsn == lsn and not force:
                return False  # both slots cover everything: nothing to gain
            # At an unchanged LSN a second checkpoint still moves the WAL head up to
            # the newest one: that is how a full WAL gets room again.
            snapshot = self._snapshot()
            body = await trio.to_thread.run_sync(encode_body, snapshot, lsn)
            # The slot NOT holding the checkpoint the index came from: after a
            # fallback that is the damaged newer one, never the only good checkpoint.
            slot = 1 - current.slot
            pointer = CheckpointPointer(
                slot=slot,
                generation=self._max_generation + 1,
                lsn=lsn,
                wal_start=position,
                body_bytes=len(body),
                body_crc32c=crc32c.crc32c(body),
                copies=await self._write_body(body),
            )
            try:
                writes: list[tuple[int, WriteData]] = [
                    (CHECKPOINT_SLOT_OFFSETS_BYTES[slot], pointer.encode())
                ]
                await self._write_each(
                    {i: writes for i in self._wal.mirrors}, "checkpoint pointer write failed"
                )
            except ObjfsError as exc:
                # Some mirrors may hold the new pointer, some the old: keep every
                # extent both name, and stop writing until a restart sorts it out.
                self._wal.fail(f"checkpoint pointer write failed: {exc}")
                raise ReadOnly(f"the store is read-only: {self._wal.failure}") from exc
            replaced = self.pointers.get(slot)
            self.pointers[slot] = pointer
            self.writing = []
            for extent in [*(replaced.extents() if replaced else ()), *self.stale_extents]:
                self._space.free_extent(extent)
            self.stale_extents = []
            self._wal.set_head(current.wal_start)  # the fallback now: keep what it replays
            self.current = pointer
            self._max_generation = pointer.generation
            self.checkpoints += 1
            return True

    async def _write_body(self, body: bytes) -> tuple[tuple[Extent, ...], ...]:
        """One copy of the body on each metadata mirror, written and flushed. A
        mirror that fails is dropped (and its copy freed) while another succeeds."""
        mirrors = self._wal.mirrors
        limit = max_extents_per_pointer(len(mirrors)) // len(mirrors)
        copies: list[tuple[Extent, ...]] = []
        try:
            for i in mirrors:
                copies.append(tuple(self._space.allocate_run(i, round_up(len(body)), limit)))
                self.writing.extend(copies[-1])
            jobs: dict[int, list[tuple[int, WriteData]]] = {}
            for copy in copies:
                writes: list[tuple[int, WriteData]] = []
                start = 0
                for extent in copy:
                    writes.append((extent.offset_bytes, body[start : start + extent.length_bytes]))
                    start += extent.length_bytes
                jobs[copy[0].device_index] = writes
            failed = await self._write_each(jobs, "checkpoint body write failed")
        except BaseException:
            self.writing = []
            for copy in copies:
                for extent in copy:
                    self._space.free_extent(extent)
            raise
        kept = []
        for copy in copies:
            if copy[0].device_index in failed:
                for extent in copy:
                    self._space.free_extent(extent)
            else:
                kept.append(copy)
        self.writing = [extent for copy in kept for extent in copy]
        return tuple(kept)

    async def _write_each(
        self, jobs: dict[int, list[tuple[int, WriteData]]], what: str
    ) -> set[int]:
        """Write and flush each device's writes at once. Devices that fail are
        dropped from the metadata mirrors; returns them. Raises if all fail.

        Raises:
            DeviceError: every device failed.
        """
        failures: dict[int, Exception] = {}

        async def one(index: int, writes: list[tuple[int, WriteData]]) -> None:
            try:
                await self._devices[index].write_many(writes, flush=True)
            except (OSError, ObjfsError) as exc:
                failures[index] = exc

        async with trio.open_nursery() as nursery:
            for index, writes in jobs.items():
                nursery.start_soon(one, index, writes)
        if failures and len(failures) == len(jobs):
            index, exc = next(iter(failures.items()))
            if isinstance(exc, NoSpace):
                raise exc
            raise DeviceError(f"{self._devices[index].path}: {what}: {exc}") from exc
        for index, exc in failures.items():
            self._wal.drop_mirror(index, f"{what}: {exc}")
        return set(failures)
