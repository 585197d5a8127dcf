"""objfs.store.space — free space across a node's devices, and who still holds freed segments.

Owns one `ExtentAllocator` per device, the choice of device for a new extent, the
pins open readers hold on segments, and the frees deferred until the last pin
goes. Nothing here is persisted: at open the store rebuilds it as "all space minus
every extent the index and the checkpoint pointers reference". No I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import final

from objfs.errors import NoSpace
from objfs.store.extents import ExtentAllocator, subtract_extents
from objfs.store.types import Extent, Segment, SegmentId


@dataclass(frozen=True, slots=True)
class SpaceStatistics:
    total_bytes: int
    free_bytes: int
    pinned_segments: int
    deferred_frees: int


@final
class Space:
    """Allocators for every device, pins, and deferred frees.

    Args:
        allocators: device index -> its allocator (already rebuilt).
        reserve_bytes: free space each metadata device keeps from data writes, so
            a checkpoint (which a full WAL needs to make room) can always be
            written: a number, or a function asked at every allocation.
        reserve_extents: how many extents a checkpoint body may take on one
            device (a pointer names only so many); None: any number. The reserve
            is then kept in the largest that many free extents, not in free
            bytes anywhere: holes too small to hold the body in that many
            extents would leave no checkpoint room, and a full WAL no way out.
    """

    def __init__(
        self,
        allocators: dict[int, ExtentAllocator],
        *,
        reserve_bytes: int | Callable[[], int],
        reserve_devices: set[int] | None = None,
        reserve_extents: int | None = None,
    ) -> None:
        self.allocators = allocators
        self._reserve_extents = reserve_extents
        # Only devices that hold checkpoint bodies need space kept back.
        self._reserve_devices = set(allocators) if reserve_devices is None else reserve_devices
        self._reserve = reserve_bytes
        self._pins: Counter[SegmentId] = Counter()
        # Extents freed under a pinned segment's id (it was dropped, or moved), disjoint.
        self._deferred: dict[SegmentId, list[Extent]] = {}
        self._next_device = 0
        # In a cluster, records name extents on other nodes' devices too: freeing
        # those is their node's business.
        self.foreign_devices = False

    @property
    def reserve_bytes(self) -> int:
        return self._reserve() if callable(self._reserve) else self._reserve

    @contextmanager
    def reserve_lifted(self) -> Iterator[None]:
        """Data writes may take the checkpoint reserve while inside: for tests that
        must fill every device to its last block (nothing in objfs uses it)."""
        reserve, self._reserve = self._reserve, 0
        try:
            yield
        finally:
            self._reserve = reserve

    def room_to_grow(self) -> bool:
        """Whether every metadata device has free space beyond its reserve: if not,
        changes that grow the index must wait until deletes make room, or the next
        checkpoint might not fit and a full WAL could take nothing more, deletes
        included."""
        reserve = self.reserve_bytes
        return all(self._room(i) > reserve for i in self._reserve_devices if i in self.allocators)

    def _room(self, device_index: int) -> int:
        """Free bytes of a device that count towards its reserve: on a metadata
        device, those a checkpoint body could take (the largest extents)."""
        allocator = self.allocators[device_index]
        if self._reserve_extents is None or device_index not in self._reserve_devices:
            return allocator.free_bytes
        return allocator.largest_free_total(self._reserve_extents)

    @property
    def free_bytes(self) -> int:
        return sum(allocator.free_bytes for allocator in self.allocators.values())

    def available_bytes(self, width: int) -> int:
        """Free bytes that data may still take in stripes `width` devices wide: on
        a metadata device only those beyond its reserve, and none at all once
        `room_to_grow` says no (no PUT is taken then). Each stripe takes as much
        on `width` different devices, so a device's space beyond what the others
        can match is no use and is not counted.

        With `spare` the devices' bytes beyond their reserve, largest first:
        whatever the stripes, the `j` largest devices hold one fragment of each
        at most, so the others hold `width - j` of each, and no device holds
        more than min over j of sum(spare[j:]) / (width - j). Worked example,
        width 3, spare [96, 32, 32] MiB: min(160 / 3, 64 / 2, 32 / 1) = 32 MiB
        per device, 96 MiB in all (not 160)."""
        if not self.room_to_grow() or width > len(self.allocators):
            return 0
        reserve = self.reserve_bytes
        spare = sorted(
            (
                max(allocator.free_bytes - (reserve if i in self._reserve_devices else 0), 0)
                for i, allocator in self.allocators.items()
            ),
            reverse=True,
        )
        per_device = min(sum(spare[j:]) // (width - j) for j in range(width))
        return per_device * width

    @property
    def total_bytes(self) -> int:
        return sum(allocator.total_bytes for allocator in self.allocators.values())

    def allocate_stripe(
        self, length_bytes: int, width: int, *, down: set[int]
    ) -> list[Extent] | None:
        """`width` extents of `length_bytes` each, on `width` different devices: the
        fragments of one stripe, in fragment order.

        The devices are taken in turn from a rotating start (so data and parity
        roles, and so read load, spread over all devices); devices in `down` only
        when too few others have room (their fragments are then owed). Keeps each
        metadata device's reserve. Returns None when fewer than `width` devices
        have `length_bytes` in one piece: the caller stores a smaller stripe.
        """
        indexes = sorted(self.allocators)
        if width > len(indexes):
            return None
        kept = self.reserve_bytes
        start = self._next_device
        order = [indexes[(start + turn) % len(indexes)] for turn in range(len(indexes))]
        order.sort(key=lambda i: i in down)  # stable: up devices first, each in turn
        chosen: list[int] = []
        for device_index in order:
            allocator = self.allocators[device_index]
            reserve = kept if device_index in self._reserve_devices else 0
            # Taking `length_bytes` out of one extent lowers the total of the
            # largest extents by at most that much.
            if self._room(device_index) - length_bytes < reserve:
                continue
            if allocator.largest_free_bytes < length_bytes:
                continue
            chosen.append(device_index)
            if len(chosen) == width:
                break
        if len(chosen) < width:
            return None
        extents = [
            self.allocators[i].allocate(length_bytes, min_length_bytes=length_bytes) for i in chosen
        ]
        self._next_device = (start + 1) % len(indexes)
        return extents

    def allocate_on(self, device_index: int, length_bytes: int) -> Extent:
        """One extent of `length_bytes` on one device (a cluster's placement chose
        it), keeping a metadata device's reserve.

        Raises:
            NoSpace: the device has no room for it.
        """
        allocator = self.allocators.get(device_index)
        if allocator is None:
            raise NoSpace(f"device {device_index} is not one of this node's")
        reserve = self.reserve_bytes if device_index in self._reserve_devices else 0
        if self._room(device_index) - length_bytes < reserve:
            raise NoSpace(
                f"device {device_index}: {allocator.free_bytes} bytes free, {reserve} kept "
                f"in reserve; no room for {length_bytes}"
            )
        return allocator.allocate(length_bytes, min_length_bytes=length_bytes)

    def allocate_run(self, device_index: int, length_bytes: int, max_extents: int) -> list[Extent]:
        """Extents on one device adding up to `length_bytes` (for a checkpoint body).

        Uses the reserve. Frees what it took and raises NoSpace if it cannot.
        """
        allocator = self.allocators[device_index]
        taken: list[Extent] = []
        remaining = length_bytes
        try:
            while remaining > 0:
                if len(taken) == max_extents:
                    raise NoSpace(f"device {device_index}: free space too fragmented")
                extent = allocator.allocate(remaining, min_length_bytes=1)
                taken.append(extent)
                remaining -= extent.length_bytes
        except NoSpace:
            for extent in taken:
                allocator.free(extent)
            raise
        return taken

    def free_extent(self, extent: Extent) -> None:
        allocator = self.allocators.get(extent.device_index)
        if allocator is None and self.foreign_devices:
            return  # another node's device, in a cluster: that node frees it
        assert allocator is not None, f"{extent} is on a device this node does not have"
        allocator.free(extent)

    def rebuild(self, allocators: dict[int, ExtentAllocator]) -> None:
        """Every allocator anew (a cluster node, once it has replayed the log).
        Nothing may be allocated but not yet referenced when this is called."""
        self.allocators = allocators

    def pin(self, segments: Iterable[Segment]) -> None:
        for segment in segments:
            self._pins[segment.segment_id] += 1

    def unpin(self, segments: Iterable[Segment]) -> None:
        for segment in segments:
            segment_id = segment.segment_id
            self._pins[segment_id] -= 1
            if self._pins[segment_id] == 0:
                del self._pins[segment_id]
                for extent in self._deferred.pop(segment_id, ()):
                    self.free_extent(extent)

    def free_segments(self, segments: Iterable[Segment]) -> None:
        """Free the fragments of segments the index let go (dropped, or moved
        away from), now or when the segment's last pin goes."""
        for segment in segments:
            extents = [fragment.extent for fragment in segment.fragments]
            if self._pins[segment.segment_id]:
                deferred = self._deferred.setdefault(segment.segment_id, [])
                deferred.extend(subtract_extents(extents, deferred))
            else:
                for extent in extents:
                    self.free_extent(extent)

    def take_segments(self, segments: Iterable[Segment]) -> None:
        """Mark the extents of segments the index now references in use, where they
        are this node's and still free (a cluster node that installed a Raft
        snapshot naming fragments written while it was away)."""
        for segment in segments:
            for fragment in segment.fragments:
                extent = fragment.extent
                allocator = self.allocators.get(extent.device_index)
                if allocator is not None and allocator.is_free(extent):
                    allocator.reserve(extent)

    def deferred_extents(self) -> list[Extent]:
        """Extents of segments freed by the index but still pinned by a reader."""
        return [extent for extents in self._deferred.values() for extent in extents]

    def statistics(self) -> SpaceStatistics:
        return SpaceStatistics(
            total_bytes=self.total_bytes,
            free_bytes=self.free_bytes,
            pinned_segments=len(self._pins),
            deferred_frees=len(self._deferred),
        )
