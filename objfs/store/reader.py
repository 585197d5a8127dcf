"""objfs.store.reader — `ObjectReader`: ranged reads of one version, pinned while open.

A reader sees the version it opened, whatever happens to the key afterwards: the
store pins the version's segments, so their extents are not reused until the
reader closes (a late close is fine). Every fragment is verified before use. The
last segment read is kept, so small sequential reads fetch each segment once.
"""

from __future__ import annotations

from typing import final

from objfs.store import pieces as piece_math
from objfs.store.datapath import DataPath
from objfs.store.types import ObjectInfo, ObjectVersion, Segment


@final
class ObjectReader:
    def __init__(self, datapath: DataPath, info: ObjectInfo, version: ObjectVersion) -> None:
        self._datapath = datapath
        self.info = info
        self._version = version
        self._cache: tuple[tuple[int, int], bytes] | None = None

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
        wanted: dict[tuple[int, int], Segment] = {}
        for _, _, piece in runs:
            if piece is not None and isinstance(piece.source, Segment):
                wanted.setdefault(piece.source.segment_id, piece.source)
        fetched: dict[tuple[int, int], bytes] = {}
        if self._cache is not None and self._cache[0] in wanted:
            fetched[self._cache[0]] = self._cache[1]
        missing = [segment for segment_id, segment in wanted.items() if segment_id not in fetched]
        if missing:
            for segment, data in zip(
                missing, await self._datapath.read_segments(missing), strict=True
            ):
                fetched[segment.segment_id] = data
        parts = []
        for run_start, run_end, piece in runs:
            if piece is None:
                parts.append(bytes(run_end - run_start))
                continue
            source = piece.source
            data = fetched[source.segment_id] if isinstance(source, Segment) else source
            skip = piece.source_offset_bytes + (run_start - piece.offset_bytes)
            parts.append(data[skip : skip + run_end - run_start])
        last = runs[-1][2]
        if last is not None and isinstance(last.source, Segment):
            self._cache = (last.source.segment_id, fetched[last.source.segment_id])
        return parts[0] if len(parts) == 1 else b"".join(parts)
