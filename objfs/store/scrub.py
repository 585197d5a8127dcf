"""objfs.store.scrub — reading every fragment back, and healing what is damaged or owed.

`Scrubber` owns three jobs, all on the data path's `check_segment`:

- a **scrub pass** reads every fragment of every referenced segment, verifies
  its checksum and rewrites damaged ones in place from the intact ones
  (`objfs scrub`, and the background pass every `store.scrub_interval_ms`);
- a **heal pass** over owed devices (down at some point, or replaced) checks only
  the fragments stored on them, and clears their owed bit when it finishes clean;
- the **heal queue**: segments a normal read found damaged, repaired soon after.

Segments are pinned while checked, so a delete cannot free and reuse an extent
under a heal write. A pass walks the segment ids referenced when it starts;
segments written after that are new, so whole. Passes are rate-limited in bytes
read per second. Nothing here is persisted but the owed mask: a crash during a
heal leaves the device owed, and the next open starts the heal pass again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import final

import trio

from objfs.errors import ObjfsError
from objfs.store.datapath import DataPath, SegmentCheck
from objfs.store.index import ObjectIndex
from objfs.store.space import Space
from objfs.store.types import Segment, SegmentId, device_mask

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (segments done, segments in the pass)
_FIRST_BACKGROUND_PASS_S = 3600.0  # after open, or the interval if that is shorter
_HEAL_QUEUE_POLL_S = 1.0
_SEGMENTS_IN_FLIGHT = 4  # segments checked at once: keeps every device busy


@dataclass(slots=True)
class ScrubReport:
    """What one pass found and did."""

    objects: int = 0  # keys in the index when the pass began
    segments: int = 0  # segments checked
    fragments_checked: int = 0
    bytes_read: int = 0
    fragments_damaged: int = 0  # failed their checksum or their read
    fragments_repaired: int = 0
    fragments_skipped: int = 0  # on devices that are down: not checked
    unrecoverable: list[str] = field(default_factory=list)  # "bucket/key version"
    healed_devices: list[int] = field(default_factory=list)  # owed bits cleared
    elapsed_s: float = 0.0

    @property
    def clean(self) -> bool:
        """Full redundancy now: nothing damaged left, nothing lost, nothing skipped."""
        return (
            self.fragments_damaged == self.fragments_repaired
            and not self.unrecoverable
            and not self.fragments_skipped
        )

    def render(self) -> str:
        rate = self.bytes_read / self.elapsed_s / 1e6 if self.elapsed_s > 0 else 0.0
        lines = [
            f"scrub: {self.objects} objects, {self.segments} segments, "
            f"{self.fragments_checked} fragments ({self.bytes_read} bytes) checked "
            f"in {self.elapsed_s:.1f} s ({rate:.0f} MB/s)",
            f"  damaged {self.fragments_damaged}, repaired {self.fragments_repaired}, "
            f"skipped on down devices {self.fragments_skipped}, "
            f"unrecoverable objects {len(self.unrecoverable)}",
        ]
        if self.healed_devices:
            lines.append(f"  devices healed: {self.healed_devices}")
        lines.extend(f"  LOST {name}" for name in self.unrecoverable[:100])
        if len(self.unrecoverable) > 100:
            lines.append(f"  ... and {len(self.unrecoverable) - 100} more")
        lines.append("  clean: full redundancy" if self.clean else "  NOT clean")
        return "\n".join(lines)


@final
class Scrubber:
    def __init__(
        self,
        index: ObjectIndex,
        datapath: DataPath,
        space: Space,
        *,
        persist_owed: Callable[[int], Awaitable[None]],
        rate_bytes_per_s: int = 0,
    ) -> None:
        self._index = index
        self._datapath = datapath
        self._space = space
        self._persist_owed = persist_owed
        self.rate_bytes_per_s = rate_bytes_per_s  # 0: as fast as the devices go
        self._lock = trio.Lock()  # one pass at a time
        self.passes = 0
        self.last_report: ScrubReport | None = None
        # The pass under way (0 of 0 between passes): segments looked at, of how many.
        self.pass_done = self.pass_total = 0
        self.fragments_repaired = 0  # over every pass since open

    async def scrub(
        self,
        *,
        devices: set[int] | None = None,
        repair: bool = True,
        progress: Progress | None = None,
    ) -> ScrubReport:
        """One pass over every referenced segment (with a fragment on `devices`, if
        given). Owed devices that were up for the whole pass and had nothing left
        damaged are healed: their owed bit is cleared and persisted."""
        async with self._lock:
            return await self._scrub(devices, repair, progress)

    async def _scrub(
        self, devices: set[int] | None, repair: bool, progress: Progress | None
    ) -> ScrubReport:
        health = self._datapath.health
        report = ScrubReport(objects=self._index.object_count())
        started = time.monotonic()
        down_at_start = set(health.down)
        owed_at_start = set(health.owed)
        ids = self._index.segment_ids()
        lost: set[SegmentId] = set()
        unhealed_devices: set[int] = set()
        slots = trio.Semaphore(_SEGMENTS_IN_FLIGHT)

        async def check_one(segment: Segment) -> None:
            try:
                check = await self._check(segment, repair=repair, devices=devices)
            finally:
                slots.release()
            if check is None:
                return
            report.segments += 1
            report.fragments_checked += check.fragments_checked
            report.bytes_read += check.bytes_read
            report.fragments_damaged += len(check.bad)
            report.fragments_repaired += len(check.repaired)
            report.fragments_skipped += len(check.skipped)
            for number in set(check.bad) - set(check.repaired):
                unhealed_devices.add(segment.fragments[number].extent.device_index)
            if check.unrecoverable:
                lost.add(segment.segment_id)

        self.pass_done, self.pass_total = 0, len(ids)
        async with trio.open_nursery() as nursery:
            for done, segment_id in enumerate(ids):
                self.pass_done = done
                if progress is not None and done % 64 == 0:
                    progress(done, len(ids))
                segment = self._index.segment(segment_id)
                if segment is None:
                    continue  # deleted since the pass began
                if not any(
                    self._datapath.own(f.extent.device_index)
                    and (devices is None or f.extent.device_index in devices)
                    for f in segment.fragments
                ):
                    continue  # none of its fragments is this node's to check
                await self._throttle(report.bytes_read, started)
                await slots.acquire()
                nursery.start_soon(check_one, segment)  # it checks the segment is still there
        if progress is not None:
            progress(len(ids), len(ids))
        if not await self._datapath.flush_healed():
            unhealed_devices.update(health.down)
        if lost:
            report.unrecoverable = [
                f"{bucket}/{key} {version_id}"
                for (bucket, key), version_id in self._index.versions_using(lost)
            ]
            for segment_id in lost:
                log.error("segment %d has fewer than k intact fragments: data lost", segment_id)
        if repair:
            report.healed_devices = await self._clear_owed(
                owed_at_start, down_at_start, unhealed_devices, devices, bool(lost)
            )
        report.elapsed_s = time.monotonic() - started
        self.passes += 1
        self.pass_done = self.pass_total = 0
        self.fragments_repaired += report.fragments_repaired
        self.last_report = report
        log.info("%s", report.render().replace("\n", ";"))
        return report

    async def _check(
        self, segment: Segment, *, repair: bool, devices: set[int] | None
    ) -> SegmentCheck | None:
        """Check one segment pinned; None if it was freed meanwhile (or freed and
        its id taken by a new segment: then healing the old fragments would write
        over the new one's bytes)."""
        segment_id = segment.segment_id
        if self._index.segment(segment_id) != segment:
            return None
        self._space.pin([segment])  # no await since the lookup: it is referenced now
        try:
            check = await self._datapath.check_segment(segment, repair=repair, devices=devices)
        except ObjfsError as exc:
            log.error("scrub of segment %d failed: %s", segment_id, exc)
            return None
        finally:
            self._space.unpin([segment])
        if not check.bad or len(check.repaired) == len(check.bad):
            self._datapath.health.heal_queue.pop(segment_id, None)
        return check

    async def _clear_owed(
        self,
        owed_at_start: set[int],
        down_at_start: set[int],
        unhealed: set[int],
        devices: set[int] | None,
        lost: bool,
    ) -> list[int]:
        health = self._datapath.health
        healed = []
        for device_index in sorted(owed_at_start):
            if devices is not None and device_index not in devices:
                continue
            if device_index in down_at_start or device_index in health.down:
                continue  # it was not there to be healed
            if device_index in unhealed or lost:
                continue
            healed.append(device_index)
        if healed:
            # Durable first, then in memory: nobody sees "healed" before it is.
            await self._persist_owed(health.owed_mask & ~device_mask(healed))
            for device_index in healed:
                if device_index not in health.down:  # it may have failed meanwhile
                    health.healed(device_index)
            log.info("devices %s healed: full redundancy on them again", healed)
        return healed

    async def _throttle(self, bytes_read: int, started: float) -> None:
        if self.rate_bytes_per_s <= 0:
            await trio.lowlevel.checkpoint()
            return
        ahead = bytes_read / self.rate_bytes_per_s - (time.monotonic() - started)
        await trio.sleep(max(ahead, 0.0))

    async def heal_queued(self) -> int:
        """Repair every segment a read queued; returns how many fragments were rebuilt."""
        queue = self._datapath.health.heal_queue
        repaired = 0
        async with self._lock:
            while queue:
                segment_id, _ = next(iter(queue.items()))
                queue.pop(segment_id)
                segment = self._index.segment(segment_id)
                if segment is None:
                    continue
                check = await self._check(segment, repair=True, devices=None)
                if check is not None:
                    repaired += len(check.repaired)
            await self._datapath.flush_healed()
        return repaired

    async def run(
        self,
        interval_ms: int,
        *,
        background_scrub: bool,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The background job: heal owed devices that are up now, then repair queued
        segments as reads find them, and (if `background_scrub`) scrub everything
        once per interval, the first pass an hour after open at the latest."""
        task_status.started()
        health = self._datapath.health
        owed_up = {i for i in health.owed if i not in health.down}
        if owed_up:
            log.info("healing devices %s (owed fragments)", sorted(owed_up))
            await self._guarded(self.scrub(devices=owed_up))
        next_pass = time.monotonic() + min(interval_ms / 1000, _FIRST_BACKGROUND_PASS_S)
        while True:
            await trio.sleep(_HEAL_QUEUE_POLL_S)
            if health.heal_queue:
                await self._guarded(self.heal_queued())
            if background_scrub and time.monotonic() >= next_pass:
                await self._guarded(self.scrub())
                next_pass = time.monotonic() + interval_ms / 1000

    async def _guarded(self, job: Awaitable[object]) -> None:
        """A background pass that fails (a device error writing the owed mask, say)
        is logged and tried again later; it must never take the store down."""
        try:
            await job
        except ObjfsError as exc:
            log.error("background scrub or heal failed: %s; trying again later", exc)
