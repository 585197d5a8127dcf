"""Regression tests for the durability edges found while documenting the on-disk format.

Goal: each problem a reviewer reproduced (scripts in /tmp/objfs-doc/, named in
each test's docstring) stays fixed. Whatever a half-done pointer write, a rotten
or unparseable checkpoint, a dead committer, a full device, an interrupted
format or a torn WAL batch leaves behind, the store that opens afterwards holds
every acknowledged change, never brings back a change it once dropped, answers
every caller (no hang), raises the documented error type, and passes fsck.

Method: stores on in-memory devices (`MemoryDevice`, 16 MiB, a 1 MiB WAL)
wrapped in a `FaultyDevice` that can withhold flushes (the writes stay pending,
where `crash()` can lose them), let only a number of further flushes land (a
power cut between the phases of `format`), fail writes at chosen offsets, and
record every write that has not been flushed, so a test can build the image of a
device that wrote the *later* blocks of a batch but not the earlier ones (a
device may reorder writes before a flush). Tests assert on bytes read back, on
bytes of the devices (pointer slots, WAL ring), on error types, and on
`check_open_store(store, verify_data=True)` after every recovery.

Every store is opened through `opened()`, which bounds it in time: the test body
runs under `trio.fail_after(12)`, and since a WAL append waits *shielded* from
cancellation, a watchdog also fails the WAL after 10 s (which wakes every
shielded waiter) and turns the hang into an AssertionError. Should even that not
reach a waiter (a regression of `Wal.fail`), `faulthandler` ends the run with
every thread's traceback 20 s later, rather than let it hang.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import functools
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import crc32c
import msgpack
import pytest
import store_helpers
import trio
import trio.testing
from store_helpers import payload

from objfs.config import StoreConfig
from objfs.errors import DeviceError, NoSpace, ReadOnly
from objfs.store import Store, open_store
from objfs.store.checkpoint import CheckpointPointer, decode_pointer
from objfs.store.device import BlockDevice, DeviceStatistics, WriteData, round_down, round_up
from objfs.store.format import format_devices
from objfs.store.fsck import FsckReport, check_open_store
from objfs.store.records import CreateBucket, PutVersion, Record
from objfs.store.superblock import (
    CHECKPOINT_SLOT_OFFSETS_BYTES,
    SUPERBLOCK_A_OFFSET_BYTES,
    SUPERBLOCK_B_OFFSET_BYTES,
    Superblock,
    decode_superblock,
    default_wal_size_bytes,
    plan_layout,
)
from objfs.store.testing import FaultPlan, MemoryDevice
from objfs.store.types import BLOCK_SIZE_BYTES, BucketName, Lsn, MiB
from objfs.store.wal import Wal, next_lap

BUCKET = "edges"
put_many = functools.partial(store_helpers.put_many, bucket=BUCKET)
advance_wal_to = functools.partial(store_helpers.advance_wal_to, bucket=BUCKET)
DEVICE_BYTES = 16 * MiB
WAL_BYTES = 1 * MiB
# Checkpoints only when asked for, or when the WAL fills (never by the clock).
CONFIG = StoreConfig(fragment_size_bytes=256 * 1024, checkpoint_interval_ms=86_400_000)
DEADLINE_SECONDS = 10.0
HARD_LIMIT_EXTRA_SECONDS = 20.0
FIXED_NS = 1_700_000_000_000_000_000


def fixed_clock() -> int:
    """A clock that never moves, so records of equal content have equal lengths."""
    return FIXED_NS


def as_bytes(data: WriteData) -> bytes:
    """What a write puts on a device: its bytes, padded with zeros to whole blocks."""
    if isinstance(data, tuple):
        buffer, length = data
        raw = bytes(buffer.view[:length])
    else:
        raw = bytes(data)
    return raw + bytes(round_up(len(raw)) - len(raw))


class FaultyDevice:
    """A BlockDevice over a MemoryDevice, with faults a test switches on.

    flushes_left: how many more flushes land (None: all). Once it is 0, flushes do
        nothing: writes stay pending in the MemoryDevice, where a crash loses them.
    fail_write: writes at offsets it accepts raise OSError(EIO) (nothing is written).
    gate: while set to an Event, writes wait for it (to hold a batch in flight).
    unflushed: every write since the last flush that landed, as (offset, bytes),
        for building images that keep any subset of them (`image_with`).
    power_cut_at_withheld_flush: the first withheld flush is the moment of a power
        cut, so writes after it are not recorded (they would never have been issued).
    """

    def __init__(self, inner: MemoryDevice) -> None:
        self.inner = inner
        self.path = inner.path
        self.size_bytes = inner.size_bytes
        self.flushes_left: int | None = None
        self.fail_write: Callable[[int], bool] = lambda offset: False
        self.unflushed: list[tuple[int, bytes]] = []
        self.gate: trio.Event | None = None
        self.power_cut_at_withheld_flush = False
        self._cut = False

    async def read(self, offset_bytes: int, length_bytes: int) -> bytes:
        return await self.inner.read(offset_bytes, length_bytes)

    async def read_many(self, requests: Sequence[tuple[int, int]]) -> list[bytes]:
        return await self.inner.read_many(requests)

    def _flush_lands(self) -> bool:
        if self.flushes_left is None:
            return True
        if self.flushes_left == 0:
            self._cut = self.power_cut_at_withheld_flush
            return False
        self.flushes_left -= 1
        return True

    async def write(self, offset_bytes: int, data: WriteData) -> None:
        await self.write_many([(offset_bytes, data)])

    async def write_many(
        self, writes: Sequence[tuple[int, WriteData]], *, flush: bool = False
    ) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if any(self.fail_write(offset) for offset, _ in writes):
            await trio.lowlevel.checkpoint()
            raise OSError(5, f"{self.path}: injected EIO")
        recorded = not self._cut
        lands = flush and self._flush_lands()
        await self.inner.write_many(writes, flush=lands)
        if lands:
            self.unflushed.clear()
        elif recorded:
            self.unflushed.extend((offset, as_bytes(data)) for offset, data in writes)

    async def flush(self) -> None:
        if self._flush_lands():
            await self.inner.flush()
            self.unflushed.clear()
        else:
            await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def statistics(self) -> DeviceStatistics:
        return self.inner.statistics()

    def hold(self) -> None:
        self.flushes_left = 0

    def crash(self, plan: FaultPlan | None = None) -> FaultyDevice:
        """What a power cut now leaves (see `MemoryDevice.crash`), as a new device."""
        return FaultyDevice(self.inner.crash(plan))

    def image_with(self, writes: Sequence[tuple[int, bytes]]) -> FaultyDevice:
        """A power cut that lands exactly `writes` (in that order) of the unflushed ones."""
        image = bytearray(self.inner.durable)
        for offset, data in writes:
            image[offset : offset + len(data)] = data
        return FaultyDevice(MemoryDevice.from_image(image, path=self.path))


async def formatted(
    count: int = 1, *, device_bytes: int = DEVICE_BYTES
) -> tuple[list[FaultyDevice], Superblock]:
    """`count` freshly formatted devices (all hold metadata when count <= 3)."""
    devices = [FaultyDevice(MemoryDevice(device_bytes, path=f"mem{i}")) for i in range(count)]
    superblocks = await format_devices(devices, wal_size_bytes=WAL_BYTES)
    return devices, superblocks[0]


def crash_all(devices: Sequence[FaultyDevice], plan: FaultPlan | None = None) -> list[FaultyDevice]:
    return [device.crash(plan) for device in devices]


def wake_every_appender(wal: Wal, reason: str) -> None:
    """Fail the WAL, which answers every appender waiting (shielded) on it with ReadOnly.

    Should `Wal.fail` ever stop doing that, the waiters are answered here directly
    (private state, touched only once a test has already failed), so that a
    regression fails the test instead of hanging the run.
    """
    wal.fail(reason)
    error = ReadOnly(reason)
    for entry in [*getattr(wal, "_inflight", ()), *getattr(wal, "_queue", ())]:
        if not entry.done.is_set():
            entry.error = error
            entry.done.set()
    space_freed = getattr(wal, "_space_freed", None)
    if space_freed is not None:
        space_freed.set()


@asynccontextmanager
async def opened(
    devices: Sequence[BlockDevice],
    config: StoreConfig = CONFIG,
    *,
    clock: Callable[[], int] = time.time_ns,
    seconds: float = DEADLINE_SECONDS,
) -> AsyncIterator[Store]:
    """`open_store`, bounded in time (see the module docstring)."""
    stores: list[Store] = []
    fired = False

    async def watchdog() -> None:
        nonlocal fired
        await trio.sleep(seconds)
        fired = True
        for store in stores:
            wake_every_appender(store.wal, f"the test's {seconds} s deadline passed")

    error: BaseException | None = None
    # The last resort, for a waiter nothing above can reach: end the whole run, with
    # every thread's traceback, rather than hang it.
    faulthandler.dump_traceback_later(seconds + HARD_LIMIT_EXTRA_SECONDS, exit=True)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watchdog)
            try:
                with trio.fail_after(seconds + 2):
                    async with open_store(config, devices=devices, clock=clock) as store:
                        stores.append(store)
                        yield store
            except BaseException as exc:
                error = exc  # re-raised outside the nursery: not wrapped in a group
            nursery.cancel_scope.cancel()
    finally:
        faulthandler.cancel_dump_traceback_later()
    if fired:
        raise AssertionError(f"the store was still busy after {seconds} s (a hang)") from error
    if error is not None:
        raise error


async def assert_fsck_clean(store: Store) -> FsckReport:
    # A background checkpoint between allocating its body and writing its pointer
    # holds extents nothing references yet; with in-memory devices it is never
    # suspended there once every task is blocked, and the space check is synchronous.
    await trio.testing.wait_all_tasks_blocked()
    report = await check_open_store(store, verify_data=True)
    assert report.clean, report.render()
    return report


async def assert_objects(store: Store, expected: dict[str, bytes]) -> None:
    """The bucket holds exactly these keys, each with exactly these bytes."""
    keys = [info.key for info in store.list_objects(BUCKET, limit=10_000).objects]
    assert keys == sorted(expected)
    for key, data in expected.items():
        assert await store.get_object(BUCKET, key) == data, key


def slot_blocks(device: FaultyDevice) -> list[bytes]:
    """The two pointer slot blocks as they are durably on the device."""
    return [
        bytes(device.inner.durable[offset : offset + BLOCK_SIZE_BYTES])
        for offset in CHECKPOINT_SLOT_OFFSETS_BYTES
    ]


async def formatted_superblock(device: BlockDevice) -> Superblock:
    block = await device.read(SUPERBLOCK_A_OFFSET_BYTES, BLOCK_SIZE_BYTES)
    return decode_superblock(block, path=device.path)


def newest_pointer(store: Store) -> CheckpointPointer:
    return max(store.pointers.values(), key=lambda pointer: pointer.generation)


# -- 1. a pointer write that reached only some mirrors -------------------------------


async def test_pointer_write_that_reached_one_mirror_leaves_no_stale_pointer_behind() -> None:
    """stale_repro.py: the pointer write of a checkpoint fails on mirror 1 only, so
    slot 0 holds generation 5 on mirror 0 but still generation 3 on mirror 1. The
    next writable open must make both mirrors hold the same pointers; otherwise the
    body of generation 3 is freed, reused by new data, and the open after that finds
    generation 3 again and refuses to rebuild the space map (overlapping extents)."""
    devices, _ = await formatted(2)
    expected: dict[str, bytes] = {}
    async with opened(devices) as store:
        await store.create_bucket(BUCKET)
        for i in range(3):
            expected[f"k{i}"] = payload(f"k{i}", 50_000)
            await store.put_object(BUCKET, f"k{i}", expected[f"k{i}"])
            assert await store.checkpoint()
        before = newest_pointer(store)
        superseded = store.pointers[1 - before.slot]  # the slot the next checkpoint takes
        devices[1].fail_write = lambda offset: offset in CHECKPOINT_SLOT_OFFSETS_BYTES
        expected["k3"] = payload("k3", 50_000)
        await store.put_object(BUCKET, "k3", expected["k3"])
        assert await store.checkpoint()  # mirror 1 is dropped; mirror 0 holds it
        assert store.health.statistics().down_devices == (1,)
        image = crash_all(devices, FaultPlan(keep_writes=None))
    slot = superseded.slot
    assert decode_pointer(slot_blocks(image[0])[slot]) != superseded  # the new one landed
    assert decode_pointer(slot_blocks(image[1])[slot]) == superseded  # here it did not
    async with opened(image) as store:
        # Recovery rewrote the slots: every mirror now holds the same two pointers.
        assert slot_blocks(image[0]) == slot_blocks(image[1])
        held = [decode_pointer(block) for block in slot_blocks(image[1])]
        assert superseded not in held
        assert {p.generation for p in held if p is not None} == {
            p.generation for p in store.pointers.values()
        }
        await assert_objects(store, expected)
        await assert_fsck_clean(store)
        expected["k4"] = payload("k4", 50_000)
        await store.put_object(BUCKET, "k4", expected["k4"])
        assert await store.checkpoint()  # frees the bodies no pointer names any more
        for i in range(8):  # small writes that take freed blocks, among them the old body's
            await store.write_at(BUCKET, "k4", i * 100, payload(f"w{i}", 100))
        expected["k4"] = await store.get_object(BUCKET, "k4")
        live = {
            (fragment.extent.device_index, fragment.extent.offset_bytes)
            for segment in store.index.referenced_segments()
            for fragment in segment.fragments
        }
        live |= {
            (e.device_index, e.offset_bytes) for p in store.pointers.values() for e in p.extents()
        }
        assert any((e.device_index, e.offset_bytes) in live for e in superseded.extents())
        await assert_fsck_clean(store)
        image = crash_all(image, FaultPlan(keep_writes=None))  # no final checkpoint
    async with opened(image) as store:
        await assert_objects(store, expected)
        await assert_fsck_clean(store)


# -- 2. the checkpoint after a fallback ------------------------------------------------


def rot_body(image: Sequence[FaultyDevice], pointer: CheckpointPointer) -> None:
    """Flip a bit in every copy of a checkpoint body (its pointer stays valid)."""
    for copy in pointer.copies:
        extent = copy[0]
        image[extent.device_index].inner.flip_bit(extent.offset_bytes + pointer.body_bytes // 2)


async def test_checkpoint_after_a_fallback_replaces_the_damaged_one_not_the_only_good_one() -> None:
    """fallback.py: the newest checkpoint's body rots, so the open falls back to the
    older one. The next checkpoint must go into the damaged one's slot: putting it
    into the older slot (the older of the two generations) overwrote the only
    checkpoint that could be read, and trimmed the WAL to the damaged one's start."""
    devices, _ = await formatted(1)
    expected: dict[str, bytes] = {}
    async with opened(devices) as store:
        await store.create_bucket(BUCKET)
        await put_many(store, expected, ["a"])
        assert await store.checkpoint()
        good = newest_pointer(store)
        await put_many(store, expected, ["b"])
        assert await store.checkpoint()
        damaged = newest_pointer(store)
        records_after_good = store.wal.applied_lsn - good.lsn
        image = crash_all(devices, FaultPlan(keep_writes=None))
    assert damaged.slot != good.slot
    rot_body(image, damaged)
    good_block = slot_blocks(image[0])[good.slot]
    assert decode_pointer(good_block) == good
    async with opened(image) as store:
        assert store.checkpointer.current == good  # fell back
        assert store.replayed_records == records_after_good
        await assert_objects(store, expected)
        await assert_fsck_clean(store)
        await put_many(store, expected, ["c"])
        assert await store.checkpoint()
        newer = newest_pointer(store)
        assert newer.slot == damaged.slot
        assert newer.generation > damaged.generation
        assert slot_blocks(image[0])[good.slot] == good_block  # the good one is untouched
        assert store.pointers == {good.slot: good, damaged.slot: newer}
        await assert_fsck_clean(store)
        image = crash_all(image, FaultPlan(keep_writes=None))
    # The new checkpoint rots too: the good one (and the WAL since it) still has it all.
    rot_body(image, newer)
    async with opened(image) as store:
        assert store.checkpointer.current == good
        await assert_objects(store, expected)
        await assert_fsck_clean(store)


# -- 3. one WAL geometry for every metadata device --------------------------------------


class SparseDevice:
    """A BlockDevice whose blocks take memory only once written (for devices of
    hundreds of MiB); unwritten bytes read as zeros. Flushes do nothing (no crashes)."""

    CHUNK_BYTES = 1 * MiB

    def __init__(self, size_bytes: int, *, path: str) -> None:
        self.path = path
        self.size_bytes = size_bytes
        self._chunks: dict[int, bytearray] = {}

    def _check(self, offset_bytes: int, length_bytes: int) -> None:
        if offset_bytes < 0 or offset_bytes + length_bytes > self.size_bytes:
            raise DeviceError(f"{self.path}: I/O outside the device")

    async def read(self, offset_bytes: int, length_bytes: int) -> bytes:
        await trio.lowlevel.checkpoint()
        self._check(offset_bytes, length_bytes)
        out = bytearray()
        position, end = offset_bytes, offset_bytes + length_bytes
        while position < end:
            chunk, within = divmod(position, self.CHUNK_BYTES)
            count = min(end - position, self.CHUNK_BYTES - within)
            data = self._chunks.get(chunk)
            out += data[within : within + count] if data is not None else bytes(count)
            position += count
        return bytes(out)

    async def read_many(self, requests: Sequence[tuple[int, int]]) -> list[bytes]:
        return [await self.read(offset, length) for offset, length in requests]

    async def write(self, offset_bytes: int, data: WriteData) -> None:
        await self.write_many([(offset_bytes, data)])

    async def write_many(
        self, writes: Sequence[tuple[int, WriteData]], *, flush: bool = False
    ) -> None:
        await trio.lowlevel.checkpoint()
        for offset_bytes, data in writes:
            raw = as_bytes(data)
            self._check(offset_bytes, len(raw))
            position = 0
            while position < len(raw):
                chunk, within = divmod(offset_bytes + position, self.CHUNK_BYTES)
                count = min(len(raw) - position, self.CHUNK_BYTES - within)
                target = self._chunks.setdefault(chunk, bytearray(self.CHUNK_BYTES))
                target[within : within + count] = raw[position : position + count]
                position += count

    async def flush(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    def statistics(self) -> DeviceStatistics:
        return DeviceStatistics(self.path, self.size_bytes, 0, 0, 0, 0, 0, direct_io=False)


async def test_format_gives_devices_of_different_sizes_one_wal_geometry() -> None:
    """walsize.py: each device got the default WAL size of its own size, but the WAL
    writer places every mirror's frames by device 0's geometry, so once the ring
    passed the smaller WAL's end it overwrote that device's data."""
    sizes = (320 * MiB, 64 * MiB)
    assert default_wal_size_bytes(sizes[0]) != default_wal_size_bytes(sizes[1])  # premise
    devices = [SparseDevice(size, path=f"sparse{i}") for i, size in enumerate(sizes)]
    superblocks = await format_devices(devices)
    wal_offset, wal_size, _, _ = plan_layout(min(sizes))
    for superblock, size in zip(superblocks, sizes, strict=True):
        assert (superblock.wal_offset_bytes, superblock.wal_size_bytes) == (wal_offset, wal_size)
        assert superblock.data_offset_bytes == wal_offset + wal_size
        assert superblock.data_offset_bytes + superblock.data_size_bytes <= size
    expected: dict[str, bytes] = {"big": payload("big", 4 * MiB)}
    async with opened(devices) as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "big", expected["big"])
        assert {
            fragment.extent.device_index
            for segment in store.index.referenced_segments()
            for fragment in segment.fragments
        } == {0, 1}  # the big object has segments on both devices
        small = payload("small", 4000)
        while store.wal.applied_position < 1.2 * wal_size:  # the ring wraps
            async with trio.open_nursery() as nursery:
                for i in range(32):  # one group commit per round: quick
                    nursery.start_soon(store.put_object, BUCKET, f"s{i:02d}", small)
        expected.update({f"s{i:02d}": small for i in range(32)})
        await assert_objects(store, expected)
        await assert_fsck_clean(store)
    async with opened(devices) as store:
        await assert_objects(store, expected)
        await assert_fsck_clean(store)


async def test_open_refuses_metadata_devices_whose_wal_regions_differ() -> None:
    """walsize.py, for stores formatted before the fix: a node whose metadata
    devices have different WAL regions must not open (DeviceError naming the device)."""
    devices, _ = await formatted(2)
    superblock = await formatted_superblock(devices[1])
    wider = dataclasses.replace(
        superblock,
        wal_size_bytes=2 * WAL_BYTES,
        data_offset_bytes=superblock.data_offset_bytes + WAL_BYTES,
        data_size_bytes=superblock.data_size_bytes - WAL_BYTES,
    )
    await devices[1].write_many(
        [
            (offset, wider.encode())
            for offset in (SUPERBLOCK_A_OFFSET_BYTES, SUPERBLOCK_B_OFFSET_BYTES)
        ],
        flush=True,
    )
    with pytest.raises(DeviceError, match=r"mem1: its WAL region"):
        async with opened(devices):
            pass


# -- 4. a committer that dies ---------------------------------------------------------


async def test_dead_committer_answers_every_waiting_appender_with_read_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """committer_death.py: applying a record raises (a broken invariant), which kills
    the WAL committer. Every appender of that batch and of the queue behind it waits
    shielded from cancellation; each must be woken with ReadOnly (its record may or
    may not be on disk) instead of waiting forever. The store's error surfaces, and
    the next open replays what reached the disk: every key whole or absent."""
    devices, _ = await formatted(1)
    queued = ["boom"] + [f"k{i:02d}" for i in range(60)]  # more than a batch (1/8 ring)
    outcomes: dict[str, str] = {}
    broken = pytest.RaisesExc(AssertionError, match="broken invariant")
    with pytest.RaisesGroup(broken, allow_unwrapped=True, flatten_subgroups=True):
        async with opened(devices) as store:
            await store.create_bucket(BUCKET)
            real_apply = store.index.apply

            def apply(record: Record) -> object:
                if isinstance(record, PutVersion) and record.key == "boom":
                    raise AssertionError("broken invariant")
                return real_apply(record)

            monkeypatch.setattr(store.index, "apply", apply)

            async def put(key: str) -> None:
                try:
                    await store.put_object(BUCKET, key, payload(key, 3000))
                    outcomes[key] = "ok"
                except ReadOnly:
                    outcomes[key] = "ReadOnly"

            async with trio.open_nursery() as nursery:
                devices[0].gate = gate = trio.Event()
                nursery.start_soon(put, "first")  # its batch waits at the gate
                await trio.testing.wait_all_tasks_blocked()
                for key in queued:  # queued in this order behind it
                    nursery.start_soon(put, key)
                    await trio.testing.wait_all_tasks_blocked()
                devices[0].gate = None
                gate.set()
            image = crash_all(devices, FaultPlan(keep_writes=None))
    assert outcomes == {"first": "ok"} | {key: "ReadOnly" for key in queued}
    async with opened(image) as store:
        present = [info.key for info in store.list_objects(BUCKET, limit=1000).objects]
        # boom's batch was written before it was applied: it is replayed whole; the
        # appenders queued behind it were never written.
        written = sorted(present)
        assert written == sorted(["first", *queued[: len(present) - 1]])
        assert "boom" in written and queued[-1] not in written
        for key in written:
            assert await store.get_object(BUCKET, key) == payload(key, 3000), key
        await assert_fsck_clean(store)
        await store.put_object(BUCKET, "after", b"after")
        assert await store.get_object(BUCKET, "after") == b"after"


# -- 5. a full WAL when the checkpoint has no room ------------------------------------


async def fill_data(store: Store, expected: dict[str, bytes]) -> int:
    """Put 1 MiB objects until the data space is full (NoSpace); how many fit."""
    for i in range(64):
        data = payload(f"big{i}", 1 * MiB)
        try:
            await store.put_object(BUCKET, f"big{i:02d}", data)
        except NoSpace:
            return i
        expected[f"big{i:02d}"] = data
    raise AssertionError("the device never filled up")


async def fill_index_until_no_space(store: Store, expected: dict[str, bytes]) -> None:
    """Small (inline) PUTs, which take no data space but grow the index, until one
    fails with NoSpace: the devices are down to the space kept for checkpoints."""
    with pytest.raises(NoSpace):
        for i in range(5000):
            data = payload(f"small{i}", 4000)
            await store.put_object(BUCKET, f"small{i:04d}", data)
            expected[f"small{i:04d}"] = data


async def test_growth_stops_with_no_space_before_the_checkpoint_could_not_fit() -> None:
    """nospace_hang.py: with data space full, small (inline) PUTs grew the index
    until its checkpoint body no longer fit; the WAL filled, and the batch waiting
    for a checkpoint to make room waited forever. Now the space kept for the next
    checkpoint body follows the body's bound (last body + WAL bytes since), and
    changes that grow the index fail with NoSpace once a metadata device is down
    to it: no hang, not read-only, and the next checkpoint always fits."""
    devices, _ = await formatted(1)
    expected: dict[str, bytes] = {}
    async with opened(devices) as store:
        await store.create_bucket(BUCKET)
        bigs = await fill_data(store, expected)
        assert bigs >= 4
        await fill_index_until_no_space(store, expected)
        assert store.wal.failure is None  # not read-only: only out of room
        assert store.space.reserve_bytes >= 2 * store.checkpointer.current.body_bytes
        with pytest.raises(NoSpace):  # still out of room: answered again, not hung
            await store.put_object(BUCKET, "one-more", b"x" * 4000)
        with trio.fail_after(10):
            assert await store.checkpoint() in (True, False)  # it fits
        await assert_objects(store, expected)
        await assert_fsck_clean(store)
        image = crash_all(devices, FaultPlan(keep_writes=None))
    async with opened(image) as store:
        await assert_objects(store, expected)
        await assert_fsck_clean(store)


async def test_a_store_out_of_room_can_always_delete_to_make_room() -> None:
    """Where the test above ends, a user frees space by deleting objects. Every
    change needs a WAL record, a full WAL needs a checkpoint, and the checkpoint
    needs room for its body: deletes (and records that free nothing, such as
    deletes of missing keys, which fill the ring) must keep working, before and
    after a restart, and then PUTs work again. (Before the reserve followed the
    body's growth, every DELETE failed with NoSpace here, for good.)"""
    devices, _ = await formatted(1)
    expected: dict[str, bytes] = {}
    async with opened(devices) as store:
        await store.create_bucket(BUCKET)
        bigs = await fill_data(store, expected)
        await fill_index_until_no_space(store, expected)
        with trio.fail_after(30):
            for _ in range(1000):  # several laps of the ring: checkpoints must fit
                await store.delete_object(BUCKET, "nothing")
        deleted = await delete_until_no_space(store, [f"big{i:02d}" for i in range(bigs // 2)])
        assert len(deleted) == bigs // 2
        image = crash_all(devices, FaultPlan(keep_writes=None))
    async with opened(image) as store:
        deleted += await delete_until_no_space(
            store, [f"big{i:02d}" for i in range(bigs // 2, bigs)]
        )
        for key in deleted:
            expected.pop(key, None)
        await store.put_object(BUCKET, "after", payload("after", 1 * MiB))
        expected["after"] = payload("after", 1 * MiB)
        await assert_objects(store, expected)
        await assert_fsck_clean(store)
    assert len(deleted) == bigs


async def delete_until_no_space(store: Store, keys: Sequence[str]) -> list[str]:
    """Delete keys in order until one fails with NoSpace; the keys deleted."""
    deleted: list[str] = []
    for key in keys:
        try:
            await store.delete_object(BUCKET, key)
        except NoSpace:
            break
        deleted.append(key)
    return deleted


async def test_no_room_reported_while_no_batch_waits_does_not_fail_a_later_batch() -> None:
    """Follow-up to nospace_hang.py: a checkpoint that failed with NoSpace while no
    batch was waiting for room (the background checkpointer also runs on an
    interval, or when the WAL is half full) must not fail a batch that later waits
    for room and gets it from a checkpoint that succeeded (`Wal.no_room`: "a batch
    waiting for ring space gets `error` instead"). Driven on the Wal alone, the
    test playing the checkpointer; the batch's wait for room is checked, not assumed."""
    device = MemoryDevice(DEVICE_BYTES)
    applied: list[Lsn] = []
    requested: list[int] = []

    async def nothing_to_flush() -> None:
        await trio.lowlevel.checkpoint()

    wal = Wal(
        {0: device},
        wal_offset_bytes=1 * MiB,
        wal_size_bytes=WAL_BYTES,
        next_lsn=1,
        tail_position=0,
        head_position=0,
        tail_block=b"",
        salt=1234,
        apply=lambda lsn, record: applied.append(lsn),
        before_write=nothing_to_flush,
        request_checkpoint=lambda: requested.append(wal.used_bytes),
    )
    record = CreateBucket(BucketName(BUCKET), "x" * 20_000, FIXED_NS)
    room_needed = WAL_BYTES - 2 * BLOCK_SIZE_BYTES  # the ring keeps two blocks free
    waited_at: list[int] = []

    async def watchdog() -> None:
        await trio.sleep(DEADLINE_SECONDS)
        wake_every_appender(wal, "the test's deadline passed")

    async def checkpointer() -> None:  # a checkpoint that succeeds, once a batch waits
        await trio.testing.wait_all_tasks_blocked()
        waited_at.append(wal.used_bytes)
        wal.set_head(wal.applied_position)

    with trio.fail_after(DEADLINE_SECONDS + 2):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watchdog)
            await nursery.start(wal.run)
            await wal.append(record)
            frame = wal.used_bytes
            wal.no_room(NoSpace("the checkpoint found no room"))  # nobody is waiting
            while wal.used_bytes + frame <= room_needed:
                await wal.append(record)
            appended = len(applied)
            nursery.start_soon(checkpointer)
            await wal.append(record)  # must wait for room, then not raise the stale NoSpace
            await wal.append(record)
            assert len(applied) == appended + 2 and wal.failure is None
            wal.close()
            nursery.cancel_scope.cancel()
    assert waited_at and waited_at[0] + frame > room_needed  # it really had to wait
    assert requested  # and asked for a checkpoint


# -- 6. a writer that runs out of space ------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["put_object", "open_writer"])
async def test_writer_that_runs_out_of_space_raises_no_space_not_buffer_error(
    streamed: bool,
) -> None:
    """buffererror.py: a PUT that ran out of data space raised BufferError instead of
    NoSpace: the aborted writer closed its segment buffers while the NoSpace
    traceback still held a view of one. The error must be NoSpace, and the failed
    PUT must give back every block it took."""
    devices, _ = await formatted(1)
    expected: dict[str, bytes] = {}
    async with opened(devices) as store:
        await store.create_bucket(BUCKET)
        for i in range(64):
            data = payload(f"big{i}", 1 * MiB)
            free = store.space.free_bytes
            try:
                if streamed:
                    async with store.open_writer(BUCKET, f"big{i:02d}") as writer:
                        for start in range(0, len(data), 100_000):  # uneven chunks
                            await writer.write(data[start : start + 100_000])
                        await writer.commit()
                else:
                    await store.put_object(BUCKET, f"big{i:02d}", data)
            except NoSpace:
                break  # anything else (BufferError, as before the fix) fails the test
            expected[f"big{i:02d}"] = data
        else:
            raise AssertionError("the device never filled up")
        assert store.space.free_bytes == free  # the failed PUT took nothing for good
        assert f"big{i:02d}" not in expected and len(expected) >= 4
        await assert_objects(store, expected)
        await assert_fsck_clean(store)
        image = crash_all(devices, FaultPlan(keep_writes=None))
    async with opened(image) as store:
        await assert_objects(store, expected)
        await assert_fsck_clean(store)


# -- 7. format over an old store, cut short ---------------------------------------------


def subsets(writes: Sequence[tuple[int, bytes]]) -> list[list[tuple[int, bytes]]]:
    """Every subset of writes, in write order: a device may land any of them before
    the flush that would have made them all durable."""
    return [
        list(chosen)
        for count in range(len(writes) + 1)
        for chosen in itertools.combinations(writes, count)
    ]


async def open_outcome(image: Sequence[FaultyDevice], old: dict[str, bytes]) -> str:
    """What opening the image gives: "refused", "old" or "new". Anything else (an
    error of another kind, a store that is neither) fails the test."""
    try:
        async with opened(image) as store:
            if store.list_buckets():
                await assert_objects(store, old)  # the old store, whole
                outcome = "old"
            else:
                assert store.index.object_count() == 0  # a freshly formatted store
                outcome = "new"
            await assert_fsck_clean(store)
    except DeviceError as exc:
        assert "not an objfs device" in str(exc), exc
        return "refused"
    return outcome


async def test_format_over_an_old_store_cut_at_any_point_never_opens_a_mixture() -> None:
    """format erases the old superblocks (flush), writes the empty store (flush),
    then writes the superblocks (flush). Cut the power after any number of those
    flushes, with any subset of the next phase's writes landed: the device opens as
    the old store untouched, as the new empty store, or not at all with a clear
    DeviceError ("not an objfs device"), never as old data under the new identity.
    (Before, one flush covered everything, so new superblocks could land without
    the new checkpoint pointer and open the old index as the new store's.)"""
    devices, _ = await formatted(1)
    old: dict[str, bytes] = {}
    async with opened(devices) as store:
        await store.create_bucket(BUCKET)
        await put_many(store, old, ["a", "b"])
        old["big"] = payload("big", 600_000)
        await store.put_object(BUCKET, "big", old["big"])
        assert await store.checkpoint()
        await put_many(store, old, ["c"])  # in the WAL only
        old_store = crash_all(devices, FaultPlan(keep_writes=None))
    seen: dict[int, set[str]] = {}
    for landed in range(4):
        device = old_store[0].crash(FaultPlan(keep_writes=None))  # a copy to format
        device.flushes_left = landed
        device.power_cut_at_withheld_flush = True
        await format_devices([device], wal_size_bytes=WAL_BYTES, force=True)
        cut_short = list(device.unflushed)
        assert bool(cut_short) == (landed < 3)  # three phases, one flush each
        seen[landed] = {
            await open_outcome([device.image_with(chosen)], old) for chosen in subsets(cut_short)
        }
    assert seen[0] == {"old", "refused"}  # erasing copy A alone leaves copy B: still old
    assert seen[1] == {"refused"}  # no superblock: whatever of the new store landed
    assert seen[2] == {"refused", "new"}
    assert seen[3] == {"new"}


async def test_format_of_two_devices_cut_on_one_opens_the_new_store_degraded() -> None:
    """The same cut on a node of two devices (a 1+1 mirror): device 0 formatted
    whole, device 1 cut after the erase. The new, empty store opens without mem1,
    reported down; with mem0 gone too it would not open at all."""
    devices, _ = await formatted(2)
    async with opened(devices) as store:
        await store.create_bucket(BUCKET)
        await put_many(store, {}, ["a"])
    devices[1].flushes_left = 1  # the erase lands; the power goes at the next flush
    await format_devices(devices, wal_size_bytes=WAL_BYTES, force=True)
    image = crash_all(devices, FaultPlan(keep_writes=0))
    async with opened(image) as store:
        assert store.health.statistics().down_devices == (1,)
        assert store.list_buckets() == []
    with pytest.raises(DeviceError, match=r"mem1: not an objfs device"):
        async with opened(image[1:]):
            pass


# -- 8. stale frames of a torn batch --------------------------------------------------


@pytest.mark.parametrize("wraps", [False, True], ids=["mid-ring", "across-the-ring-end"])
async def test_stale_frame_of_a_torn_batch_is_never_replayed_after_a_shorter_rewrite(
    wraps: bool,
) -> None:
    """A group commit of 20 inline PUTs is one multi-block write per mirror (two
    if it wraps). Power goes before its flush; mirror 0 had written only the
    *later* blocks of it (a device may reorder writes), mirror 1 nothing. Recovery
    ends the chain at the old tail, so those PUTs are gone. Then a shorter history
    (a few PUTs of the same frame length) takes the same LSNs and ends exactly
    where a frame of the torn batch starts, on a block boundary: if that stale
    frame were still on mirror 0, the next recovery would find the chain going on
    into it (the LSN it expects, a valid checksum) and bring back PUTs the store
    had dropped. Recovery must zero every block the torn batch could have written
    (the seal), on every mirror, also across the end of the ring; it once zeroed
    only the two blocks at the tail.

    Built with the wrapper: flushes withheld, so the batch's write stays pending and
    recorded; mirror 0's image lands that write's blocks from the chosen frame's
    block on. Every frame is exactly half a block long (same-length keys, a value
    size measured for it, a fixed clock), so every position is known in advance:
    mid-ring, the batch starts on a block boundary and the rewrite is six PUTs (three
    blocks: past the old two-block seal); across the ring end, it starts three
    frames before the end (two frames, then a WRAP frame), and the rewrite is four
    PUTs (two, the WRAP, two), ending one block into the next lap."""
    devices, superblock = await formatted(2)
    wal_offset, size = superblock.wal_offset_bytes, superblock.wal_size_bytes
    half = BLOCK_SIZE_BYTES // 2
    expected: dict[str, bytes] = {}
    async with opened(devices, clock=fixed_clock) as store:
        await store.create_bucket(BUCKET)
        await put_many(store, expected, ["a", "b"])
        start = store.wal.applied_position
        await store.put_object(BUCKET, "m00", bytes(1000))  # measure a frame's overhead
        value = payload("value", half - (store.wal.applied_position - start - 1000))
        expected["m00"] = bytes(1000)
        if wraps:
            await advance_wal_to(store, size - 3 * half, size)
            rewrite, boundary_after = 4, next_lap(store.wal.applied_position, size) + 2 * half
        else:
            await advance_wal_to(store, 0, BLOCK_SIZE_BYTES)
            rewrite, boundary_after = 6, store.wal.applied_position + 6 * half
        expected["pad"] = await store.get_object(BUCKET, "pad")
        assert await store.checkpoint() and await store.checkpoint()  # WAL head: here
        tail = store.wal.applied_position
        assert boundary_after % BLOCK_SIZE_BYTES == 0
        assert boundary_after - round_down(tail) > 2 * BLOCK_SIZE_BYTES  # past the old seal
        for device in devices:
            device.hold()
        batches = store.wal.batches
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(store.put_object, BUCKET, f"t{i:02d}", value)
        assert store.wal.batches == batches + 1  # one group commit
        batch_writes = [
            [(offset, data) for offset, data in device.unflushed if offset >= wal_offset]
            for device in devices
        ]
        assert batch_writes[0] == batch_writes[1]
        assert len(batch_writes[0]) == (2 if wraps else 1)
        offset, data = batch_writes[0][-1]  # the run holding the stale frame's block
        stale_start = wal_offset + boundary_after % size
        later = stale_start - offset
        assert 0 <= later < len(data)
        image = [
            devices[0].image_with([(stale_start, data[later:])]),
            devices[1].image_with([]),
        ]
    stale = bytes(image[0].inner.durable[stale_start : stale_start + len(data) - later])
    assert stale == data[later:] and any(stale)  # mirror 0 holds the stale frames
    async with opened(image, clock=fixed_clock) as store:
        await assert_objects(store, expected)  # the torn batch is gone
        await assert_fsck_clean(store)
        for device in image:  # sealed on every mirror, before anything else is written
            assert not any(device.inner.durable[stale_start : stale_start + len(stale)])
        for i in range(rewrite):  # the shorter history: same LSNs, same frame lengths
            await store.put_object(BUCKET, f"n{i:02d}", value)
            expected[f"n{i:02d}"] = value
        assert store.wal.applied_position == boundary_after
        image = crash_all(image, FaultPlan(keep_writes=None))  # no final checkpoint
    async with opened(image, clock=fixed_clock) as store:
        await assert_objects(store, expected)  # no t.. key came back
        await assert_fsck_clean(store)


# -- 9. a checkpoint body that passes its checksum but does not parse -------------------


def unparseable_body(kind: str, good_body: bytes, lsn: int) -> bytes:
    """A checkpoint body that is not what `decode_body` reads, of one kind."""
    pack: Callable[[object], bytes] = msgpack.Packer(use_bin_type=True).pack
    bucket = [BUCKET, "root", FIXED_NS, 0]
    if kind == "garbage":
        return b"\xc1" * len(good_body)  # 0xc1 is never used by msgpack
    if kind == "truncated":
        return good_body[: len(good_body) // 2]
    if kind == "header-not-a-list":
        return pack({"format": 1, "lsn": lsn})
    if kind == "fewer-keys-than-announced":
        return pack([1, lsn, 1, 5]) + pack(bucket)
    if kind == "version-not-a-list":
        return pack([1, lsn, 1, 1]) + pack(bucket) + pack([BUCKET, "k", [{"id": "null"}]])
    if kind == "key-not-a-string":
        return pack([1, lsn, 1, 2]) + pack(bucket) + pack([BUCKET, 7, []]) + pack([BUCKET, "k", []])
    raise AssertionError(kind)


def replace_body(
    image: Sequence[FaultyDevice], pointer: CheckpointPointer, body: bytes
) -> list[FaultyDevice]:
    """Images whose copies of `pointer`'s body hold `body`, and whose pointer blocks
    (on every mirror) name it with a matching length and checksum."""
    assert len(body) <= sum(e.length_bytes for e in pointer.copies[0])
    forged = dataclasses.replace(pointer, body_bytes=len(body), body_crc32c=crc32c.crc32c(body))
    writes: dict[int, list[tuple[int, bytes]]] = {i: [] for i in range(len(image))}
    for copy in pointer.copies:
        start = 0
        for extent in copy:
            part = body[start : start + extent.length_bytes]
            writes[extent.device_index].append((extent.offset_bytes, as_bytes(part)))
            start += extent.length_bytes
    for i in writes:
        writes[i].append((CHECKPOINT_SLOT_OFFSETS_BYTES[pointer.slot], forged.encode()))
    return [device.image_with(writes[i]) for i, device in enumerate(image)]


@pytest.mark.parametrize(
    "kind",
    [
        "garbage",
        "truncated",
        "header-not-a-list",
        "fewer-keys-than-announced",
        "version-not-a-list",
        "key-not-a-string",
    ],
)
async def test_checkpoint_body_with_good_checksum_that_does_not_parse_falls_back(
    kind: str,
) -> None:
    """A body whose checksum matches but which does not decode (written by a buggy
    or foreign writer) made the open fail with a decoding error; it must fall back
    to the other slot's checkpoint like a body that fails its checksum, and the WAL
    since that one must bring back everything."""
    devices, _ = await formatted(2)
    expected: dict[str, bytes] = {}
    async with opened(devices) as store:
        await store.create_bucket(BUCKET)
        await put_many(store, expected, ["a"])
        assert await store.checkpoint()
        good = newest_pointer(store)
        await put_many(store, expected, ["b"])
        assert await store.checkpoint()
        bad = newest_pointer(store)
        await put_many(store, expected, ["c"])
        records_after_good = store.wal.applied_lsn - good.lsn
        image = crash_all(devices, FaultPlan(keep_writes=None))
    body = await devices[0].read(bad.copies[0][0].offset_bytes, bad.body_bytes)
    image = replace_body(image, bad, unparseable_body(kind, body, bad.lsn))
    async with opened(image) as store:
        assert store.checkpointer.current == good
        assert store.replayed_records == records_after_good
        await assert_objects(store, expected)
        await assert_fsck_clean(store)
        assert await store.checkpoint()
        assert newest_pointer(store).slot == bad.slot  # replaces the unparseable one
        await put_many(store, expected, ["d"])
        image = crash_all(image, FaultPlan(keep_writes=None))
    async with opened(image) as store:
        await assert_objects(store, expected)
        await assert_fsck_clean(store)
