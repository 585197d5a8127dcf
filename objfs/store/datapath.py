"""objfs.store.datapath — storing and fetching segments: allocate, checksum, write, verify.

Owns the devices' data regions as the store uses them: a segment is written to a
fresh extent, its CRC32C recorded; a fragment read back is verified before any
byte of it is used, and a mismatch is `Corrupted`, never wrong bytes. It keeps
the set of devices written since their last flush, so the WAL can flush exactly
those before a record that points at the new bytes becomes durable.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import crc32c
import trio

from objfs.errors import Corrupted, DeviceError, ObjfsError
from objfs.store.device import AlignedBuffer, BlockDevice, WriteData, round_up
from objfs.store.space import Space
from objfs.store.types import BLOCK_SIZE_BYTES, Fragment, Segment

log = logging.getLogger(__name__)


_SPLIT_READS_ABOVE_BYTES = 2 * 1024 * 1024  # reads smaller than this stay in one hop


class DataPath:
    def __init__(
        self, devices: dict[int, BlockDevice], space: Space, *, parallel_reads: int = 4
    ) -> None:
        self.devices = devices
        self.space = space
        self.parallel_reads = parallel_reads
        self._dirty: set[int] = set()
        self.corruptions = 0

    async def write_segments(
        self, data: AlignedBuffer | bytes, size_bytes: int, *, whole_crc: int | None = None
    ) -> list[Segment]:
        """Store the first `size_bytes` of `data`: one segment, or several when free
        space is too fragmented for one extent. Undoes everything on failure.

        Raises:
            NoSpace: the devices are full.
        """
        segments: list[Segment] = []
        view = data.view if isinstance(data, AlignedBuffer) else memoryview(data)
        position = 0
        try:
            while position < size_bytes:
                remaining = size_bytes - position
                extent = self.space.allocate(round_up(remaining), min_length_bytes=BLOCK_SIZE_BYTES)
                count = min(extent.length_bytes, remaining)
                chunk = view[position : position + count]
                if whole_crc is not None and count == size_bytes:
                    crc = whole_crc  # the caller checksummed it already, off the loop
                else:
                    crc = crc32c.crc32c(chunk)
                fragment = Fragment(extent, count, crc)
                segments.append(Segment(count, (fragment,)))
                payload: WriteData = bytes(chunk)
                if isinstance(data, AlignedBuffer) and position == 0 and count == size_bytes:
                    payload = (data, count)  # no copy: already aligned
                await self.devices[extent.device_index].write(extent.offset_bytes, payload)
                self._dirty.add(extent.device_index)
                position += count
        except BaseException:
            self.discard(segments)
            raise
        return segments

    async def store_bytes(self, data: bytes, *, segment_size_bytes: int) -> list[Segment]:
        """Store `data` as segments of at most `segment_size_bytes`; undo all on failure."""
        segments: list[Segment] = []
        try:
            for start in range(0, len(data), segment_size_bytes):
                chunk = data[start : start + segment_size_bytes]
                segments.extend(await self.write_segments(chunk, len(chunk)))
        except BaseException:
            self.discard(segments)
            raise
        return segments

    def discard(self, segments: Sequence[Segment]) -> None:
        """Free segments that were written but never made it into the index."""
        for segment in segments:
            for fragment in segment.fragments:
                self.space.free_extent(fragment.extent)

    async def flush_dirty(self) -> None:
        """Flush every device written since its last flush (in parallel)."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        failures: list[str] = []

        async def flush(device_index: int) -> None:
            try:
                await self.devices[device_index].flush()
            except (OSError, ObjfsError) as exc:
                failures.append(f"{self.devices[device_index].path}: flush failed: {exc}")

        async with trio.open_nursery() as nursery:
            for device_index in sorted(dirty):
                nursery.start_soon(flush, device_index)
        if failures:
            raise DeviceError(failures[0])

    async def read_segments(self, segments: Sequence[Segment]) -> list[bytes]:
        """The bytes of each segment, verified. Small reads take one thread hop per
        device; large ones are split over up to `parallel_reads` hops per device,
        because one thread keeps a virtio or NVMe queue only one request deep.

        Raises:
            Corrupted: a fragment fails its checksum or cannot be read.
        """
        per_device: dict[int, list[int]] = defaultdict(list)
        for position, segment in enumerate(segments):
            per_device[segment.fragments[0].extent.device_index].append(position)
        groups: list[tuple[int, list[int]]] = []
        for device_index, positions in per_device.items():
            wanted = sum(segments[p].size_bytes for p in positions)
            count = max(1, min(self.parallel_reads, wanted // _SPLIT_READS_ABOVE_BYTES))
            for part in range(count):
                groups.append((device_index, positions[part::count]))
        results: list[bytes] = [b""] * len(segments)
        failures: list[Corrupted] = []

        async def read_device(device_index: int, positions: list[int]) -> None:
            requests = [
                (segments[p].fragments[0].extent.offset_bytes, segments[p].fragments[0].size_bytes)
                for p in positions
            ]
            try:
                datas = await self.devices[device_index].read_many(requests)
                for position, data in zip(positions, datas, strict=True):
                    results[position] = self._verified(segments[position], data)
            except Corrupted as exc:
                failures.append(exc)
            except (OSError, ObjfsError) as exc:
                failures.append(Corrupted(f"device {device_index} cannot be read: {exc}"))

        if len(groups) == 1:  # the common case: no nursery, one thread hop
            [(device_index, positions)] = groups
            await read_device(device_index, positions)
        else:
            async with trio.open_nursery() as nursery:
                for device_index, positions in groups:
                    nursery.start_soon(read_device, device_index, positions)
        if failures:
            raise failures[0]
        return results

    def _verified(self, segment: Segment, data: bytes) -> bytes:
        fragment = segment.fragments[0]
        if crc32c.crc32c(data) != fragment.crc32c:
            self.corruptions += 1
            extent = fragment.extent
            log.error(
                "checksum mismatch in segment at device %d offset %d (%d bytes)",
                extent.device_index,
                extent.offset_bytes,
                fragment.size_bytes,
            )
            raise Corrupted(
                f"stored bytes at device {extent.device_index} offset {extent.offset_bytes} "
                "fail their checksum"
            )
        return data
