"""objfs.store.extents — the free-space map of one device's data region.

Owns which blocks of a device are free and hands out extents (best fit, with
coalescing on free). It must not do any I/O and knows nothing of the index or
the WAL: the caller rebuilds it at open by reserving every referenced extent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import final

from sortedcontainers import SortedDict, SortedList

from objfs.errors import NoSpace
from objfs.store.types import BLOCK_SIZE_BYTES, Extent


@dataclass(frozen=True, slots=True)
class AllocatorStatistics:
    device_index: int
    total_bytes: int
    free_bytes: int
    free_extent_count: int
    largest_free_bytes: int


def _describe(extent: Extent) -> str:
    return f"extent [{extent.offset_bytes}, {extent.end_bytes}) on device {extent.device_index}"


@final
class ExtentAllocator:
    """Free-space map of one device's data region: sorted free extents, best fit, coalescing."""

    def __init__(
        self,
        device_index: int,
        start_bytes: int,
        end_bytes: int,
        *,
        block_size_bytes: int = BLOCK_SIZE_BYTES,
    ) -> None:
        if block_size_bytes <= 0:
            raise ValueError(f"block size must be positive, got {block_size_bytes}")
        if start_bytes % block_size_bytes or end_bytes % block_size_bytes:
            raise ValueError(
                f"device {device_index}: region [{start_bytes}, {end_bytes}) "
                f"is not aligned to {block_size_bytes}-byte blocks"
            )
        if not 0 <= start_bytes <= end_bytes:
            raise ValueError(f"device {device_index}: bad region [{start_bytes}, {end_bytes})")
        self.device_index = device_index
        self._start_bytes = start_bytes
        self._end_bytes = end_bytes
        self._block_size_bytes = block_size_bytes
        # Two views of the same free extents: by offset to find neighbours and
        # overlaps, by (length, offset) for best fit. Ties in length go to the
        # lowest offset, which keeps allocation deterministic.
        self._by_offset = SortedDict()  # offset_bytes -> length_bytes
        self._by_length = SortedList()  # (length_bytes, offset_bytes)
        self._free_bytes = 0
        if end_bytes > start_bytes:
            self._insert(start_bytes, end_bytes - start_bytes)

    @classmethod
    def with_used(
        cls, device_index: int, start_bytes: int, end_bytes: int, used: list[Extent]
    ) -> ExtentAllocator:
        """The map of a region in which exactly `used` is taken (any order).

        One sort and one pass, instead of a `reserve` per extent: at a million
        extents in random order that is ~2 s instead of ~16 s.

        Raises:
            ValueError: an extent is on another device, unaligned, outside the
                region, or overlaps another (naming it).
        """
        allocator = cls(device_index, start_bytes, start_bytes)
        allocator._end_bytes = end_bytes
        position = start_bytes
        free: list[tuple[int, int]] = []
        for extent in sorted(used, key=lambda e: e.offset_bytes):
            allocator._check(extent)
            if extent.offset_bytes < position:
                raise ValueError(f"{_describe(extent)} overlaps another extent in use")
            if extent.offset_bytes > position:
                free.append((position, extent.offset_bytes - position))
            position = extent.end_bytes
        if position < end_bytes:
            free.append((position, end_bytes - position))
        allocator._by_offset = SortedDict(free)
        allocator._by_length = SortedList((length, offset) for offset, length in free)
        allocator._free_bytes = sum(length for _, length in free)
        return allocator

    # -- queries ---------------------------------------------------------------

    def region(self) -> tuple[int, int]:
        """The data region this map covers: [start, end) in bytes."""
        return self._start_bytes, self._end_bytes

    @property
    def total_bytes(self) -> int:
        return self._end_bytes - self._start_bytes

    @property
    def free_bytes(self) -> int:
        return self._free_bytes

    @property
    def largest_free_bytes(self) -> int:
        return int(self._by_length[-1][0]) if self._by_length else 0

    def largest_free_total(self, count: int) -> int:
        """Bytes in the `count` largest free extents together: what a caller that
        may take at most `count` extents can get."""
        if count <= 0:
            return 0
        taken = self._by_length.islice(max(len(self._by_length) - count, 0))
        return sum(int(length) for length, _ in taken)

    def free_extents(self) -> Iterator[Extent]:
        """The free extents in offset order (a snapshot: safe to mutate while iterating)."""
        for offset_bytes, length_bytes in list(self._by_offset.items()):
            yield Extent(self.device_index, offset_bytes, length_bytes)

    def is_free(self, extent: Extent) -> bool:
        """True when the extent lies entirely inside one free extent."""
        self._check(extent)
        return self._containing(extent) is not None

    def is_allocated(self, extent: Extent) -> bool:
        """True when the extent overlaps no free extent."""
        self._check(extent)
        return not self._overlaps_free(extent)

    def statistics(self) -> AllocatorStatistics:
        return AllocatorStatistics(
            device_index=self.device_index,
            total_bytes=self.total_bytes,
            free_bytes=self._free_bytes,
            free_extent_count=len(self._by_offset),
            largest_free_bytes=self.largest_free_bytes,
        )

    # -- changes ---------------------------------------------------------------

    def allocate(self, length_bytes: int, *, min_length_bytes: int | None = None) -> Extent:
        """Take the smallest free extent that fits `length_bytes` (rounded up to blocks).

        When none fits and `min_length_bytes` is given, return the whole largest
        free extent if it is at least that long: the caller then writes in parts.
        """
        if length_bytes <= 0:
            raise ValueError(f"device {self.device_index}: cannot allocate {length_bytes} bytes")
        if min_length_bytes is not None and min_length_bytes <= 0:
            raise ValueError(f"device {self.device_index}: bad min length {min_length_bytes}")
        wanted_bytes = self._round_up(length_bytes)
        index = self._by_length.bisect_left((wanted_bytes, -1))
        if index < len(self._by_length):
            free_length_bytes, offset_bytes = self._by_length[index]
            self._remove(offset_bytes, free_length_bytes)
            if free_length_bytes > wanted_bytes:
                self._insert(offset_bytes + wanted_bytes, free_length_bytes - wanted_bytes)
            return Extent(self.device_index, int(offset_bytes), wanted_bytes)
        largest_bytes = self.largest_free_bytes
        if min_length_bytes is not None and largest_bytes >= self._round_up(min_length_bytes):
            # Lowest offset among equally large extents, as for best fit.
            index = self._by_length.bisect_left((largest_bytes, -1))
            free_length_bytes, offset_bytes = self._by_length[index]
            self._remove(offset_bytes, free_length_bytes)
            return Extent(self.device_index, int(offset_bytes), int(free_length_bytes))
        raise NoSpace(
            f"device {self.device_index}: no free extent of {wanted_bytes} bytes "
            f"(asked {length_bytes}, largest free {largest_bytes} bytes)"
        )

    def reserve(self, extent: Extent) -> None:
        """Mark an extent in use; it must lie inside one free extent."""
        self._check(extent)
        containing = self._containing(extent)
        if containing is None:
            raise ValueError(f"cannot reserve {_describe(extent)}: not entirely free")
        offset_bytes, length_bytes = containing
        self._remove(offset_bytes, length_bytes)
        if extent.offset_bytes > offset_bytes:
            self._insert(offset_bytes, extent.offset_bytes - offset_bytes)
        end_bytes = offset_bytes + length_bytes
        if end_bytes > extent.end_bytes:
            self._insert(extent.end_bytes, end_bytes - extent.end_bytes)

    def free(self, extent: Extent) -> None:
        """Return an extent to free space, merging it with free neighbours."""
        self._check(extent)
        if self._overlaps_free(extent):
            raise ValueError(f"cannot free {_describe(extent)}: overlaps free space (double free)")
        offset_bytes, end_bytes = extent.offset_bytes, extent.end_bytes
        # Coalesce so the map never holds two adjacent extents: best fit then
        # sees the real hole sizes and the map stays as small as possible.
        index = self._by_offset.bisect_left(offset_bytes)
        if index > 0:
            left_offset_bytes, left_length_bytes = self._by_offset.peekitem(index - 1)
            if left_offset_bytes + left_length_bytes == offset_bytes:
                self._remove(left_offset_bytes, left_length_bytes)
                offset_bytes = left_offset_bytes
        right_length_bytes = self._by_offset.get(end_bytes)
        if right_length_bytes is not None:
            self._remove(end_bytes, right_length_bytes)
            end_bytes += right_length_bytes
        self._insert(offset_bytes, end_bytes - offset_bytes)

    # -- internals -------------------------------------------------------------

    def _round_up(self, length_bytes: int) -> int:
        return -(-length_bytes // self._block_size_bytes) * self._block_size_bytes

    def _check(self, extent: Extent) -> None:
        """Refuse extents that cannot belong to this map rather than corrupt it."""
        if extent.device_index != self.device_index:
            raise ValueError(f"{_describe(extent)} is not on device {self.device_index}")
        if extent.length_bytes <= 0:
            raise ValueError(f"{_describe(extent)} is empty")
        if (
            extent.offset_bytes % self._block_size_bytes
            or extent.length_bytes % self._block_size_bytes
        ):
            raise ValueError(f"{_describe(extent)} is not aligned to {self._block_size_bytes}")
        if extent.offset_bytes < self._start_bytes or extent.end_bytes > self._end_bytes:
            raise ValueError(
                f"{_describe(extent)} is outside region [{self._start_bytes}, {self._end_bytes})"
            )

    def _containing(self, extent: Extent) -> tuple[int, int] | None:
        """The free (offset, length) that holds all of `extent`, if any."""
        index = self._by_offset.bisect_right(extent.offset_bytes) - 1
        if index < 0:
            return None
        offset_bytes, length_bytes = self._by_offset.peekitem(index)
        if offset_bytes + length_bytes < extent.end_bytes:
            return None
        return int(offset_bytes), int(length_bytes)

    def _overlaps_free(self, extent: Extent) -> bool:
        # Free extents are disjoint, so the last one starting before the end of
        # `extent` reaches furthest right of all that could overlap it.
        index = self._by_offset.bisect_left(extent.end_bytes) - 1
        if index < 0:
            return False
        offset_bytes, length_bytes = self._by_offset.peekitem(index)
        return bool(offset_bytes + length_bytes > extent.offset_bytes)

    def _insert(self, offset_bytes: int, length_bytes: int) -> None:
        self._by_offset[offset_bytes] = length_bytes
        self._by_length.add((length_bytes, offset_bytes))
        self._free_bytes += length_bytes

    def _remove(self, offset_bytes: int, length_bytes: int) -> None:
        del self._by_offset[offset_bytes]
        self._by_length.remove((length_bytes, offset_bytes))
        self._free_bytes -= length_bytes


def subtract_extents(extents: Iterable[Extent], taken: Iterable[Extent]) -> list[Extent]:
    """The parts of `extents` that no extent of `taken` covers (what a moved
    segment's old storage gives back, its id's block excepted)."""
    by_device: dict[int, list[Extent]] = {}
    for extent in taken:
        by_device.setdefault(extent.device_index, []).append(extent)
    left: list[Extent] = []
    for extent in extents:
        start = extent.offset_bytes
        for cut in sorted(by_device.get(extent.device_index, ()), key=lambda e: e.offset_bytes):
            if cut.end_bytes <= start or cut.offset_bytes >= extent.end_bytes:
                continue
            if cut.offset_bytes > start:
                left.append(Extent(extent.device_index, start, cut.offset_bytes - start))
            start = max(start, cut.end_bytes)
        if start < extent.end_bytes:
            left.append(Extent(extent.device_index, start, extent.end_bytes - start))
    return left
