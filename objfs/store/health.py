"""objfs.store.health — which devices are usable, which owe fragments, and what went wrong.

Owns, in memory, a node's view of its devices while the store is open:

- **down**: devices neither read nor written — missing at open, or failed a write
  or a flush since. A down device stays down until the store is opened again.
- **owed**: devices that may lack fragments written while they were down (or
  that were replaced), persisted as a mask in every superblock so that a heal
  pass over them resumes after a crash. A device leaves the set only when a heal
  pass over everything stored on it has finished clean.
- the heal queue: segments a read found damaged, waiting to be repaired;
- counters for `status` and the metrics.

No I/O: the data path persists the owed mask (through the callback it is given)
before the next WAL batch, so no record can point at a fragment that was never
written unless the owed mask that says so is durable first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import final

from objfs.store.types import Segment, SegmentId, device_mask, devices_in_mask

log = logging.getLogger(__name__)

MAX_QUEUED_HEALS = 100_000  # beyond this the scrubber finds them instead


@dataclass(frozen=True, slots=True)
class HealthStatistics:
    device_count: int
    device_indexes: tuple[int, ...]  # cluster-wide, of every device of the node
    down_devices: tuple[int, ...]
    owed_devices: tuple[int, ...]
    bad_fragments: int  # failed a checksum or a read, counted once per read that met it
    degraded_reads: int  # segments read with fewer than their data fragments intact
    unreadable_segments: int  # reads that met fewer than k intact fragments
    healed_fragments: int  # rebuilt and written back
    queued_heals: int

    @property
    def degraded(self) -> bool:
        return bool(self.down_devices or self.owed_devices)


@final
class Health:
    """`device_indexes`: every device of the node, missing ones included, by their
    cluster-wide indexes (objfs/store/types.py); down and owed name devices the
    same way. Only the owed mask, as superblocks store it, is by local index."""

    def __init__(self, device_indexes: Iterable[int], *, down: set[int], owed: set[int]) -> None:
        self.device_indexes = tuple(sorted(device_indexes))
        self.device_count = len(self.device_indexes)
        self.down = set(down)
        self.owed = set(owed) | set(down)
        self._persisted_owed = set(owed)
        self.heal_queue: dict[SegmentId, Segment] = {}
        self.bad_fragments = 0
        self.degraded_reads = 0
        self.unreadable_segments = 0
        self.healed_fragments = 0

    @property
    def up(self) -> list[int]:
        return [i for i in self.device_indexes if i not in self.down]

    @property
    def owed_mask(self) -> int:
        return device_mask(self.owed)

    def owed_unpersisted(self) -> bool:
        return not self.owed <= self._persisted_owed

    def persisted(self, mask: int) -> None:
        """The superblocks of the up devices now hold `mask`."""
        self._persisted_owed = devices_in_mask(mask, self.device_indexes)

    def mark_down(self, device_index: int, reason: str) -> None:
        if device_index in self.down:
            return
        log.error(
            "device %d is down (%s): reads and writes go around it; what is written "
            "meanwhile is owed to it and healed when it is back or replaced",
            device_index,
            reason,
        )
        self.down.add(device_index)
        self.owed.add(device_index)

    def healed(self, device_index: int) -> None:
        """A heal pass over the device finished clean: it owes nothing now."""
        self.owed.discard(device_index)

    def queue_heal(self, segment: Segment) -> None:
        if len(self.heal_queue) < MAX_QUEUED_HEALS:
            self.heal_queue[segment.segment_id] = segment

    def statistics(self) -> HealthStatistics:
        return HealthStatistics(
            device_count=self.device_count,
            device_indexes=self.device_indexes,
            down_devices=tuple(sorted(self.down)),
            owed_devices=tuple(sorted(self.owed)),
            bad_fragments=self.bad_fragments,
            degraded_reads=self.degraded_reads,
            unreadable_segments=self.unreadable_segments,
            healed_fragments=self.healed_fragments,
            queued_heals=len(self.heal_queue),
        )
