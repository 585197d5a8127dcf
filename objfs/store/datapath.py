"""objfs.store.datapath — storing and fetching segments: encode, place, checksum, verify, rebuild.

Owns the devices' data regions as the store uses them. A segment (one stripe) is
encoded into k+m fragments (objfs/store/erasure.py) off the event loop, placed on
k+m different devices, written in parallel, and the CRC32C of each fragment is
recorded in the segment. Every fragment read back is verified before any byte of
it is used: a bad or unreadable fragment is replaced by another (parity) one, the
segment is rebuilt from any k intact fragments, the event is logged and counted
and the segment queued for heal. Fewer than k intact fragments is `Corrupted`,
never wrong bytes.

A device that fails a write or a flush is marked down (objfs/store/health.py): a
stripe still counts as written when k of its fragments are, and the others are
owed to the device. The data path keeps the set of devices written since their
last flush, so the WAL can flush exactly those (and persist the owed mask) before
a record that points at the new bytes becomes durable.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, final

import crc32c
import trio

from objfs.errors import Corrupted, DeviceError, NoSpace, ObjfsError, Unavailable
from objfs.store import erasure
from objfs.store.device import AlignedBuffer, BlockDevice, WriteData, round_up
from objfs.store.health import Health
from objfs.store.space import Space
from objfs.store.stats import latency_histogram
from objfs.store.types import BLOCK_SIZE_BYTES, Extent, Fragment, Segment

log = logging.getLogger(__name__)
T = TypeVar("T")

_SPLIT_READS_ABOVE_BYTES = 2 * 1024 * 1024  # reads smaller than this stay in one hop
_CHECKSUM_OFF_LOOP_BYTES = 256 * 1024  # verify larger reads in a worker thread
_PLACEMENT_TRIES = 3  # a stripe encoded again for the nodes up, at most this often

PersistOwed = Callable[[int], Awaitable[None]]  # writes the owed mask to the superblocks


class Placer(Protocol):
    """In a cluster: the shape of a new stripe and where its fragments go
    (objfs.cluster.placement).

    `policy` is the shape for the next stripe (it depends on which nodes are
    up). `place` stores each payload on a device of its choosing, this node's
    (through `DataPath.store_fragment`) or another node's, and returns the
    extents in fragment order; None when a node turned out to be down while
    placing (the stripe is then encoded again for the nodes still up); it
    raises (having undone what it could) if it cannot place them all."""

    def policy(self) -> erasure.Policy: ...

    def discard(self, segments: Sequence[Segment]) -> None:
        """Placed segments no record will name: this node frees its fragments (if
        still pending); other nodes' wait out their bound."""

    async def place(
        self, policy: erasure.Policy, payloads: list[WriteData], sizes: list[int]
    ) -> list[Extent] | None: ...


@dataclass(slots=True)
class SegmentCheck:
    """What checking (and healing) one segment found."""

    fragments_checked: int = 0
    bytes_read: int = 0
    bad: list[int] = field(default_factory=list)  # fragment numbers damaged or unreadable
    skipped: list[int] = field(default_factory=list)  # on down devices: not checked
    repaired: list[int] = field(default_factory=list)
    unrecoverable: bool = False


@final
class BufferPool:
    """Aligned segment buffers kept for reuse: a fresh 4 MiB mmap costs ~1,000
    page faults (~4 ms) on first use, a reused one nothing. Holds at most
    `max_buffers`; more are made when asked and dropped when given back."""

    def __init__(self, max_buffers: int = 16) -> None:
        self.max_buffers = max_buffers
        self._free: dict[int, list[AlignedBuffer]] = defaultdict(list)

    def take(self, size_bytes: int) -> AlignedBuffer:
        free = self._free[round_up(size_bytes)]
        return free.pop() if free else AlignedBuffer(size_bytes)

    def give(self, buffer: AlignedBuffer) -> None:
        """Keep `buffer` for the next taker. Not closed when dropped: a view of it
        may still be alive somewhere (an exception in flight); GC unmaps it."""
        if sum(len(free) for free in self._free.values()) < self.max_buffers:
            self._free[buffer.capacity_bytes].append(buffer)


class DataPath:
    def __init__(
        self,
        devices: dict[int, BlockDevice],
        space: Space,
        *,
        policy: erasure.Policy | None = None,
        fragment_size_bytes: int = 1024 * 1024,
        health: Health | None = None,
        persist_owed: PersistOwed | None = None,
        parallel_reads: int = 4,
    ) -> None:
        self.devices = devices  # the devices that are open; missing ones are absent
        # In a cluster: another node's device by index, to read fragments through
        # that node (objfs.cluster.remote); None for this node's own devices.
        self.remote: Callable[[int], BlockDevice | None] = lambda device_index: None
        # In a cluster: the same, also through a node skipped lately for failing a
        # call (a read with too few fragments otherwise tries it before giving up).
        self.last_resort: Callable[[int], BlockDevice | None] = lambda device_index: None
        # In a cluster: told of a damaged fragment on another node's device (that
        # node heals it: each node heals only its own devices' fragments).
        self.on_remote_damage: Callable[[Segment, int], None] = lambda segment, number: None
        # In a cluster: places each stripe's fragments over the nodes (and sets `policy`).
        self.placer: Placer | None = None
        self.space = space
        self.policy = policy or erasure.Policy(1, 0, erasure.SCHEME_REPLICAS)
        self.fragment_size_bytes = fragment_size_bytes
        self.health = health or Health(devices, down=set(), owed=set())
        self._persist_owed = persist_owed
        self.parallel_reads = parallel_reads
        self.buffers = BufferPool()  # for writers of whole-copy segments
        self.encode_seconds = latency_histogram()  # per segment, CRC32C of fragments included
        self.decode_seconds = latency_histogram()  # per segment that needed pyeclib
        self._dirty: set[int] = set()  # written since flushed; drained by flush_dirty
        # One flush_dirty at a time: a caller whose device another caller took out
        # of `_dirty` must not return before that caller's flush of it is done.
        self._flushing = trio.Lock()
        self._healed_dirty: set[int] = set()  # written by heals; drained by flush_healed

    @property
    def segment_size_bytes(self) -> int:
        """User bytes in one full segment: k fragments' worth."""
        return self.policy.data_fragments * self.fragment_size_bytes

    @property
    def corruptions(self) -> int:
        return self.health.bad_fragments

    def usable(self, device_index: int) -> bool:
        """One of this node's devices, open and up: readable and writable here."""
        return device_index in self.devices and device_index not in self.health.down

    def own(self, device_index: int) -> bool:
        """One of this node's devices (open, down or missing): its fragments are
        this node's to check and heal."""
        return device_index in self.devices or device_index in self.health.device_indexes

    def readable(self, device_index: int) -> bool:
        """Usable, or (in a cluster) another node's device read through that node."""
        if self.own(device_index):
            return self.usable(device_index)
        return self.remote(device_index) is not None

    def _skipped(self, device_index: int) -> bool:
        """Another node's device whose node is skipped for now (it failed a call lately)."""
        return (
            not self.own(device_index)
            and self.remote(device_index) is None
            and self.last_resort(device_index) is not None
        )

    def _reading_device(self, device_index: int) -> BlockDevice:
        device = (
            self.devices.get(device_index)
            or self.remote(device_index)
            or self.last_resort(device_index)
        )
        if device is None:
            raise DeviceError(f"device {device_index} is neither open here nor another node's")
        return device

    # -- writing ---------------------------------------------------------------------

    async def write_segments(
        self,
        data: AlignedBuffer | bytes | memoryview,
        size_bytes: int,
        *,
        whole_crc: int | None = None,
    ) -> list[Segment]:
        """Store the first `size_bytes` of `data` (at most one segment's worth) as
        one segment, or several when free space is too fragmented for one stripe.
        Undoes everything on failure.

        Args:
            whole_crc: the CRC32C of those bytes, when the caller has it (used when
                the policy keeps whole copies, which then need no checksum pass).

        Raises:
            NoSpace: the devices are full.
            Unavailable: fewer than k devices are up.
            DeviceError: fewer than k fragments of a stripe could be written.
        """
        segments: list[Segment] = []
        view = data.view if isinstance(data, AlignedBuffer) else memoryview(data)
        position = 0
        try:
            while position < size_bytes:
                remaining = size_bytes - position
                whole = position == 0 and remaining == size_bytes
                segment = await self._write_stripe(
                    data if whole and isinstance(data, AlignedBuffer) else None,
                    view[position:size_bytes],
                    whole_crc if whole else None,
                )
                segments.append(segment)
                position += segment.size_bytes
        except BaseException:
            self.discard(segments)
            raise
        return segments

    async def write_whole_stripe(self, data: bytes) -> Segment:
        """All of `data` as one stripe of the policy now, however many bytes that
        puts in each fragment: a segment moved (`Store.move_segment`) stays one
        segment, whatever shape it had.

        Raises:
            NoSpace, Unavailable, DeviceError: as `write_segments`.
        """
        return await self._write_stripe(None, memoryview(data), None, whole=True)

    async def store_bytes(self, data: bytes, *, in_flight: int = 4) -> list[Segment]:
        """Store `data` as full segments (the last one shorter), up to `in_flight`
        at once; undo all on failure.

        Raises:
            NoSpace, Unavailable, DeviceError: as `write_segments`; one error for
                the whole call however many segments failed (`_first_error`).
        """
        step = self.segment_size_bytes
        starts = range(0, len(data), step)
        stored: list[list[Segment]] = [[] for _ in starts]
        limiter = trio.CapacityLimiter(in_flight)
        view = memoryview(data)
        errors: list[ObjfsError] = []
        scope = trio.CancelScope()

        async def one(number: int, start: int) -> None:
            async with limiter:
                chunk = view[start : start + step]
                try:
                    stored[number] = await self.write_segments(chunk, len(chunk))
                except ObjfsError as exc:
                    # Raised below, outside the nursery: a group of them is no
                    # ObjfsError to the faces (S3 500, the mount EIO). The other
                    # writes stop, as if this one had raised in the nursery.
                    errors.append(exc)
                    scope.cancel()

        try:
            with scope:
                if len(starts) == 1:
                    await one(0, 0)
                else:
                    async with trio.open_nursery() as nursery:
                        for number, start in enumerate(starts):
                            nursery.start_soon(one, number, start)
            if errors:
                raise _first_error(errors)
        except BaseException:
            self.discard([segment for part in stored for segment in part])
            raise
        return [segment for part in stored for segment in part]

    async def _write_stripe(
        self,
        buffer: AlignedBuffer | None,
        view: memoryview,
        whole_crc: int | None,
        *,
        whole: bool = False,
    ) -> Segment:
        """Write one stripe of up to all of `view` (all of it if `whole`); return
        its segment (maybe shorter)."""
        policy = self.policy
        if self.placer is not None:
            return await self._write_placed_stripe(
                self.placer, buffer, view, whole_crc, whole=whole
            )
        up = [i for i in self.health.up if i in self.devices]
        if len(up) < policy.write_quorum:
            raise Unavailable(
                f"only {len(up)} devices are up and a {policy.describe()} stripe needs "
                f"{policy.write_quorum} fragments written; nothing can be stored"
            )
        size = len(view) if whole else min(len(view), self.segment_size_bytes)  # short calls
        while True:
            fragment_bytes = _fragment_bytes(policy, size)
            extents = self.space.allocate_stripe(
                round_up(fragment_bytes), policy.width, down=self.health.down
            )
            if extents is not None:
                break
            if whole or size <= policy.data_fragments * BLOCK_SIZE_BYTES:
                raise NoSpace(
                    f"no {policy.width} devices have {round_up(fragment_bytes)} bytes free "
                    f"above their reserve ({self.space.free_bytes} bytes free in all)"
                )
            size = max(round_up(size // 2, policy.data_fragments * BLOCK_SIZE_BYTES), 1)
            size = min(size, len(view))
        if size < len(view):
            whole_crc = None  # the CRC of all of `view`, not of this shorter stripe
        try:
            return await self._encode_and_write(buffer, view[:size], whole_crc, extents)
        except BaseException:
            for extent in extents:
                self.space.free_extent(extent)
            raise

    async def _write_placed_stripe(
        self,
        placer: Placer,
        buffer: AlignedBuffer | None,
        view: memoryview,
        whole_crc: int | None,
        *,
        whole: bool = False,
    ) -> Segment:
        """A cluster's stripe: encoded here, its fragments placed by `placer`."""
        for _ in range(_PLACEMENT_TRIES):
            policy = placer.policy()
            stripe_bytes = policy.data_fragments * self.fragment_size_bytes
            size = len(view) if whole else min(len(view), stripe_bytes)
            if size < len(view):
                buffer, whole_crc = None, None
            payloads, crcs, sizes = await self._encode(policy, buffer, view[:size], whole_crc)
            extents = await placer.place(policy, payloads, sizes)
            if extents is not None:
                break
        else:
            raise Unavailable(f"nodes failed while a stripe was placed, {_PLACEMENT_TRIES} times")
        return _segment(policy, size, extents, sizes, crcs)

    async def store_fragment(
        self, device_index: int, payload: WriteData, size_bytes: int
    ) -> Extent:
        """One fragment on one of this node's devices (a cluster's placement): an
        extent allocated on it and written, not flushed (`flush_dirty` does that,
        as for any fragment). Nothing references the extent yet.

        Raises:
            NoSpace: the device has no room for it.
            DeviceError: the device is not open here, is down, or failed the write
                (it is then marked down).
        """
        if not self.usable(device_index):
            raise DeviceError(f"device {device_index} is not an open, up device of this node")
        extent = self.space.allocate_on(device_index, round_up(size_bytes))
        try:
            await self.devices[device_index].write(extent.offset_bytes, payload)
        except NoSpace:
            self.space.free_extent(extent)
            raise
        except (OSError, ObjfsError) as exc:
            self.space.free_extent(extent)
            self.health.mark_down(device_index, f"write failed: {exc}")
            raise DeviceError(f"device {device_index}: write failed: {exc}") from None
        self._dirty.add(device_index)
        return extent

    async def _encode(
        self,
        policy: erasure.Policy,
        buffer: AlignedBuffer | None,
        view: memoryview,
        whole_crc: int | None,
    ) -> tuple[list[WriteData], list[int], list[int]]:
        """The stripe's fragments with `policy`: (payloads, CRC32Cs, sizes)."""
        size = len(view)
        payloads: list[WriteData]
        if policy.scheme == erasure.SCHEME_REPLICAS:
            crc = whole_crc
            if crc is None:
                crc = await _crc_off_loop(view)
            if buffer is not None:  # the view starts at the buffer's start
                payloads = [(buffer, size)] * policy.width  # no copy: already aligned
            else:
                copy = bytes(view)
                payloads = [copy] * policy.width
            crcs, sizes = [crc] * policy.width, [size] * policy.width
        else:
            codec = erasure.codec(policy.scheme, policy.data_fragments, policy.parity_fragments)

            (fragments, crcs), seconds = await trio.to_thread.run_sync(
                _timed, erasure.encode_with_checksums, codec, view
            )
            self.encode_seconds.observe(seconds)
            payloads = list(fragments)
            sizes = [len(f) for f in fragments]
        return payloads, crcs, sizes

    async def _encode_and_write(
        self,
        buffer: AlignedBuffer | None,
        view: memoryview,
        whole_crc: int | None,
        extents: list[Extent],
    ) -> Segment:
        policy = self.policy
        size = len(view)
        payloads, crcs, sizes = await self._encode(policy, buffer, view, whole_crc)
        written = await self._write_fragments(list(zip(extents, payloads, strict=True)))
        if written < policy.write_quorum:
            raise DeviceError(
                f"only {written} of {policy.width} fragments of a stripe could be written "
                f"({policy.write_quorum} needed); devices down: {sorted(self.health.down)}"
            )
        return _segment(policy, size, extents, sizes, crcs)

    async def _write_fragments(self, writes: list[tuple[Extent, WriteData]]) -> int:
        """Write each fragment to its device, all at once; return how many were written.
        A device that fails is marked down (its fragment is owed).

        Raises:
            NoSpace: the filesystem under a device file is full (nothing marked down).
        """
        written = 0
        full: list[NoSpace] = []

        async def one(extent: Extent, payload: WriteData) -> None:
            nonlocal written
            device_index = extent.device_index
            if not self.usable(device_index):
                return  # owed: placed on a down device
            try:
                await self.devices[device_index].write(extent.offset_bytes, payload)
            except NoSpace as exc:
                full.append(exc)
                return
            except (OSError, ObjfsError) as exc:
                self.health.mark_down(device_index, f"write failed: {exc}")
                return
            self._dirty.add(device_index)
            written += 1

        async with trio.open_nursery() as nursery:
            for extent, payload in writes:
                nursery.start_soon(one, extent, payload)
        if full:
            raise full[0]
        return written

    def discard(self, segments: Sequence[Segment]) -> None:
        """Free segments that were written but never made it into the index."""
        if self.placer is not None:
            self.placer.discard(segments)  # pending on their nodes: freed when told
            return
        for segment in segments:
            for fragment in segment.fragments:
                self.space.free_extent(fragment.extent)

    async def flush_dirty(self) -> None:
        """Before a WAL batch: persist a grown owed mask, then flush every device
        written since its last flush (in parallel). A device whose flush fails is
        marked down; the batch fails only if that leaves a stripe short (not
        knowable per stripe here, so: only if fewer than k devices remain up).

        Callers in a cluster run it concurrently (one per record proposed); each
        returns only once every write made before its call is flushed."""
        async with self._flushing:
            await self._flush_dirty_locked()

    async def _flush_dirty_locked(self) -> None:
        if self.health.owed_unpersisted() and self._persist_owed is not None:
            await self._persist_owed(self.health.owed_mask)
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        failed: list[str] = []

        async def flush(device_index: int) -> None:
            try:
                await self.devices[device_index].flush()
            except (OSError, ObjfsError) as exc:
                failed.append(f"{self.devices[device_index].path}: flush failed: {exc}")
                self.health.mark_down(device_index, f"flush failed: {exc}")

        async with trio.open_nursery() as nursery:
            for device_index in sorted(dirty):
                nursery.start_soon(flush, device_index)
        if failed:
            if len(self.health.up) < self.policy.write_quorum or self.policy.width == 1:
                raise DeviceError(failed[0])
            if self._persist_owed is not None:
                await self._persist_owed(self.health.owed_mask)

    # -- reading ---------------------------------------------------------------------

    async def read_segments(
        self, segments: Sequence[Segment]
    ) -> list[bytes | erasure.SegmentBytes]:
        """The bytes of each segment, from verified fragments.

        Reads each segment's data fragments (on devices that are up); any that
        fails its checksum or its read is replaced by the next fragment in turn,
        and the segment is decoded from the k it has. A segment still short of k
        then tries the fragments on nodes skipped lately for a failed call (one
        timeout must not make intact bytes unreadable). Large reads are split over
        up to `parallel_reads` hops per device, because one thread keeps a virtio
        or NVMe queue only one request deep.

        Raises:
            Corrupted: a segment has fewer than k intact fragments.
        """
        good: list[dict[int, bytes]] = [{} for _ in segments]
        tried: list[set[int]] = [set() for _ in segments]
        while True:
            wanted: list[tuple[int, int]] = []  # (segment position, fragment number)
            for position, segment in enumerate(segments):
                need = segment.data_fragments - len(good[position])
                for number in range(len(segment.fragments)):
                    if need <= 0:
                        break
                    if number in tried[position]:
                        continue
                    tried[position].add(number)
                    if self.readable(segment.fragments[number].extent.device_index):
                        wanted.append((position, number))
                        need -= 1
            if not wanted:
                break
            for (position, number), data in zip(
                wanted, await self._read_fragments(segments, wanted), strict=True
            ):
                if data is not None:
                    good[position][number] = data
        skipped = [
            (position, number)
            for position, segment in enumerate(segments)
            if len(good[position]) < segment.data_fragments
            for number, fragment in enumerate(segment.fragments)
            if number not in good[position] and self._skipped(fragment.extent.device_index)
        ]
        if skipped:
            for (position, number), data in zip(
                skipped, await self._read_fragments(segments, skipped), strict=True
            ):
                if data is not None:
                    good[position][number] = data
        damaged = [
            segment
            for position, segment in enumerate(segments)
            if len(good[position]) < segment.data_fragments
        ]
        if damaged:
            self.health.unreadable_segments += len(damaged)
            segment = damaged[0]
            raise Corrupted(
                f"segment at device {segment.fragments[0].extent.device_index} offset "
                f"{segment.fragments[0].extent.offset_bytes}: fewer than "
                f"{segment.data_fragments} of its {len(segment.fragments)} fragments are "
                "intact; its bytes cannot be given back"
            )
        return await self._decode_all(segments, good)

    async def read_segment_range(
        self, segment: Segment, start_bytes: int, end_bytes: int
    ) -> tuple[int, bytes | erasure.SegmentBytes]:
        """Bytes of a segment covering at least [start_bytes, end_bytes), as (where
        they start in the segment, bytes): for an erasure-coded segment only the
        data fragments that hold the range (a 4 KiB read of a 4+2 segment reads one
        1 MiB fragment, not four). If one of them is unreadable or damaged, the
        whole segment is read and rebuilt instead.

        Raises:
            Corrupted: the segment has fewer than k intact fragments.
        """
        if segment.scheme == erasure.SCHEME_REPLICAS or start_bytes >= end_bytes:
            return 0, (await self.read_segments([segment]))[0]
        codec = _codec_of(segment)
        payload = segment.fragments[0].size_bytes - codec.header_bytes
        first, last = start_bytes // payload, (end_bytes - 1) // payload
        numbers = list(range(first, min(last, segment.data_fragments - 1) + 1))
        if not codec.systematic or not all(
            self.readable(segment.fragments[n].extent.device_index) for n in numbers
        ):
            return 0, (await self.read_segments([segment]))[0]
        datas = await self._read_fragments([segment], [(0, n) for n in numbers])
        if any(data is None for data in datas):
            return 0, (await self.read_segments([segment]))[0]
        header = codec.header_bytes
        base = first * payload
        views = [memoryview(data)[header:] for data in datas if data is not None]
        return base, erasure.SegmentBytes(views, segment.size_bytes - base)

    async def _read_fragments(
        self, segments: Sequence[Segment], wanted: list[tuple[int, int]], *, report: bool = True
    ) -> list[bytes | None]:
        """Each wanted fragment's bytes if it reads back and matches its checksum,
        else None (if `report`: logged, counted, the segment queued for heal)."""
        per_device: dict[int, list[int]] = defaultdict(list)
        for slot, (position, number) in enumerate(wanted):
            per_device[segments[position].fragments[number].extent.device_index].append(slot)
        groups: list[tuple[int, list[int]]] = []
        for device_index, slots in per_device.items():
            total = sum(segments[wanted[s][0]].fragments[wanted[s][1]].size_bytes for s in slots)
            count = max(1, min(self.parallel_reads, total // _SPLIT_READS_ABOVE_BYTES))
            for part in range(count):
                groups.append((device_index, slots[part::count]))
        results: list[bytes | None] = [None] * len(wanted)

        async def read_group(device_index: int, slots: list[int]) -> None:
            fragments = [segments[wanted[s][0]].fragments[wanted[s][1]] for s in slots]
            try:
                datas = await self._reading_device(device_index).read_many(
                    [(f.extent.offset_bytes, f.size_bytes) for f in fragments]
                )
            except (OSError, ObjfsError) as exc:
                for slot in slots:
                    if report:
                        self._bad_fragment(segments[wanted[slot][0]], wanted[slot][1], str(exc))
                return
            if sum(len(data) for data in datas) >= _CHECKSUM_OFF_LOOP_BYTES:
                # ~15 GB/s, but a few MiB would still hold the loop for 0.1+ ms.
                crcs = await trio.to_thread.run_sync(_checksums, datas)
            else:
                crcs = _checksums(datas)
            for slot, fragment, data, crc in zip(slots, fragments, datas, crcs, strict=True):
                if crc == fragment.crc32c:
                    results[slot] = data
                elif report:
                    self._bad_fragment(segments[wanted[slot][0]], wanted[slot][1], "bad checksum")

        if len(groups) == 1:  # the common case: no nursery, one thread hop
            await read_group(*groups[0])
        else:
            async with trio.open_nursery() as nursery:
                for device_index, slots in groups:
                    nursery.start_soon(read_group, device_index, slots)
        return results

    def _bad_fragment(self, segment: Segment, number: int, why: str) -> None:
        extent = segment.fragments[number].extent
        self.health.bad_fragments += 1
        log.error(
            "fragment %d of a segment at device %d offset %d (%d bytes): %s",
            number,
            extent.device_index,
            extent.offset_bytes,
            segment.fragments[number].size_bytes,
            why,
        )
        if len(segment.fragments) <= 1:
            return
        if self.own(extent.device_index):
            self.health.queue_heal(segment)
        else:
            self.on_remote_damage(segment, number)

    async def _decode_all(
        self, segments: Sequence[Segment], good: list[dict[int, bytes]]
    ) -> list[bytes | erasure.SegmentBytes]:
        """Each segment's bytes from its intact fragments: for whole copies one of
        them; with all k data fragments of a systematic code their payloads as
        they are (no copy); otherwise a pyeclib decode (in a worker thread)."""
        results: list[bytes | erasure.SegmentBytes] = [b""] * len(segments)
        coded: list[int] = []
        for position, segment in enumerate(segments):
            fragments = good[position]
            k = segment.data_fragments
            if any(n >= k for n in fragments):
                self.health.degraded_reads += 1
            if segment.scheme == erasure.SCHEME_REPLICAS:
                results[position] = next(iter(fragments.values()))[: segment.size_bytes]
                continue
            codec = _codec_of(segment)
            if erasure.can_assemble_without_decode(codec, fragments):
                results[position] = erasure.assemble(codec, fragments, segment.size_bytes)
            else:
                coded.append(position)
        if coded:

            def decode() -> float:
                started = time.perf_counter()
                for position in coded:
                    segment = segments[position]
                    codec = _codec_of(segment)
                    results[position] = erasure.assemble(codec, good[position], segment.size_bytes)
                return (time.perf_counter() - started) / len(coded)

            seconds = await trio.to_thread.run_sync(decode)
            for _ in coded:
                self.decode_seconds.observe(seconds)
        return results

    # -- checking and healing --------------------------------------------------------

    async def check_segment(
        self, segment: Segment, *, repair: bool, devices: set[int] | None = None
    ) -> SegmentCheck:
        """Read and verify the fragments of a segment on this node's devices that
        are up (only those on `devices`, if given: owed devices, whose missing
        fragments are expected and not reported as damage); with `repair`, rebuild
        the damaged ones from intact ones (read as needed, in a cluster from other
        nodes too) and write them back in place: same extent, same bytes, same
        checksum. `flush_healed` makes them durable. Other nodes' fragments are
        theirs to check: each node heals only its own.

        The caller pins the segment, so its extents cannot be freed and reused
        while this writes to them.
        """
        check = SegmentCheck()
        targets: list[int] = []
        for number, fragment in enumerate(segment.fragments):
            device_index = fragment.extent.device_index
            if not self.own(device_index) or (devices is not None and device_index not in devices):
                continue
            if self.usable(device_index):
                targets.append(number)
            else:
                check.skipped.append(number)
        intact: dict[int, bytes] = {}
        await self._check_fragments(segment, targets, intact, check, report=devices is None)
        if not check.bad and not (devices is None and check.skipped):
            return check
        # Damage (or, for a whole-segment check, fragments out of reach): is there
        # still k intact? Read the other fragments until there is.
        others = [
            n
            for n in range(len(segment.fragments))
            if n not in targets and self.readable(segment.fragments[n].extent.device_index)
        ]
        while len(intact) < segment.data_fragments and others:
            batch = others[: segment.data_fragments - len(intact)]
            others = others[len(batch) :]
            await self._check_fragments(segment, batch, intact, check)
        if len(intact) < segment.data_fragments:
            # Lost, unless enough of it is on nodes out of reach for now.
            away = [
                n
                for n in range(len(segment.fragments))
                if not self.own(segment.fragments[n].extent.device_index)
                and not self.readable(segment.fragments[n].extent.device_index)
            ]
            if len(intact) + len(away) >= segment.data_fragments:
                check.skipped.extend(away)
            else:
                check.unrecoverable = True
            return check
        if repair and check.bad:
            await self._rebuild(segment, intact, check)
        return check

    async def _check_fragments(
        self,
        segment: Segment,
        numbers: list[int],
        intact: dict[int, bytes],
        check: SegmentCheck,
        *,
        report: bool = True,
    ) -> None:
        if not numbers:
            return
        datas = await self._read_fragments([segment], [(0, n) for n in numbers], report=report)
        for number, data in zip(numbers, datas, strict=True):
            check.fragments_checked += 1
            check.bytes_read += segment.fragments[number].size_bytes
            if data is None:
                check.bad.append(number)
            else:
                intact[number] = data

    async def _rebuild(
        self, segment: Segment, intact: dict[int, bytes], check: SegmentCheck
    ) -> None:
        parity = len(segment.fragments) - segment.data_fragments
        codec = erasure.codec(segment.scheme, segment.data_fragments, parity)
        # Another node's damaged fragment (met while reading for this one) is
        # that node's to heal: it has been told.
        bad = [n for n in check.bad if self.usable(segment.fragments[n].extent.device_index)]
        if not bad:
            return

        def rebuild() -> list[bytes]:
            return codec.reconstruct(intact, bad)

        rebuilt = await trio.to_thread.run_sync(rebuild)
        for number, data in zip(bad, rebuilt, strict=True):
            fragment = segment.fragments[number]
            extent = fragment.extent
            if len(data) != fragment.size_bytes or crc32c.crc32c(data) != fragment.crc32c:
                log.error(
                    "fragment %d rebuilt for the segment at device %d offset %d does not "
                    "match its checksum; not written",
                    number,
                    segment.fragments[0].extent.device_index,
                    segment.fragments[0].extent.offset_bytes,
                )
                continue
            try:
                await self.devices[extent.device_index].write(extent.offset_bytes, data)
            except (OSError, ObjfsError) as exc:
                self.health.mark_down(extent.device_index, f"heal write failed: {exc}")
                continue
            self._healed_dirty.add(extent.device_index)
            check.repaired.append(number)
            self.health.healed_fragments += 1
            log.debug(
                "healed fragment %d of the segment at device %d offset %d",
                number,
                segment.fragments[0].extent.device_index,
                segment.fragments[0].extent.offset_bytes,
            )

    async def flush_healed(self) -> bool:
        """Flush every device a heal wrote to since the last call (kept apart from
        the WAL's own set, which only the WAL committer may drain). Returns False
        if a flush failed (that device is then down, and its heals not durable)."""
        dirty, self._healed_dirty = self._healed_dirty, set()
        ok = True
        for device_index in sorted(dirty):
            try:
                await self.devices[device_index].flush()
            except (OSError, ObjfsError) as exc:
                self.health.mark_down(device_index, f"flush after heal failed: {exc}")
                ok = False
        return ok


def _first_error(errors: Sequence[ObjfsError]) -> ObjfsError:
    """The one error to raise for segments that failed at once: NoSpace if any
    (what the user can act on: delete something), else the first."""
    return next((error for error in errors if isinstance(error, NoSpace)), errors[0])


def _checksums(datas: Sequence[bytes]) -> list[int]:
    return [int(crc32c.crc32c(data)) for data in datas]


def _codec_of(segment: Segment) -> erasure.PyECLib:
    """The pyeclib codec of an erasure-coded (k >= 2) segment."""
    codec = erasure.codec(
        segment.scheme, segment.data_fragments, len(segment.fragments) - segment.data_fragments
    )
    assert isinstance(codec, erasure.PyECLib)
    return codec


def _segment(
    policy: erasure.Policy, size: int, extents: list[Extent], sizes: list[int], crcs: list[int]
) -> Segment:
    """The segment of a stripe stored with `policy`: fragment n at extents[n]."""
    return Segment(
        size,
        tuple(
            Fragment(extent, fragment_size, crc)
            for extent, fragment_size, crc in zip(extents, sizes, crcs, strict=True)
        ),
        policy.data_fragments,
        policy.scheme,
    )


def _fragment_bytes(policy: erasure.Policy, size_bytes: int) -> int:
    """The stored size of each fragment of a stripe of `size_bytes`."""
    if policy.scheme == erasure.SCHEME_REPLICAS:
        return size_bytes
    codec = erasure.codec(policy.scheme, policy.data_fragments, policy.parity_fragments)
    assert isinstance(codec, erasure.PyECLib)
    return codec.fragment_bytes(size_bytes)


async def _crc_off_loop(view: memoryview) -> int:
    if len(view) < 64 * 1024:
        return int(crc32c.crc32c(view))
    return await trio.to_thread.run_sync(lambda: int(crc32c.crc32c(view)))


def _timed(function: Callable[..., T], *args: Any) -> tuple[T, float]:
    """Call `function` (in a worker thread) and say how long it took; the caller
    records it on the event loop, where the histograms live."""
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started
