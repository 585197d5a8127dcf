"""Fault injection for the storage core: torn and lost writes, bit rot, failing devices, WAL wrap.

Goal: whatever a power cut, a rotten bit or a failing device does to the bytes
on the devices, the store that opens afterwards holds every acknowledged change,
each unacknowledged one either whole or not at all (never partial or garbage),
never returns wrong bytes, and passes fsck.

Method: stores on in-memory devices (`MemoryDevice`, 16 MiB each, a 1 MiB WAL
so crash images are cheap and the ring wraps quickly). A `HoldingDevice` wraps
each one and, while `hold_flushes` is set, turns every flush into a no-op, so the
writes of an acknowledged batch stay *pending* and `MemoryDevice.crash(plan)`
can lose them or tear them at any byte. Bit rot is `MemoryDevice.flip_bit` on the
durable image; device failures are `MemoryDevice.fail_writes`, or the wrapper's
`fail_wal_writes` when only the WAL write of a put must fail (so its data write
succeeds first). Every test asserts on the bytes read back and on what fsck
(online `check_open_store` with data verification, offline `check_offline`)
says, and that the store keeps working after recovery.

The torn-tail test covers every `torn_bytes` in range(0, len(pending write) + 1)
of the last WAL write (two blocks: the frame straddles a block boundary) on a
one-device store. An offset whose byte equals the byte already on disk gives the
same image as the offset before it, so each distinct image is opened once (about
120, one per byte of the new frame that is not already zero); the test asserts
that only bytes of the new frame differ. With three mirrors (torn alike) it
opens a sample of a dozen of those images (inside the frame header, mid-payload,
one byte short of whole, whole), because each image costs three 16 MiB copies.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

import pytest
import store_helpers
import trio
from store_helpers import assert_fsck_clean, payload

from objfs.config import StoreConfig
from objfs.errors import Corrupted, DeviceError, ReadOnly
from objfs.store import Store, open_store
from objfs.store.checkpoint import CheckpointPointer
from objfs.store.device import DeviceStatistics, WriteData, round_down
from objfs.store.format import format_devices
from objfs.store.fsck import FsckReport, _repair, check_offline, check_open_store
from objfs.store.superblock import (
    CHECKPOINT_SLOT_OFFSETS_BYTES,
    SUPERBLOCK_A_OFFSET_BYTES,
    SUPERBLOCK_B_OFFSET_BYTES,
    Superblock,
)
from objfs.store.testing import FaultPlan, MemoryDevice
from objfs.store.types import BLOCK_SIZE_BYTES, BucketName, MiB, ObjectKey, Segment
from objfs.store.wal import HEADER_BYTES, WRAP_FRAME_BYTES

BUCKET = "faults"
put_many = functools.partial(store_helpers.put_many, bucket=BUCKET)
advance_wal_to = functools.partial(store_helpers.advance_wal_to, bucket=BUCKET)
DEVICE_BYTES = 16 * MiB
WAL_BYTES = 1 * MiB
# Checkpoints only when asked for, or when the WAL fills (never by the clock).
CONFIG = StoreConfig(fragment_size_bytes=256 * 1024, checkpoint_interval_ms=86_400_000)


class HoldingDevice:
    """A BlockDevice over a MemoryDevice that can withhold flushes and fail WAL writes.

    While `hold_flushes` is set, `write_many(..., flush=True)` and `flush()` do not
    flush: the writes stay pending in the MemoryDevice, where a crash can lose or
    tear them. While `fail_wal_writes` is set, a write into the WAL region raises
    DeviceError (writes elsewhere still work).
    """

    def __init__(self, inner: MemoryDevice) -> None:
        self.inner = inner
        self.path = inner.path
        self.size_bytes = inner.size_bytes
        self.hold_flushes = False
        self.fail_wal_writes = False
        self.wal_region: tuple[int, int] = (0, 0)

    async def read(self, offset_bytes: int, length_bytes: int) -> bytes:
        return await self.inner.read(offset_bytes, length_bytes)

    async def read_many(self, requests: Sequence[tuple[int, int]]) -> list[bytes]:
        return await self.inner.read_many(requests)

    def _check_wal_write(self, offset_bytes: int) -> None:
        start, end = self.wal_region
        if self.fail_wal_writes and start <= offset_bytes < end:
            raise DeviceError(f"{self.path}: injected WAL write failure")

    async def write(self, offset_bytes: int, data: WriteData) -> None:
        self._check_wal_write(offset_bytes)
        await self.inner.write(offset_bytes, data)

    async def write_many(
        self, writes: Sequence[tuple[int, WriteData]], *, flush: bool = False
    ) -> None:
        for offset_bytes, _ in writes:
            self._check_wal_write(offset_bytes)
        await self.inner.write_many(writes, flush=flush and not self.hold_flushes)

    async def flush(self) -> None:
        if self.hold_flushes:
            await trio.lowlevel.checkpoint()
        else:
            await self.inner.flush()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def statistics(self) -> DeviceStatistics:
        return self.inner.statistics()

    def crash(self, plan: FaultPlan | None = None) -> HoldingDevice:
        """What a power cut now leaves (see `MemoryDevice.crash`), as a new device."""
        return wrap(self.inner.crash(plan), self.wal_region)

    def crash_randomly(self, rng: random.Random) -> HoldingDevice:
        return wrap(self.inner.crash_randomly(rng), self.wal_region)


def wrap(inner: MemoryDevice, wal_region: tuple[int, int]) -> HoldingDevice:
    device = HoldingDevice(inner)
    device.wal_region = wal_region
    return device


async def formatted(count: int = 3) -> tuple[list[HoldingDevice], Superblock]:
    """`count` freshly formatted devices (all hold metadata when count <= 3)."""
    devices = [HoldingDevice(MemoryDevice(DEVICE_BYTES, path=f"mem{i}")) for i in range(count)]
    superblocks = await format_devices(devices, wal_size_bytes=WAL_BYTES)
    first = superblocks[0]
    for device in devices:
        device.wal_region = (first.wal_offset_bytes, first.wal_offset_bytes + first.wal_size_bytes)
    return devices, first


def crash_all(
    devices: Sequence[HoldingDevice], plan: FaultPlan | None = None
) -> list[HoldingDevice]:
    return [device.crash(plan) for device in devices]


def hold(devices: Sequence[HoldingDevice], held: bool = True) -> None:
    for device in devices:
        device.hold_flushes = held


async def assert_objects(store: Store, expected: dict[str, bytes]) -> None:
    """The bucket holds exactly these keys, each with exactly these bytes."""
    keys = [info.key for info in store.list_objects(BUCKET, limit=10_000).objects]
    assert keys == sorted(expected)
    for key, data in expected.items():
        assert store.head_object(BUCKET, key).size_bytes == len(data), key
        assert await store.get_object(BUCKET, key) == data, key


def findings(report: FsckReport, check: str) -> list[bool]:
    return [finding.ok for finding in report.findings if finding.check == check]


def newest_pointer(store: Store) -> CheckpointPointer:
    return max(store.pointers.values(), key=lambda pointer: pointer.generation)


# -- 1. torn WAL tail ---------------------------------------------------------------


@pytest.mark.parametrize("mirrors", [1, 3])
async def test_torn_last_wal_write_at_every_byte_leaves_last_put_absent_or_whole(
    mirrors: int,
) -> None:
    devices, superblock = await formatted(mirrors)
    expected: dict[str, bytes] = {}
    last = payload("last", 16)  # a short frame: every byte of it is a case
    async with open_store(CONFIG, devices=devices) as store:
        await store.create_bucket(BUCKET)
        await put_many(store, expected, ["a", "b", "c"])
        # Put the next frame across a block boundary, so the pending write is two blocks.
        await advance_wal_to(store, BLOCK_SIZE_BYTES - 60, BLOCK_SIZE_BYTES)
        expected["pad"] = await store.get_object(BUCKET, "pad")
        tail_before = store.wal.applied_position
        hold(devices)
        await store.put_object(BUCKET, "last", last)
        tail_after = store.wal.applied_position
        # Exactly one pending write per mirror: the batch, from the tail's block on.
        pending: list[tuple[int, bytes, bytes]] = []
        for device in devices:
            assert device.inner.pending_writes == 1
            offset, length = device.inner.write_log[-1]
            new = await device.inner.read(offset, length)
            old = bytes(device.inner.durable[offset : offset + length])
            pending.append((offset, new, old))
    offset, new, old = pending[0]
    assert all(item == pending[0] for item in pending)  # every mirror got the same bytes
    assert offset == superblock.wal_offset_bytes + round_down(tail_before % WAL_BYTES)
    assert len(new) == 2 * BLOCK_SIZE_BYTES
    frame_start = tail_before - round_down(tail_before)
    frame_end = frame_start + tail_after - tail_before
    changed = [i for i in range(len(new)) if new[i] != old[i]]
    # Rewriting the tail's block repeats the bytes before the tail: a tear there is harmless.
    assert frame_start <= changed[0] and changed[-1] < frame_end
    whole_at = changed[-1] + 1  # the first torn_bytes at which the whole frame has landed
    # torn_bytes = k gives the same image as the largest tested k' <= k (bytes between equal).
    tested = [0] + [i + 1 for i in changed]
    assert len(tested) > (frame_end - frame_start) // 2  # most frame bytes differ from zeros
    if mirrors > 1:  # every mirror torn alike; a sample of the images, to bound the runtime
        picks = [frame_start + n for n in (1, 4, 8, 12, 16, HEADER_BYTES, HEADER_BYTES + 1)]
        picks += [(frame_start + whole_at) // 2, whole_at - 1, whole_at, len(new)]
        tested = sorted({max(k for k in tested if k <= pick) for pick in picks})
    for torn_bytes in tested:
        image = [
            device.crash(FaultPlan(keep_writes=0, torn_bytes=torn_bytes)) for device in devices
        ]
        want = dict(expected)
        if torn_bytes >= whole_at:
            want["last"] = last
        async with open_store(CONFIG, devices=image) as store:
            await assert_objects(store, want)
            await assert_fsck_clean(store)
            after = payload(f"after-{torn_bytes}", 300)
            await store.put_object(BUCKET, "after", after)
            want["after"] = after
            await assert_objects(store, want)
        async with open_store(CONFIG, devices=image) as store:
            await assert_objects(store, want)
            await assert_fsck_clean(store)


# -- 2. lost unflushed writes -------------------------------------------------------


@pytest.mark.parametrize("size", [3000, 600_000], ids=["inline", "segments"])
async def test_lost_unflushed_batch_is_absent_and_earlier_state_intact(size: int) -> None:
    devices, _ = await formatted()
    expected: dict[str, bytes] = {}
    async with open_store(CONFIG, devices=devices) as store:
        await store.create_bucket(BUCKET)
        await put_many(store, expected, ["k1", "k2", "k3"])
        big = payload("big", 400_000)
        await store.put_object(BUCKET, "big", big)
        expected["big"] = big
        hold(devices)
        await store.put_object(BUCKET, "lost", payload("lost", size))
        await store.put_object(BUCKET, "k1", payload("k1-new", size))  # an overwrite, lost too
        await store.delete_object(BUCKET, "k2")  # and a delete
        assert all(device.inner.pending_writes for device in devices[:3])
        image = crash_all(devices, FaultPlan(keep_writes=0))
    async with open_store(CONFIG, devices=image) as store:
        await assert_objects(store, expected)
        await assert_fsck_clean(store)
        again = payload("again", size)
        await store.put_object(BUCKET, "lost", again)
        expected["lost"] = again
    async with open_store(CONFIG, devices=image) as store:
        await assert_objects(store, expected)
        await assert_fsck_clean(store)


async def test_crash_during_checkpoint_keeps_every_object() -> None:
    devices, _ = await formatted()
    expected: dict[str, bytes] = {}
    async with open_store(CONFIG, devices=devices) as store:
        await store.create_bucket(BUCKET)
        await put_many(store, expected, [f"k{i}" for i in range(20)])
        await store.checkpoint()
        await put_many(store, expected, [f"k{i}" for i in range(10, 30)])
        hold(devices)
        assert await store.checkpoint()
        pending = devices[0].inner.pending_writes
        assert pending >= 2  # the body, then the pointer
        images = [
            crash_all(devices, FaultPlan(keep_writes=keep, torn_bytes=torn))
            for keep in range(pending + 1)
            for torn in (0, 1000)
        ]
    for image in images:
        async with open_store(CONFIG, devices=image) as store:
            await assert_objects(store, expected)
            await assert_fsck_clean(store)


# -- 3. and 4. damaged checkpoints ----------------------------------------------------


@pytest.mark.parametrize("damaged_copies", [1, 3])
async def test_bit_flip_in_checkpoint_body_falls_back_to_another_copy_or_checkpoint(
    damaged_copies: int,
) -> None:
    devices, _ = await formatted()
    expected: dict[str, bytes] = {}
    async with open_store(CONFIG, devices=devices) as store:
        await store.create_bucket(BUCKET)
        await put_many(store, expected, [f"k{i}" for i in range(8)])
        assert await store.checkpoint()
        older = newest_pointer(store)
        await put_many(store, expected, [f"k{i}" for i in range(4, 12)])
        await store.delete_object(BUCKET, "k0")
        del expected["k0"]
        assert await store.checkpoint()
        newer = newest_pointer(store)
        await put_many(store, expected, [f"k{i}" for i in range(10, 16)])
        image = crash_all(devices)
        records_after_older = store.wal.applied_lsn - older.lsn
        records_after_newer = store.wal.applied_lsn - newer.lsn
    assert newer.generation == older.generation + 1 and len(newer.copies) == 3
    for copy in newer.copies[:damaged_copies]:
        extent = copy[0]
        image[extent.device_index].inner.flip_bit(extent.offset_bytes + newer.body_bytes // 2, 3)
    offline = await check_offline(list(image), verify_data=True)
    assert findings(offline, "checkpoint") == [damaged_copies < 3], offline.render()
    async with open_store(CONFIG, devices=image) as store:
        await assert_objects(store, expected)
        fell_back = damaged_copies == 3
        assert store.replayed_records == (records_after_older if fell_back else records_after_newer)
        await assert_fsck_clean(store)
        assert await store.checkpoint()
        await assert_fsck_clean(store)
        await store.put_object(BUCKET, "after", b"after")
        expected["after"] = b"after"
    offline = await check_offline(list(image), verify_data=True)
    assert offline.clean, offline.render()
    async with open_store(CONFIG, devices=image) as store:
        await assert_objects(store, expected)
        await assert_fsck_clean(store)


@pytest.mark.parametrize("damaged_devices", [1, 3])
async def test_bit_flip_in_checkpoint_pointer_ignores_that_pointer(damaged_devices: int) -> None:
    devices, _ = await formatted()
    expected: dict[str, bytes] = {}
    async with open_store(CONFIG, devices=devices) as store:
        await store.create_bucket(BUCKET)
        await put_many(store, expected, [f"k{i}" for i in range(8)])
        assert await store.checkpoint()
        older = newest_pointer(store)
        await put_many(store, expected, [f"k{i}" for i in range(4, 12)])
        assert await store.checkpoint()
        newer = newest_pointer(store)
        await put_many(store, expected, [f"k{i}" for i in range(10, 16)])
        image = crash_all(devices)
        records_after_older = store.wal.applied_lsn - older.lsn
        records_after_newer = store.wal.applied_lsn - newer.lsn
    slot_offset = CHECKPOINT_SLOT_OFFSETS_BYTES[newer.slot]
    for device in image[:damaged_devices]:
        device.inner.flip_bit(slot_offset + 20, 0)  # inside the generation field
    async with open_store(CONFIG, devices=image) as store:
        await assert_objects(store, expected)
        if damaged_devices == 3:
            assert store.pointers == {older.slot: older}
            assert store.replayed_records == records_after_older
        else:
            assert store.pointers == {older.slot: older, newer.slot: newer}
            assert store.replayed_records == records_after_newer
        await assert_fsck_clean(store)
        assert await store.checkpoint()
        await assert_fsck_clean(store)
    async with open_store(CONFIG, devices=image) as store:
        await assert_objects(store, expected)
        assert store.replayed_records == 0
        await assert_fsck_clean(store)
    offline = await check_offline(list(image), verify_data=True)
    assert offline.clean, offline.render()


# -- 5. damaged superblock ------------------------------------------------------------


async def test_damaged_superblock_copy_a_opens_from_copy_b_and_fsck_flags_it() -> None:
    devices, _ = await formatted()
    expected: dict[str, bytes] = {}
    async with open_store(CONFIG, devices=devices) as store:
        await store.create_bucket(BUCKET)
        await put_many(store, expected, ["a", "b"])
    copy_b = bytes(devices[1].inner.durable[SUPERBLOCK_B_OFFSET_BYTES:][:BLOCK_SIZE_BYTES])
    devices[1].inner.flip_bit(SUPERBLOCK_A_OFFSET_BYTES + 40, 5)
    report = await check_offline(list(devices), verify_data=True)
    assert findings(report, "superblock") == [True, False, True], report.render()
    async with open_store(CONFIG, devices=devices) as store:
        await assert_objects(store, expected)
        await put_many(store, expected, ["c"])
        await assert_fsck_clean(store)
    await _repair(list(devices))
    report = await check_offline(list(devices), verify_data=True)
    assert report.clean, report.render()
    copy_a = bytes(devices[1].inner.durable[SUPERBLOCK_A_OFFSET_BYTES:][:BLOCK_SIZE_BYTES])
    assert copy_a == copy_b
    async with open_store(CONFIG, devices=devices) as store:
        await assert_objects(store, expected)


async def test_both_superblock_copies_damaged_leaves_the_device_out_or_refuses() -> None:
    """One device without a superblock: a 2+1 node opens degraded without it. Two:
    more than its one parity fragment can cover, so it refuses, naming them."""
    devices, _ = await formatted()
    devices[2].inner.flip_bit(SUPERBLOCK_A_OFFSET_BYTES + 40)
    devices[2].inner.flip_bit(SUPERBLOCK_B_OFFSET_BYTES + 40)
    async with open_store(CONFIG, devices=devices) as store:
        assert store.health.statistics().down_devices == (2,)
    devices[1].inner.flip_bit(SUPERBLOCK_A_OFFSET_BYTES + 40)
    devices[1].inner.flip_bit(SUPERBLOCK_B_OFFSET_BYTES + 40)
    with pytest.raises(DeviceError, match=r"devices \[1, 2\] .* missing"):
        async with open_store(CONFIG, devices=devices):
            pass


# -- 6. diverging WAL mirrors --------------------------------------------------------


@pytest.mark.parametrize("behind", [0, 1])
@pytest.mark.parametrize("torn_bytes", [0, 2100], ids=["lost", "torn"])
async def test_wal_mirrors_that_diverge_recover_the_longest_chain_on_all(
    behind: int, torn_bytes: int
) -> None:
    devices, superblock = await formatted()
    expected: dict[str, bytes] = {}
    async with open_store(CONFIG, devices=devices) as store:
        await store.create_bucket(BUCKET)
        await put_many(store, expected, ["a", "b", "c"])
        devices[behind].hold_flushes = True  # this mirror's last batch stays pending
        last = payload("last", 3000)
        await store.put_object(BUCKET, "last", last)
        expected["last"] = last
        assert devices[behind].inner.pending_writes == 1
        image = [
            device.crash(FaultPlan(keep_writes=0, torn_bytes=torn_bytes)) for device in devices
        ]
    start = superblock.wal_offset_bytes
    wal_before = [device.inner.durable[start : start + WAL_BYTES] for device in image]
    assert wal_before[behind] != wal_before[2]  # the mirror really is behind
    async with open_store(CONFIG, devices=image) as store:
        await assert_objects(store, expected)
        await assert_fsck_clean(store)
        # What recovery left on the disks, before anything else is written:
        after_recovery = crash_all(image, FaultPlan(keep_writes=0))
        tail = store.wal.applied_position
        chain = [device.inner.durable[start : start + tail] for device in after_recovery]
    assert chain[0] == chain[1] == chain[2]
    report = await check_offline(list(after_recovery), verify_data=True)
    assert findings(report, "wal") == [True], report.render()
    assert report.clean, report.render()


async def test_crash_while_recovery_repairs_a_lagging_mirror_repairs_it_again() -> None:
    devices, superblock = await formatted()
    expected: dict[str, bytes] = {}
    async with open_store(CONFIG, devices=devices) as store:
        await store.create_bucket(BUCKET)
        await put_many(store, expected, ["a", "b"])
        devices[1].hold_flushes = True
        await put_many(store, expected, ["c", "d", "e"])  # on mirrors 0 and 2 only
        image = [device.crash(FaultPlan(keep_writes=0)) for device in devices]
    image[1].hold_flushes = True  # recovery's copy to mirror 1 stays pending
    async with open_store(CONFIG, devices=image) as store:
        await assert_objects(store, expected)
        assert image[1].inner.pending_writes >= 1
        torn_images = [
            [device.crash(FaultPlan(keep_writes=0, torn_bytes=torn)) for device in image]
            for torn in (0, 1, 100, 3000)
        ]
        tail = store.wal.applied_position
    start = superblock.wal_offset_bytes
    for again in torn_images:
        async with open_store(CONFIG, devices=again) as store:
            await assert_objects(store, expected)
            await assert_fsck_clean(store)
            repaired = crash_all(again, FaultPlan(keep_writes=0))
        chain = [device.inner.durable[start : start + tail] for device in repaired]
        assert chain[0] == chain[1] == chain[2]


async def test_bit_flip_in_wal_frame_of_one_mirror_is_recovered_from_the_others() -> None:
    devices, superblock = await formatted()
    expected: dict[str, bytes] = {}
    async with open_store(CONFIG, devices=devices) as store:
        await store.create_bucket(BUCKET)
        await put_many(store, expected, ["a"])
        frame_start = store.wal.applied_position
        await put_many(store, expected, ["b", "c", "d"])
        image = crash_all(devices)
        tail = store.wal.applied_position
    start = superblock.wal_offset_bytes
    good = bytes(image[1].inner.durable[start : start + tail])
    image[0].inner.flip_bit(start + frame_start + 60, 2)  # inside the payload of "b"
    async with open_store(CONFIG, devices=image) as store:
        assert store.replayed_records == 5  # the bucket and four puts
        await assert_objects(store, expected)
        await assert_fsck_clean(store)
        repaired = crash_all(image, FaultPlan(keep_writes=0))
    assert [bytes(device.inner.durable[start : start + tail]) for device in repaired] == [good] * 3


# -- 7. rotten data ------------------------------------------------------------------


async def test_bit_flips_in_data_are_rebuilt_then_corrupted_never_wrong_bytes() -> None:
    """2+1 over three devices: one rotten fragment of a segment is rebuilt from the
    other two (right bytes, counted); two rotten fragments leave fewer than k, so
    reads of that segment fail with Corrupted and everything else still reads."""
    devices, _ = await formatted()
    expected: dict[str, bytes] = {}
    config = StoreConfig(fragment_size_bytes=64 * 1024, checkpoint_interval_ms=86_400_000)
    async with open_store(config, devices=devices) as store:
        await store.create_bucket(BUCKET)
        await put_many(store, expected, ["small"])
        for name in ("victim", "other"):
            expected[name] = payload(name, 400_000)  # four 128 KiB segments each
            await store.put_object(BUCKET, name, expected[name])
        version = store.index.current(BucketName(BUCKET), ObjectKey("victim"))
        second = version.pieces[1]
        assert isinstance(second.source, Segment)
        assert (second.source.data_fragments, len(second.source.fragments)) == (2, 3)
        extent = second.source.fragments[0].extent
        devices[extent.device_index].inner.flip_bit(extent.offset_bytes + 1234, 6)
        assert await store.get_object(BUCKET, "victim") == expected["victim"]
        assert store.datapath.corruptions == 1
        assert second.source.segment_id in store.health.heal_queue
        extent = second.source.fragments[2].extent
        devices[extent.device_index].inner.flip_bit(extent.offset_bytes + 99, 1)
        with pytest.raises(Corrupted):
            await store.get_object(BUCKET, "victim")
        with pytest.raises(Corrupted):
            await store.get_object(
                BUCKET, "victim", offset_bytes=second.offset_bytes + 1000, size_bytes=10
            )
        assert store.health.unreadable_segments == 2
        # Bytes outside the rotten segment still read, and so does everything else.
        first = expected["victim"][: second.offset_bytes]
        assert await store.get_object(BUCKET, "victim", size_bytes=len(first)) == first
        for name in ("small", "other"):
            assert await store.get_object(BUCKET, name) == expected[name]
        report = await check_open_store(store, verify_data=True)
        assert findings(report, "data") == [False], report.render()
        assert findings(report, "space") == [True], report.render()
        # Overwriting the damaged object heals the key.
        await store.put_object(BUCKET, "victim", b"fresh")
        expected["victim"] = b"fresh"
        await assert_objects(store, expected)
        await assert_fsck_clean(store)


# -- 8. failing WAL device -------------------------------------------------------------


async def put_catching_read_only(store: Store, key: str, data: bytes, *, streamed: bool) -> None:
    """Put, expecting ReadOnly; streamed: through `open_writer`, catching the error
    inside the block and leaving it normally (as a face that reports the error would)."""
    if not streamed:
        with pytest.raises(ReadOnly):
            await store.put_object(BUCKET, key, data)
        return
    async with store.open_writer(BUCKET, key) as writer:
        await writer.write(data)
        with pytest.raises(ReadOnly):
            await writer.commit()


@pytest.mark.parametrize(
    ("size", "streamed"),
    [(3000, False), (600_000, False), (600_000, True)],
    ids=["inline", "segments", "streamed"],
)
async def test_wal_write_failure_on_every_mirror_makes_store_read_only_then_recovers(
    size: int, streamed: bool
) -> None:
    """No WAL mirror takes the batch: the put fails ReadOnly, every later change too,
    reads go on; after a restart the store is consistent (the failed put whole or
    absent) and writable again."""
    devices, _ = await formatted()
    expected: dict[str, bytes] = {}
    failed = payload("failed", size)
    async with open_store(CONFIG, devices=devices) as store:
        await store.create_bucket(BUCKET)
        await put_many(store, expected, ["a", "b"])
        big = payload("big", 300_000)
        await store.put_object(BUCKET, "big", big)
        expected["big"] = big
        for device in devices:
            device.fail_wal_writes = True  # data writes succeed, the WAL's fail
        await put_catching_read_only(store, "failed", failed, streamed=streamed)
        assert store.wal.failure is not None
        with pytest.raises(ReadOnly):
            await store.put_object(BUCKET, "later", b"x")
        with pytest.raises(ReadOnly):
            await store.put_object(BUCKET, "later", payload("later", 100_000))
        with pytest.raises(ReadOnly):
            await store.delete_object(BUCKET, "a")
        with pytest.raises(ReadOnly):
            await store.create_bucket("another")
        await assert_objects(store, expected)  # reads still work
        # The devices come back (a transient failure); the periodic checkpointer may run.
        for device in devices:
            device.fail_wal_writes = False
        try:
            await store.checkpoint()
        except ReadOnly:
            pass
    image = crash_all(devices)
    async with open_store(CONFIG, devices=image) as store:
        recovered = {info.key for info in store.list_objects(BUCKET).objects}
        if "failed" in recovered:  # it reached the other mirrors: then it must be whole
            expected["failed"] = failed
        await assert_objects(store, expected)
        await assert_fsck_clean(store)
        await store.put_object(BUCKET, "later", b"later")
        expected["later"] = b"later"
    async with open_store(CONFIG, devices=image) as store:
        await assert_objects(store, expected)
        await assert_fsck_clean(store)
    report = await check_offline(list(image), verify_data=True)
    assert report.clean, report.render()


@pytest.mark.parametrize("victim", [0, 2])
async def test_wal_write_failure_on_one_mirror_drops_it_and_goes_on(victim: int) -> None:
    """One metadata device fails its WAL write: the batch is durable on the other
    mirrors, so the put succeeds; the device is down and owed from then on (data
    goes around it), checkpoints skip it, and after a power cut with the device
    back everything acknowledged is there, and a heal pass restores redundancy."""
    devices, _ = await formatted()
    expected: dict[str, bytes] = {}
    async with open_store(CONFIG, devices=devices) as store:
        await store.create_bucket(BUCKET)
        await put_many(store, expected, ["a", "b"])
        devices[victim].fail_wal_writes = True
        for name, size in (("small", 3000), ("big", 600_000)):
            expected[name] = payload(name, size)
            await store.put_object(BUCKET, name, expected[name])
        assert store.health.statistics().down_devices == (victim,)
        assert store.wal.mirrors == sorted({0, 1, 2} - {victim})
        assert await store.checkpoint()
        await store.delete_object(BUCKET, "a")
        del expected["a"]
        await assert_objects(store, expected)
    devices[victim].fail_wal_writes = False
    image = crash_all(devices)
    async with open_store(CONFIG, devices=image, background_jobs=False) as store:
        assert store.health.statistics().owed_devices == (victim,)
        await assert_objects(store, expected)
        report = await store.scrubber.scrub(devices={victim})
        assert report.clean, report.render()
        assert store.health.statistics().owed_devices == ()
        await assert_fsck_clean(store)


# -- 9. WAL wrap-around --------------------------------------------------------------


async def test_wal_wrap_frame_fits_when_only_a_frame_header_is_left() -> None:
    """The WRAP frame (a header plus a 1-byte payload) must fit in what a frame leaves.

    A frame is placed only if a whole WRAP frame (21 bytes) still fits after it; when
    exactly that much is left, the next record needs a WRAP frame there, inside the
    region. (A rule leaving only a header's 20 bytes once spilled the WRAP frame over
    the first data block and lost every later record.)
    """
    devices, superblock = await formatted()
    expected: dict[str, bytes] = {}
    wal_end = superblock.wal_offset_bytes + WAL_BYTES
    async with open_store(CONFIG, devices=devices) as store:
        await store.create_bucket(BUCKET)
        await put_many(store, expected, ["a"])
        await advance_wal_to(store, WAL_BYTES - WRAP_FRAME_BYTES, WAL_BYTES)
        expected["pad"] = await store.get_object(BUCKET, "pad")
        assert store.wal.applied_position % WAL_BYTES == WAL_BYTES - WRAP_FRAME_BYTES
        lap = store.wal.applied_position // WAL_BYTES
        data_block = bytes(devices[0].inner.durable[wal_end : wal_end + BLOCK_SIZE_BYTES])
        log_start = len(devices[0].inner.write_log)
        await put_many(store, expected, ["next"])
        assert store.wal.applied_position // WAL_BYTES == lap + 1
        image = crash_all(devices)
        wal_writes = [
            (offset, length)
            for offset, length in devices[0].inner.write_log[log_start:]
            if superblock.wal_offset_bytes <= offset < wal_end
        ]
    data_block_after = bytes(image[0].inner.durable[wal_end : wal_end + BLOCK_SIZE_BYTES])
    async with open_store(CONFIG, devices=image) as store:
        await assert_objects(store, expected)  # "next" was acknowledged: it must be there
        await assert_fsck_clean(store)
    # The batch stays inside the WAL region: the data region's first block is untouched.
    assert all(offset + length <= wal_end for offset, length in wal_writes), wal_writes
    assert data_block_after == data_block


async def test_wal_wrapping_many_times_survives_random_crashes() -> None:
    """Each cycle: random puts, overwrites, deletes and concurrent bursts (group commits)
    of inline objects, so the 1 MiB ring wraps and WAL pressure triggers checkpoints;
    then 1-4 more changes with flushes held, and a random crash of every mirror
    (`crash_randomly`: a random prefix of the pending writes kept, the next torn).
    The recovered store must equal the state after some prefix of the held changes."""
    rng = random.Random(20261121)
    devices, _ = await formatted()
    expected: dict[str, bytes] = {}
    keys = [f"key{i:02d}" for i in range(40)]
    async with open_store(CONFIG, devices=devices) as store:
        await store.create_bucket(BUCKET)
    laps_seen: list[int] = []
    prefixes_seen: set[int] = set()

    def plan(key: str) -> bytes | None:
        """The next change of `key`, drawn before any task runs (so the seed decides
        everything): new bytes, or None for a delete."""
        if key in expected and rng.random() < 0.1:
            return None
        return rng.randbytes(rng.randint(2500, 3500))

    async def change(store: Store, key: str, data: bytes | None) -> None:
        if data is None:
            await store.delete_object(BUCKET, key)
            del expected[key]
        else:
            await store.put_object(BUCKET, key, data)
            expected[key] = data

    for cycle in range(10):
        async with open_store(CONFIG, devices=devices) as store:
            await assert_objects(store, expected)
            await assert_fsck_clean(store)
            for _ in range(rng.randint(100, 300)):
                if rng.random() < 0.05:
                    burst = [(key, plan(key)) for key in rng.sample(keys, 4)]
                    async with trio.open_nursery() as nursery:
                        for key, data in burst:
                            nursery.start_soon(change, store, key, data)
                else:
                    key = rng.choice(keys)
                    await change(store, key, plan(key))
            hold(devices)  # from here on, acknowledged batches are never flushed
            states = [dict(expected)]
            for _ in range(rng.randint(1, 4)):
                key = rng.choice(keys)
                await change(store, key, plan(key))
                states.append(dict(expected))
            laps_seen.append(store.wal.applied_position // WAL_BYTES)
            devices = [device.crash_randomly(rng) for device in devices]
        async with open_store(CONFIG, devices=devices) as store:
            listed = store.list_objects(BUCKET, limit=10_000).objects
            recovered: dict[str, bytes] = {
                info.key: await store.get_object(BUCKET, info.key) for info in listed
            }
            assert recovered in states, cycle
            prefixes_seen.add(states.index(recovered))
            expected = recovered
            await assert_objects(store, expected)
            await assert_fsck_clean(store)
            # The next cycle starts from this recovered image, with no final checkpoint.
            devices = crash_all(devices, FaultPlan(keep_writes=0))
        report = await check_offline(list(devices), verify_data=False)
        assert report.clean, (cycle, report.render())
    assert laps_seen[-1] >= 4, laps_seen  # the ring went round several times
    assert len(prefixes_seen) >= 2, prefixes_seen  # crashes lost some held changes, not all
    async with open_store(CONFIG, devices=devices) as store:
        await assert_objects(store, expected)
        await assert_fsck_clean(store)
