"""objfs.store.wal — the write-ahead log: frames, the ring, group commit, and the scan.

The WAL is a ring in the WAL region of every metadata device (the same bytes on
each: a mirror). Positions are *logical* byte counts that only grow; the byte
lives at `position % wal_size`. A record that would not fit before the end of the
region is preceded by a WRAP frame and starts the next lap. One committer task
writes each batch of waiting records with one write and one flush per device,
then applies them in order, then wakes their writers (docs/concurrency.md).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, final

import crc32c
import trio

from objfs.errors import DeviceError, EntityTooLarge, ObjfsError, ReadOnly, Unavailable
from objfs.store.device import BlockDevice, WriteData, round_down
from objfs.store.records import Record, RecordType, Wrap, decode_record, encode_record
from objfs.store.stats import batch_histogram, latency_histogram
from objfs.store.types import BLOCK_SIZE_BYTES, Lsn

log = logging.getLogger(__name__)

# frame := crc32c u32 | length u32 | lsn u64 | type u8 | 3 zero bytes | payload[length]
# The checksum covers everything after itself: a frame is valid only whole.
_HEADER = struct.Struct("<IIQB3x")
HEADER_BYTES = _HEADER.size  # 20
_WRAP_PAYLOAD = encode_record(Wrap())[1]
WRAP_FRAME_BYTES = HEADER_BYTES + len(_WRAP_PAYLOAD)  # 21: a frame must leave room for one


def encode_frame(lsn: int, record_type: int, payload: bytes, salt: int) -> bytes:
    """One frame. `salt` seeds the checksum: it differs per format of a node, so
    frames left by an earlier format of the same device never pass as valid."""
    body = _HEADER.pack(0, len(payload), lsn, record_type)[4:] + payload
    return struct.pack("<I", crc32c.crc32c(body, salt)) + body


def max_record_bytes(wal_size_bytes: int) -> int:
    """The largest payload the WAL takes: an eighth of the ring, so batches always fit."""
    return wal_size_bytes // 8


def next_lap(position: int, wal_size_bytes: int) -> int:
    return (position // wal_size_bytes + 1) * wal_size_bytes


@dataclass
class ScannedRecord:
    lsn: Lsn
    record: Record
    end_position: int  # logical position just after this frame


@dataclass
class ScanResult:
    records: list[ScannedRecord]
    end_position: int
    next_lsn: Lsn
    frames: int


async def scan(
    device: BlockDevice,
    wal_offset_bytes: int,
    wal_size_bytes: int,
    *,
    start_position: int,
    start_lsn: int,
    salt: int,
    chunk_bytes: int = 8 * 1024 * 1024,
) -> ScanResult:
    """Read the chain of valid frames from `start_position`, expecting `start_lsn` first.

    The chain ends at the first frame that is torn, has a bad checksum, or has not
    the next sequence number (a stale frame of an earlier lap). WRAP frames are
    followed to the next lap and not returned.
    """
    records: list[ScannedRecord] = []
    position, lsn, frames = start_position, start_lsn, 0
    cached_start, cached = 0, b""  # bytes at physical [cached_start, cached_start + len)

    async def bytes_at(physical: int, count: int) -> bytes:
        nonlocal cached_start, cached
        if not (cached_start <= physical and physical + count <= cached_start + len(cached)):
            start = round_down(physical)
            length = min(max(chunk_bytes, physical + count - start), wal_size_bytes - start)
            cached = await device.read(wal_offset_bytes + start, length)
            cached_start = start
        return cached[physical - cached_start : physical - cached_start + count]

    limit_bytes = max_record_bytes(wal_size_bytes)
    while position - start_position < wal_size_bytes:
        physical = position % wal_size_bytes
        if physical + HEADER_BYTES > wal_size_bytes:
            break  # the writer always leaves room for a WRAP frame: nothing valid here
        stored_crc, length, frame_lsn, record_type = _HEADER.unpack(
            await bytes_at(physical, HEADER_BYTES)
        )
        if (
            frame_lsn != lsn
            or length > limit_bytes
            or physical + HEADER_BYTES + length > wal_size_bytes
        ):
            break
        frame = await bytes_at(physical, HEADER_BYTES + length)
        if crc32c.crc32c(frame[4:], salt) != stored_crc:
            break
        record = decode_record(record_type, frame[HEADER_BYTES:])
        frames += 1
        lsn += 1
        if isinstance(record, Wrap):
            position = next_lap(position, wal_size_bytes)
            continue
        position += HEADER_BYTES + length
        records.append(ScannedRecord(Lsn(lsn - 1), record, position))
    return ScanResult(records, position, Lsn(lsn), frames)


@dataclass
class _Entry:
    record: Record
    record_type: RecordType
    payload: bytes
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: BaseException | None = None


@final
class Wal:
    """The WAL writer: appends are group-committed, applied in order, then acknowledged.

    Args:
        devices: the metadata devices (by device index); every batch goes to all of
            them. One that fails a write is dropped and `mirror_failed` told; the
            WAL fails only when no mirror is left.
        apply: called on the event loop for each durable record, in LSN order;
            what it returns (or the ObjfsError it raises) goes to the appender.
        before_write: awaited before each batch is written: flushes the data
            devices, so no durable record can point at bytes that are not.
        request_checkpoint: called when the ring is filling up.
    """

    def __init__(
        self,
        devices: Mapping[int, BlockDevice],
        *,
        wal_offset_bytes: int,
        wal_size_bytes: int,
        next_lsn: int,
        tail_position: int,
        head_position: int,
        tail_block: bytes,
        salt: int,
        apply: Callable[[Lsn, Record], Any],
        before_write: Callable[[], Awaitable[None]],
        request_checkpoint: Callable[[], None],
        mirror_failed: Callable[[int, str], None] = lambda index, reason: None,
    ) -> None:
        assert len(tail_block) == tail_position % BLOCK_SIZE_BYTES
        self._devices = dict(devices)  # the mirrors still written
        self._mirror_failed = mirror_failed
        self._wal_offset = wal_offset_bytes
        self.size_bytes = wal_size_bytes
        self._next_lsn = next_lsn
        self._tail = tail_position
        self._head = head_position
        self._tail_block = tail_block
        self._salt = salt
        self._apply = apply
        self._before_write = before_write
        self._request_checkpoint = request_checkpoint
        self._queue: list[_Entry] = []
        self._inflight: list[_Entry] = []  # the batch being committed
        self._wakeup = trio.Event()
        self._space_freed = trio.Event()
        self._failure: str | None = None
        self._space_error: ObjfsError | None = None
        self._closed = False
        self.applied_lsn = Lsn(next_lsn - 1)
        self.applied_position = tail_position
        self.batches = 0
        self.flushes = 0
        self.records = 0
        self.commit_seconds = latency_histogram()  # a batch's write + flush on every mirror
        self.batch_records = batch_histogram()

    @property
    def used_bytes(self) -> int:
        return self._tail - self._head

    @property
    def failure(self) -> str | None:
        return self._failure

    def fail(self, reason: str) -> None:
        """Stop accepting records: on-disk metadata is in a state only recovery sorts out.

        Every appender still waiting is woken with ReadOnly (its record may or may
        not be on disk: recovery decides), so nobody waits on a dead committer.
        """
        if self._failure is None:
            self._failure = reason
            log.error("%s; the store is now read-only", reason)
        error = ReadOnly(f"the store is read-only: {reason}")
        for entry in self._inflight + self._queue:
            if not entry.done.is_set():
                entry.error = error
                entry.done.set()
        self._queue.clear()
        self._space_freed.set()

    def no_room(self, error: ObjfsError) -> None:
        """A checkpoint failed: a batch waiting for ring space gets `error` instead."""
        self._space_error = error
        self._space_freed.set()
        self._space_freed = trio.Event()

    def set_head(self, position: int) -> None:
        """Everything before `position` is no longer needed (a checkpoint covers it)."""
        assert self._head <= position <= self._tail
        self._head = position
        self._space_error = None  # a checkpoint succeeded: an older failure is moot
        self._space_freed.set()
        self._space_freed = trio.Event()

    async def append(self, record: Record) -> Any:
        """Make `record` durable, apply it, and return what applying it returned.

        Once queued, the record is committed even if the caller is cancelled: the
        wait is shielded, so the caller learns the outcome of what it started.

        Raises:
            ObjfsError: raised by applying the record (the index is unchanged),
                or ReadOnly when the WAL can no longer be written.
        """
        self._check_open()
        record_type, payload = encode_record(record)
        if len(payload) > max_record_bytes(self.size_bytes):
            raise EntityTooLarge(
                f"the change needs a {len(payload)}-byte record; this store's WAL takes at "
                f"most {max_record_bytes(self.size_bytes)} (format with a larger --wal-size)"
            )
        entry = _Entry(record, record_type, payload)
        self._queue.append(entry)
        self._wakeup.set()
        with trio.CancelScope(shield=True):
            await entry.done.wait()
        if entry.error is not None:
            raise entry.error
        return entry.result

    def _check_open(self) -> None:
        if self._failure is not None:
            raise ReadOnly(f"the store is read-only: {self._failure}; restart objfs to recover")
        if self._closed:
            raise Unavailable("the store is shutting down")

    def close(self) -> None:
        """Refuse new appends; the committer finishes what is queued, then returns."""
        self._closed = True
        self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The committer: one batch at a time, for as long as the store is open."""
        task_status.started()
        while True:
            if not self._queue:
                if self._closed:
                    return
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                continue
            self._inflight, self._queue = self._take_batch()
            await self._commit(self._inflight)
            self._inflight = []

    def _take_batch(self) -> tuple[list[_Entry], list[_Entry]]:
        limit = max_record_bytes(self.size_bytes)
        total, count = 0, 0
        for entry in self._queue:
            if count and total + len(entry.payload) + HEADER_BYTES > limit:
                break
            total += len(entry.payload) + HEADER_BYTES
            count += 1
        return self._queue[:count], self._queue[count:]

    async def _commit(self, batch: list[_Entry]) -> None:
        if self._failure is not None:
            self._finish(batch, ReadOnly(f"the store is read-only: {self._failure}"))
            return
        runs, new_tail, lsns, ends = self._layout(batch)
        # Keep two blocks between tail and head, so rewriting the tail's block never
        # touches a block that still holds a needed frame.
        while new_tail - self._head > self.size_bytes - 2 * BLOCK_SIZE_BYTES:
            if self._failure is not None:
                return  # fail() already answered this batch
            self._request_checkpoint()
            await self._space_freed.wait()
            if self._space_error is not None:
                # The checkpoint that would make room failed (no space for its body):
                # answer this batch with that error rather than wait forever.
                error, self._space_error = self._space_error, None
                self._finish(batch, error)
                return
        if self.used_bytes > self.size_bytes // 2:
            # Half the ring: a checkpoint moves the head to the previous one's start,
            # so under steady writes each checkpoint covers about a quarter.
            self._request_checkpoint()
        try:
            await self._before_write()
            writes: list[tuple[int, WriteData]] = [
                (self._wal_offset + physical, data) for physical, data in runs
            ]
            started = time.perf_counter()
            await self._write_mirrors(writes)
            self.commit_seconds.observe(time.perf_counter() - started)
            self.batch_records.observe(len(batch))
        except (OSError, ObjfsError) as exc:
            self.fail(f"WAL write failed: {exc}")  # answers this batch and the queue
            return
        self.batches += 1
        self.flushes += len(self._devices)
        last_physical, last_data = runs[-1]
        end_physical = last_physical + len(last_data)
        self._tail_block = last_data[round_down(end_physical) - last_physical :]
        self._tail = new_tail
        self._next_lsn = lsns[-1] + 1
        for entry, lsn, end in zip(batch, lsns, ends, strict=True):
            try:
                entry.result = self._apply(Lsn(lsn), entry.record)
            except ObjfsError as exc:
                entry.error = exc
            # Per record, so a checkpoint never pairs an index with the wrong LSN,
            # even if a later apply dies of a broken invariant.
            self.applied_lsn, self.applied_position = Lsn(lsn), end
            self.records += 1
        for entry in batch:
            entry.done.set()

    async def _write_mirrors(self, writes: list[tuple[int, WriteData]]) -> None:
        """Write and flush a batch on every mirror at once. A mirror that fails is
        dropped (the batch is durable on the others, which hold every earlier
        record too); if every mirror fails, raise the first failure."""
        failures: dict[int, Exception] = {}

        async def one(index: int, device: BlockDevice) -> None:
            try:
                await device.write_many(writes, flush=True)
            except (OSError, ObjfsError) as exc:
                failures[index] = exc

        async with trio.open_nursery() as nursery:
            for index, device in self._devices.items():
                nursery.start_soon(one, index, device)
        if len(failures) == len(self._devices):
            index, exc = next(iter(failures.items()))
            raise DeviceError(f"{self._devices[index].path}: {exc}") from exc
        for index, exc in failures.items():
            self.drop_mirror(index, f"WAL write failed: {exc}")

    def drop_mirror(self, index: int, reason: str) -> None:
        """Stop writing to a metadata device that failed (the WAL's or a checkpoint's
        write); the others carry on. Never drops the last one."""
        if index in self._devices and len(self._devices) > 1:
            log.error(
                "metadata mirror on device %d failed (%s); going on without it", index, reason
            )
            del self._devices[index]
            self._mirror_failed(index, reason)

    @property
    def mirrors(self) -> list[int]:
        """The device indexes the WAL still writes to."""
        return sorted(self._devices)

    def _finish(self, batch: list[_Entry], error: ObjfsError) -> None:
        for entry in batch:
            entry.error = error
            entry.done.set()

    def _layout(
        self, batch: list[_Entry]
    ) -> tuple[list[tuple[int, bytes]], int, list[int], list[int]]:
        """Place the batch's frames: the physical runs to write, the new tail, the LSNs.

        The first run starts at the tail's block and repeats the bytes already there
        before the tail (`_tail_block`), so an O_DIRECT write of whole blocks keeps
        them; a torn write can change only bytes that differ, which are all new.
        """
        size = self.size_bytes
        position, lsn = self._tail, self._next_lsn
        runs: list[tuple[int, bytearray]] = [
            (position % size - len(self._tail_block), bytearray(self._tail_block))
        ]
        lsns, ends = [], []
        for entry in batch:
            frame_bytes = HEADER_BYTES + len(entry.payload)
            if position % size + frame_bytes + WRAP_FRAME_BYTES > size:
                runs[-1][1].extend(encode_frame(lsn, RecordType.WRAP, _WRAP_PAYLOAD, self._salt))
                lsn += 1
                position = next_lap(position, size)
                runs.append((0, bytearray()))
            runs[-1][1].extend(encode_frame(lsn, entry.record_type, entry.payload, self._salt))
            lsns.append(lsn)
            lsn += 1
            position += frame_bytes
            ends.append(position)
        return [(p, bytes(data)) for p, data in runs if data], position, lsns, ends
