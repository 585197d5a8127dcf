"""objfs.store.reader — `ObjectReader`: ranged reads of one version, pinned while open.

A reader sees the version it opened, whatever happens to the key afterwards: the
store pins the version's segments, so their extents are not reused until the
reader closes (a late close is fine). Every fragment is verified before use.

Sequential reads fetch whole segments: the last few read are kept, so small
reads fetch each segment once, and the next segments are fetched in the
background (readahead), so the reader finds them ready. A read counts as
sequential when it starts near where the reads so far reached (within a few
read sizes either way): the kernel sends a FUSE file's readahead as several
requests at once, which arrive in any order. A read elsewhere (random access)
fetches only the data fragments that hold its range and starts no readahead.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import final

import trio

from objfs.errors import Corrupted
from objfs.store import pieces as piece_math
from objfs.store.datapath import DataPath
from objfs.store.erasure import SegmentBytes
from objfs.store.types import ObjectInfo, ObjectVersion, Segment, SegmentId

_MAX_READ_AHEAD_SEGMENTS = 8
_KEPT_SEGMENTS = 2  # segments kept after a read: out-of-order reads straddle a boundary
# A read within this many of its own sizes of the sequential position (at least
# _MIN_WINDOW_BYTES) is sequential: reads in flight together arrive in any order.
_WINDOW_READS = 4
_MIN_WINDOW_BYTES = 1 << 20
Bytes = bytes | SegmentBytes  # a segment's bytes as fetched; slicing gives bytes


class _Fetch:
    """A segment being fetched ahead of the reader."""

    def __init__(self, start_bytes: int) -> None:
        self.start_bytes = start_bytes  # where in the object the segment is first used
        self.done = trio.Event()
        self.data: Bytes | None = None


@final
class ObjectReader:
    def __init__(
        self,
        datapath: DataPath,
        info: ObjectInfo,
        version: ObjectVersion,
        nursery: trio.Nursery | None = None,
    ) -> None:
        self._datapath = datapath
        self.info = info
        self._version = version
        self._nursery = nursery  # readahead runs here; None: no readahead
        self._starts = [piece.offset_bytes for piece in version.pieces]
        # The last segments' bytes read: segment id -> (where they start in it, bytes),
        # oldest first.
        self._cache: dict[SegmentId, tuple[int, Bytes]] = {}
        self._ahead: dict[SegmentId, _Fetch] = {}
        self._next_offset = 0  # how far sequential reads have reached

    @property
    def size_bytes(self) -> int:
        return self._version.size_bytes

    async def read(self, offset_bytes: int, size_bytes: int) -> bytes:
        """Up to `size_bytes` bytes from `offset_bytes`; fewer at the end, b"" past it.

        Raises:
            Corrupted: stored bytes fail their checksum.
        """
        start = max(offset_bytes, 0)
        end = min(start + max(size_bytes, 0), self._version.size_bytes)
        if start >= end:
            return b""
        runs = list(piece_math.covering(self._version.pieces, start, end))
        wanted: dict[SegmentId, tuple[Segment, int, int]] = {}  # the range needed of each
        for run_start, run_end, piece in runs:
            if piece is not None and isinstance(piece.source, Segment):
                low = piece.source_offset_bytes + (run_start - piece.offset_bytes)
                high = low + (run_end - run_start)
                segment_id = piece.source.segment_id
                if segment_id in wanted:
                    _, old_low, old_high = wanted[segment_id]
                    low, high = min(low, old_low), max(high, old_high)
                wanted[segment_id] = (piece.source, low, high)
        window = max(_WINDOW_READS * (end - start), _MIN_WINDOW_BYTES)
        sequential = abs(start - self._next_offset) <= window
        fetched = await self._fetch(wanted, start - window, sequential=sequential)
        parts = []
        for run_start, run_end, piece in runs:
            if piece is None:
                parts.append(bytes(run_end - run_start))
                continue
            source = piece.source
            skip = piece.source_offset_bytes + (run_start - piece.offset_bytes)
            if isinstance(source, Segment):
                base, data = fetched[source.segment_id]
                skip -= base
            else:
                data = source
            parts.append(data[skip : skip + run_end - run_start])
        for segment_id in list(wanted)[-_KEPT_SEGMENTS:]:
            self._cache.pop(segment_id, None)
            self._cache[segment_id] = fetched[segment_id]
        while len(self._cache) > _KEPT_SEGMENTS:
            del self._cache[next(iter(self._cache))]
        self._next_offset = max(self._next_offset, end) if sequential else end
        if sequential:
            count = max(2, min(len(wanted), _MAX_READ_AHEAD_SEGMENTS))
            self._read_ahead(self._next_offset, count)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _fetch(
        self,
        wanted: dict[SegmentId, tuple[Segment, int, int]],
        start_bytes: int,
        *,
        sequential: bool,
    ) -> dict[SegmentId, tuple[int, Bytes]]:
        """Bytes covering the range wanted of each segment, as (where they start in
        the segment, bytes): from the cache, a readahead, or the devices (whole
        segments when sequential, else only the fragments that hold the range)."""
        fetched: dict[SegmentId, tuple[int, Bytes]] = {}
        for segment_id, (base, data) in self._cache.items():
            if segment_id in wanted:
                _, low, high = wanted[segment_id]
                if base <= low and high <= base + len(data):
                    fetched[segment_id] = (base, data)
        for segment_id in wanted:
            # Left in place until the reads pass it: reads in flight together share it.
            ahead = self._ahead.get(segment_id)
            if ahead is not None and segment_id not in fetched:
                await ahead.done.wait()
                if ahead.data is not None:
                    fetched[segment_id] = (0, ahead.data)  # a failed readahead is read again
        # Fetches behind the window will not be asked for again: let them go.
        self._ahead = {k: v for k, v in self._ahead.items() if v.start_bytes >= start_bytes}
        missing = [item for segment_id, item in wanted.items() if segment_id not in fetched]
        if missing and sequential:
            # Registered as fetches, so a read arriving meanwhile waits for these.
            shared = [(segment, _Fetch(start_bytes)) for segment, _, _ in missing]
            for segment, fetch in shared:
                self._ahead.setdefault(segment.segment_id, fetch)
            try:
                datas = await self._datapath.read_segments([segment for segment, _ in shared])
                for (segment, fetch), data in zip(shared, datas, strict=True):
                    fetch.data = data
                    fetched[segment.segment_id] = (0, data)
            finally:
                for _, fetch in shared:
                    fetch.done.set()  # on failure with no data: the waiter reads again
        else:
            for segment, low, high in missing:
                fetched[segment.segment_id] = await self._datapath.read_segment_range(
                    segment, low, high
                )
        return fetched

    def _read_ahead(self, end_bytes: int, count: int) -> None:
        """Start fetching the next `count` stored segments from `end_bytes` on (as
        many as the last read needed, at least two), each in its own thread hop:
        with two or more reads in flight the device never waits for the loop."""
        if self._nursery is None:
            return
        pieces = self._version.pieces
        index = max(bisect_right(self._starts, end_bytes - 1) - 1, 0)
        started = 0
        for piece in pieces[index:]:
            if started == count or len(self._ahead) >= 2 * _MAX_READ_AHEAD_SEGMENTS:
                break
            if piece.end_bytes <= end_bytes or not isinstance(piece.source, Segment):
                continue
            segment_id = piece.source.segment_id
            if segment_id in self._ahead or self._cached_whole(piece.source):
                started += segment_id in self._ahead
                continue
            fetch = self._ahead[segment_id] = _Fetch(max(piece.offset_bytes, end_bytes))
            self._nursery.start_soon(self._fetch_ahead, piece.source, fetch)
            started += 1

    def _cached_whole(self, segment: Segment) -> bool:
        cached = self._cache.get(segment.segment_id)
        return cached is not None and cached[0] == 0 and len(cached[1]) == segment.size_bytes

    async def _fetch_ahead(self, segment: Segment, fetch: _Fetch) -> None:
        try:
            [fetch.data] = await self._datapath.read_segments([segment])
        except Corrupted:
            pass  # the reader reads it again and meets the error itself
        finally:
            fetch.done.set()
