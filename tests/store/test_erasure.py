"""Erasure coding on real device files: 4+2 survives any two lost or damaged devices, and heals.

Goal: the promise of a 4+2 node, shown where users meet it. Any two of its six
device files may be deleted, overwritten with garbage or rotten bit by bit, and
every object still reads back byte-identical; writes go on while devices are
missing; a replaced device is healed until the node has full redundancy again
(a scrub is clean, no device is owed, fsck verifies every fragment); and when
three fragments of a stripe are gone, reads of that object raise Corrupted, never
return wrong bytes, while everything else keeps working.

Method: `create_data_dir` makes six 64 MiB device files under `disk_dir` (ext4,
real O_DIRECT). Fragments are 64 KiB, so a segment (one stripe) holds 256 KiB and
the larger objects span up to 13 stripes; every stripe puts one fragment on each
of the six devices. Damage is done to the files while the store is closed
(deleted files, `pwrite` of garbage or of a flipped bit, fsynced), at places
taken from the index (fragment extents), the checkpoint pointers and the WAL.
Replacement is `adopt_device` on a fresh file, as `objfs device replace` does.
Background jobs are off unless a test is about them, so every heal is the one
the test asks for; scrubs run at full speed (rate 0). Each test asserts on the
bytes read back, on the health counters and on what the scrub report and fsck
(online and offline, with data verification) say.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Iterable, Iterator

import pytest
import store_helpers
import trio
from store_helpers import (
    ERASURE_DEVICE_BYTES,
    ERASURE_DEVICE_COUNT,
    ERASURE_FRAGMENT_BYTES,
    assert_fsck_clean,
    erasure_config,
    make_erasure_node,
    payload,
)

from objfs.config import StoreConfig
from objfs.errors import Corrupted, DeviceError
from objfs.store import Store, open_store
from objfs.store.device import create_device_file, open_device, open_devices
from objfs.store.format import adopt_device
from objfs.store.fsck import check_open_store, run_fsck
from objfs.store.types import Extent, KiB, MiB, Segment

BUCKET = "erasure"
segments_of = functools.partial(store_helpers.segments_of, bucket=BUCKET)
DEVICE_COUNT = ERASURE_DEVICE_COUNT
DEVICE_BYTES = ERASURE_DEVICE_BYTES
FRAGMENT_BYTES = ERASURE_FRAGMENT_BYTES
K, M = 4, 2
SEGMENT_BYTES = K * FRAGMENT_BYTES  # user bytes in one full stripe
GARBAGE_FROM_BYTES = 128 * KiB  # past both superblock copies (at 0 and 64 KiB)

# Inline objects (<= 4 KiB) live in WAL records and checkpoints; the others in stripes.
SIZES = {
    "empty": 0,
    "inline-1": 1,
    "inline-4096": 4096,
    "one-partial-stripe": 4097,
    "one-stripe": SEGMENT_BYTES,
    "stripe-plus-1": SEGMENT_BYTES + 1,
    "multi": 1 * MiB + 12_345,
    "big": 3 * MiB + 7,
}


@pytest.fixture
def data_dir(disk_dir: str) -> Iterator[str]:
    yield os.path.join(disk_dir, "node")


def device_file(data_dir: str, index: int) -> str:
    return os.path.join(data_dir, "devices", f"dev{index}.img")


async def put_objects(store: Store, expected: dict[str, bytes], prefix: str) -> None:
    """Put one object of every size in SIZES under `prefix`, remembering each."""
    for name, size in SIZES.items():
        key = prefix + name
        expected[key] = payload(key, size)
        await store.put_object(BUCKET, key, expected[key])


async def assert_objects(
    store: Store, expected: dict[str, bytes], *, unchecked: Iterable[str] = ()
) -> None:
    """The bucket holds exactly these keys (and `unchecked` ones) with exactly these
    bytes; multi-stripe objects also give the right bytes for a read straddling a
    stripe boundary and for a few seeded random ranges (the short last stripe too)."""
    keys = [info.key for info in store.list_objects(BUCKET, limit=10_000).objects]
    assert keys == sorted([*expected, *unchecked])
    for key, data in expected.items():
        assert store.head_object(BUCKET, key).size_bytes == len(data), key
        assert await store.get_object(BUCKET, key) == data, key
        if len(data) > SEGMENT_BYTES:
            rng = random.Random(key)
            ranges = [(SEGMENT_BYTES - 5, 10), (len(data) - 3, 10)]
            ranges += [(rng.randrange(len(data)), rng.randint(1, 300_000)) for _ in range(3)]
            async with store.open_reader(BUCKET, key) as reader:
                for start, size in ranges:
                    got = await reader.read(start, size)
                    assert got == data[start : start + size], (key, start, size)


def fragments_on(segments: Iterable[Segment], devices: set[int]) -> int:
    return sum(1 for s in segments for f in s.fragments if f.extent.device_index in devices)


def write_at(path: str, offset_bytes: int, data: bytes) -> None:
    """Overwrite bytes of a (closed) device file, durably."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_sparse(source: str, target: str) -> None:
    """Copy a device file, leaving its all-zero MiBs as holes (which read as zeros)."""
    with open(source, "rb") as reader, open(target, "wb") as writer:
        writer.truncate(os.fstat(reader.fileno()).st_size)
        offset = 0
        while chunk := reader.read(1 * MiB):
            if chunk.count(0) != len(chunk):
                writer.seek(offset)
                writer.write(chunk)
            offset += len(chunk)
        writer.flush()
        os.fsync(writer.fileno())


def flip_bit(path: str, offset_bytes: int, bit: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        [byte] = os.pread(fd, 1, offset_bytes)
        os.pwrite(fd, bytes([byte ^ (1 << bit)]), offset_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)


async def adopt(data_dir: str, index: int) -> None:
    """What `objfs device replace` does: a fresh, blank device file becomes device
    `index` of the node (whose other files are those in the data directory)."""
    present_paths = erasure_config(data_dir).device_paths()
    path = device_file(data_dir, index)
    assert path not in present_paths
    await trio.to_thread.run_sync(create_device_file, path, DEVICE_BYTES)
    present = await open_devices(present_paths)
    try:
        target = await open_device(path)
        try:
            await adopt_device(present, target, index)
        finally:
            await target.aclose()
    finally:
        for device in present:
            await device.aclose()


async def assert_offline_fsck_clean(config: StoreConfig) -> None:
    report = await run_fsck(config, verify_data=True, repair=False)
    assert report.clean, report.render()


# -- 1. two device files lost, then replaced -----------------------------------------


@pytest.mark.parametrize(
    "lost",
    [(0, 1), (0, 5), (3, 4)],
    ids=["two-metadata-devices", "metadata-and-data", "two-data-devices"],
)
async def test_any_two_deleted_device_files_lose_nothing_and_replacements_heal_fully(
    data_dir: str, lost: tuple[int, int]
) -> None:
    """With two device files deleted the node opens degraded (those two down and
    owed), every object reads byte-identical and new puts work; after both are
    replaced with blank files and healed, the heal rebuilt exactly the fragments
    those devices hold, the scrub is clean, no device is owed (also after a
    reopen), fsck verifies every fragment, and every object, including those
    written while degraded, is byte-identical."""
    config = await make_erasure_node(data_dir)
    expected: dict[str, bytes] = {}
    async with open_store(config, background_jobs=False) as store:
        await store.create_bucket(BUCKET)
        await put_objects(store, expected, "before/")
    for index in lost:
        os.unlink(device_file(data_dir, index))

    async with open_store(config, background_jobs=False) as store:
        health = store.health.statistics()
        assert health.down_devices == lost
        assert health.owed_devices == lost
        assert health.degraded
        assert sorted(store.devices) == [i for i in range(DEVICE_COUNT) if i not in lost]
        await assert_objects(store, expected)
        await put_objects(store, expected, "degraded/")
        await assert_objects(store, expected)
        health = store.health.statistics()
        assert (health.bad_fragments, health.unreadable_segments) == (0, 0)
        # Stripes written now still place a fragment on each lost device (owed).
        new = segments_of(store, "degraded/big")
        assert fragments_on(new, set(lost)) == 2 * len(new)
    report = await run_fsck(config, verify_data=True, repair=False)
    assert {f.check for f in report.problems} == {"devices", "owed"}, report.render()

    for index in lost:
        await adopt(data_dir, index)
    async with open_store(config, background_jobs=False) as store:
        assert store.health.statistics().down_devices == ()
        assert store.health.statistics().owed_devices == lost
        owed_fragments = fragments_on(store.index.referenced_segments(), set(lost))
        heal = await store.scrubber.scrub(devices=set(lost))
        assert heal.clean, heal.render()
        assert heal.healed_devices == list(lost)
        assert heal.fragments_damaged == heal.fragments_repaired == owed_fragments
        assert store.health.statistics().owed_devices == ()
        await assert_objects(store, expected)
        full = await store.scrubber.scrub()
        assert full.clean, full.render()
        assert (full.fragments_damaged, full.fragments_skipped) == (0, 0)
        await assert_fsck_clean(store)
    await assert_offline_fsck_clean(config)
    async with open_store(config, background_jobs=False) as store:
        assert not store.health.statistics().degraded
        await assert_objects(store, expected)


# -- 2. garbage over two devices ------------------------------------------------------


def live_places(store: Store, victims: tuple[int, ...]) -> dict[int, dict[str, list[Extent]]]:
    """Per victim device, what is live on it now: fragments, the newest checkpoint
    body, and (on metadata devices) the WAL written since that checkpoint."""
    first = store.superblocks[min(store.superblocks)]
    newest = max(store.pointers.values(), key=lambda pointer: pointer.generation)
    live: dict[int, dict[str, list[Extent]]] = {
        i: {"fragment": [], "checkpoint": [], "wal": []} for i in victims
    }
    for segment in store.index.referenced_segments():
        for fragment in segment.fragments:
            if fragment.extent.device_index in live:
                live[fragment.extent.device_index]["fragment"].append(fragment.extent)
    for extent in newest.extents():
        if extent.device_index in live:
            live[extent.device_index]["checkpoint"].append(extent)
    wal_used = store.wal.applied_position - newest.wal_start
    start = first.wal_offset_bytes + newest.wal_start % first.wal_size_bytes
    assert wal_used > 0 and start + wal_used <= first.wal_offset_bytes + first.wal_size_bytes
    for index in victims:
        if store.superblocks[index].holds_metadata:
            live[index]["wal"].append(Extent(index, start, wal_used))
    return live


def damage_plan(
    rng: random.Random, live: dict[int, dict[str, list[Extent]]], ranges_per_device: int
) -> list[tuple[int, int, int]]:
    """(device, offset, size) ranges of 4 KiB..1 MiB from 128 KiB to the end of each
    victim: half anywhere, half starting inside something live (a fragment, the
    checkpoint body, the WAL: each kind in turn) so that every seed hits data and
    metadata alike."""
    plan = []
    for index, places in live.items():
        kinds = [kind for kind, extents in places.items() if extents]
        for number in range(ranges_per_device):
            size = rng.randint(4 * KiB, 1 * MiB)
            if number % 2:
                extent = rng.choice(places[kinds[number // 2 % len(kinds)]])
                offset = extent.offset_bytes + rng.randrange(extent.length_bytes)
            else:
                offset = rng.randrange(GARBAGE_FROM_BYTES, DEVICE_BYTES - 4 * KiB)
            offset = max(offset, GARBAGE_FROM_BYTES)
            plan.append((index, offset, min(size, DEVICE_BYTES - offset)))
    return plan


def hits(extent: Extent, plan: list[tuple[int, int, int]], length_bytes: int | None = None) -> bool:
    end = extent.offset_bytes + (extent.length_bytes if length_bytes is None else length_bytes)
    return any(
        index == extent.device_index and offset < end and extent.offset_bytes < offset + size
        for index, offset, size in plan
    )


def fragments_hit(segments: Iterable[Segment], plan: list[tuple[int, int, int]]) -> int:
    """How many fragments (their bytes, not the padding after) overlap a range."""
    return sum(
        1
        for segment in segments
        for fragment in segment.fragments
        if hits(fragment.extent, plan, fragment.size_bytes)
    )


@pytest.mark.parametrize(
    ("seed", "victims"), [(1, (0, 1)), (2, (2, 5)), (3, (3, 4))], ids=["0-1", "2-5", "3-4"]
)
async def test_garbage_over_two_closed_devices_loses_nothing_and_scrub_repairs_it(
    data_dir: str, disk_dir: str, seed: int, victims: tuple[int, int]
) -> None:
    """Seeded random garbage over two devices of a crashed node (anywhere past the
    superblocks: WAL, checkpoint bodies, data): the node reopens with every object
    byte-identical, including those only in the WAL, the scrub repairs exactly the
    fragments the garbage hit and is clean, fsck verifies every fragment, and the
    node takes new objects."""
    rng = random.Random(seed)
    config = await make_erasure_node(data_dir)
    expected: dict[str, bytes] = {}
    async with open_store(config, background_jobs=False) as store:
        await store.create_bucket(BUCKET)
        await put_objects(store, expected, "checkpointed/")
    # The crash image: copied while the store is open and idle, after its last put
    # was acknowledged (so durable), with records newer than the checkpoint in the
    # WAL. The store then closes; the test goes on with the copy.
    image_dir = os.path.join(disk_dir, "image")
    os.makedirs(os.path.join(image_dir, "devices"))
    async with open_store(config, background_jobs=False) as store:
        await put_objects(store, expected, "in-wal/")
        live = live_places(store, victims)
        plan = damage_plan(rng, live, ranges_per_device=8)
        hit = fragments_hit(store.index.referenced_segments(), plan)
        for index in victims:  # the garbage hits every kind of live place on both
            for kind, extents in live[index].items():
                assert not extents or any(hits(e, plan) for e in extents), (index, kind)
        for index in range(DEVICE_COUNT):
            copy_sparse(device_file(data_dir, index), device_file(image_dir, index))
    assert hit > 0
    for index, offset, size in plan:
        write_at(device_file(image_dir, index), offset, rng.randbytes(size))

    image = erasure_config(image_dir)
    async with open_store(image, background_jobs=False) as store:
        assert store.replayed_records > 0, "the in-wal/ objects came from the WAL"
        assert store.health.statistics().down_devices == ()
        await assert_objects(store, expected)
        assert store.health.statistics().unreadable_segments == 0
        report = await store.scrubber.scrub()
        assert report.clean, report.render()
        assert report.fragments_damaged == report.fragments_repaired == hit
        await assert_fsck_clean(store)
        expected["after"] = payload("after", 2 * MiB + 3)
        await store.put_object(BUCKET, "after", expected["after"])
        await assert_objects(store, expected)
    await assert_offline_fsck_clean(image)
    async with open_store(image, background_jobs=False) as store:
        await assert_objects(store, expected)
        assert store.health.statistics().bad_fragments == 0


# -- 3. bit rot everywhere, at most m fragments per stripe ---------------------------


def bad_fragments_one_read_meets(segment: Segment, flipped: set[int]) -> int:
    """A read takes fragments in order until it has k intact: how many bad ones it meets."""
    met, need = 0, segment.data_fragments
    for number in range(len(segment.fragments)):
        if need == 0:
            break
        if number in flipped:
            met += 1
        else:
            need -= 1
    return met


async def test_bit_flips_in_at_most_m_fragments_per_stripe_are_read_around_and_scrubbed(
    data_dir: str,
) -> None:
    """Single bits flipped in 0, 1 or 2 fragments of every stripe, on all six
    devices, anywhere in a fragment's bytes (pyeclib header included): every
    object reads byte-identical; bad_fragments counts exactly the flipped
    fragments the reads met (parity is read only when a data fragment is bad);
    the scrub repairs every flipped fragment and is clean; afterwards reads meet
    no bad fragment, also after a reopen, and fsck is clean."""
    rng = random.Random(7)
    config = await make_erasure_node(data_dir)
    expected: dict[str, bytes] = {}
    async with open_store(config, background_jobs=False) as store:
        await store.create_bucket(BUCKET)
        await put_objects(store, expected, "a/")
        await put_objects(store, expected, "b/")
        segments = list(store.index.referenced_segments())
    flips: dict[int, set[int]] = {}
    for segment in segments:
        flipped = set(rng.sample(range(len(segment.fragments)), rng.choice([0, 1, 2, 2])))
        flips[segment.segment_id] = flipped
        for number in flipped:
            fragment = segment.fragments[number]
            offset = fragment.extent.offset_bytes + rng.randrange(fragment.size_bytes)
            flip_bit(device_file(data_dir, fragment.extent.device_index), offset, rng.randrange(8))
    flipped_total = sum(len(numbers) for numbers in flips.values())
    assert len(segments) >= 30 and flipped_total >= 40
    assert {
        segment.fragments[number].extent.device_index
        for segment in segments
        for number in flips[segment.segment_id]
    } == set(range(DEVICE_COUNT))
    met = sum(bad_fragments_one_read_meets(s, flips[s.segment_id]) for s in segments)

    async with open_store(config, background_jobs=False) as store:
        for key, data in expected.items():  # each object read once, whole
            assert await store.get_object(BUCKET, key) == data, key
        health = store.health.statistics()
        assert health.bad_fragments == met
        assert health.unreadable_segments == 0
        assert health.queued_heals == sum(
            1 for s in segments if bad_fragments_one_read_meets(s, flips[s.segment_id])
        )
        report = await store.scrubber.scrub()
        assert report.clean, report.render()
        assert report.fragments_damaged == report.fragments_repaired == flipped_total
        health = store.health.statistics()
        assert health.queued_heals == 0
        assert health.healed_fragments == flipped_total
        assert health.bad_fragments == met + flipped_total  # the scrub met each one too
        await assert_objects(store, expected)
        assert store.health.statistics().bad_fragments == met + flipped_total, "none left"
        await assert_fsck_clean(store)
    await assert_offline_fsck_clean(config)
    async with open_store(config, background_jobs=False) as store:
        await assert_objects(store, expected)
        assert store.health.statistics().bad_fragments == 0


# -- 4. three fragments of a stripe gone ---------------------------------------------


async def test_three_damaged_fragments_of_a_stripe_give_corrupted_never_wrong_bytes(
    data_dir: str,
) -> None:
    """Garbage over three fragments (on three devices) of two stripes of one
    object: a whole read raises Corrupted; ranged reads through open_reader raise
    Corrupted wherever they need a damaged data fragment, give the right bytes
    from the whole stripes, and anywhere give the right bytes or Corrupted, never
    other bytes; every
    other object reads fine and puts keep working; the scrub reports the object
    as unrecoverable and is not clean; fsck says the data is lost. Overwriting the
    object frees the lost stripes, and then scrub and fsck are clean again."""
    config = await make_erasure_node(data_dir)
    expected: dict[str, bytes] = {}
    victim = payload("victim", 5 * SEGMENT_BYTES - 100)
    async with open_store(config, background_jobs=False) as store:
        await store.create_bucket(BUCKET)
        await put_objects(store, expected, "other/")
        await store.put_object(BUCKET, "victim", victim)
        version_id = store.head_object(BUCKET, "victim").version_id
        stripes = segments_of(store, "victim")
    assert len(stripes) == 5
    lost = {1: (0, 2, 5), 3: (1, 3, 4)}  # stripe position -> fragment numbers
    rng = random.Random(4)
    for position, numbers in lost.items():
        for number in numbers:
            fragment = stripes[position].fragments[number]
            extent = fragment.extent
            write_at(
                device_file(data_dir, extent.device_index),
                extent.offset_bytes,
                rng.randbytes(fragment.size_bytes),
            )

    async with open_store(config, background_jobs=False) as store:
        with pytest.raises(Corrupted):
            await store.get_object(BUCKET, "victim")
        async with store.open_reader(BUCKET, "victim") as reader:
            # Stripes 0, 2 and 4 are whole: their bytes come back.
            assert await reader.read(10, 1000) == victim[10:1010]
            middle = 2 * SEGMENT_BYTES + 3
            assert await reader.read(middle, 5000) == victim[middle : middle + 5000]
            tail = 4 * SEGMENT_BYTES
            assert await reader.read(tail, SEGMENT_BYTES) == victim[tail:]
            # Bytes held by a damaged data fragment cannot be given back.
            for start in (
                SEGMENT_BYTES + 7,  # stripe 1, fragment 0
                SEGMENT_BYTES - 50,  # the end of stripe 0 and the start of stripe 1
                SEGMENT_BYTES + 2 * FRAGMENT_BYTES + 5,  # stripe 1, fragment 2
                3 * SEGMENT_BYTES + FRAGMENT_BYTES,  # stripe 3, fragment 1
                3 * SEGMENT_BYTES + 3 * FRAGMENT_BYTES + 99,  # stripe 3, fragment 3
            ):
                with pytest.raises(Corrupted):
                    await reader.read(start, 100)
            # Anywhere in and around the damaged stripes, sequential or not, a read
            # gives exactly the right bytes or raises Corrupted: never other bytes.
            # (A read held only by intact data fragments may be served from them.)
            rng = random.Random(9)
            outcomes = {"bytes": 0, "corrupted": 0}
            for _ in range(60):
                start = rng.randrange(SEGMENT_BYTES - 100, 4 * SEGMENT_BYTES + 100)
                size = rng.choice([1, 100, 4096, FRAGMENT_BYTES, SEGMENT_BYTES])
                try:
                    got = await reader.read(start, size)
                except Corrupted:
                    outcomes["corrupted"] += 1
                else:
                    assert got == victim[start : start + size], (start, size)
                    outcomes["bytes"] += 1
            assert outcomes["bytes"] > 0 and outcomes["corrupted"] > 0, outcomes
        assert store.health.statistics().unreadable_segments > 0
        await assert_objects(store, expected, unchecked=["victim"])
        expected["new"] = payload("new", 600_000)
        await store.put_object(BUCKET, "new", expected["new"])
        assert await store.get_object(BUCKET, "new") == expected["new"]

        report = await store.scrubber.scrub()
        assert not report.clean
        assert report.unrecoverable == [f"{BUCKET}/victim {version_id}"]
        assert report.fragments_damaged == 6
        assert report.fragments_repaired == 0
        fsck = await check_open_store(store, verify_data=True)
        data = [f for f in fsck.findings if f.check == "data"]
        assert [f.ok for f in data] == [False, False], fsck.render()
        assert all("lost" in f.message for f in data), fsck.render()
        with pytest.raises(Corrupted):  # the scrub could not mend it
            await store.get_object(
                BUCKET, "victim", offset_bytes=3 * SEGMENT_BYTES + FRAGMENT_BYTES, size_bytes=9
            )

        await store.put_object(BUCKET, "victim", b"fresh")
        report = await store.scrubber.scrub()
        assert report.clean, report.render()
        assert await store.get_object(BUCKET, "victim") == b"fresh"
        await assert_objects(store, expected | {"victim": b"fresh"})
        await assert_fsck_clean(store)
    await assert_offline_fsck_clean(config)


# -- 5. a missing device, a replacement healed in the background, another loss ------


async def test_replacement_healed_at_open_restores_redundancy_for_a_later_loss(
    data_dir: str,
) -> None:
    """A node restarted without device 1 comes up degraded and serves reads and
    writes; a blank replacement for it is healed by the background job at open,
    which clears its owed bit. Then devices 0 and 2 are deleted: with four of six
    left, every stripe needs its fragment on the replacement, and the WAL and
    checkpoints exist only there, yet every object, old, written while degraded
    or written now, reads byte-identical: the redundancy was really restored."""
    config = await make_erasure_node(data_dir)
    expected: dict[str, bytes] = {}
    async with open_store(config) as store:
        await store.create_bucket(BUCKET)
        await put_objects(store, expected, "before/")
    os.unlink(device_file(data_dir, 1))

    async with open_store(config) as store:
        assert store.health.statistics().down_devices == (1,)
        await assert_objects(store, expected)
        await put_objects(store, expected, "degraded/")
        await assert_objects(store, expected)
        assert store.health.statistics().unreadable_segments == 0

    await adopt(data_dir, 1)
    async with open_store(config) as store:  # background jobs on: it heals device 1 itself
        with trio.fail_after(30):
            # The scrubber offers no event for a finished pass: poll.
            while store.scrubber.last_report is None:  # noqa: ASYNC110
                await trio.sleep(0.02)
        assert store.health.statistics().owed_devices == ()
        heal = store.scrubber.last_report
        assert heal is not None and heal.clean, heal and heal.render()
        assert heal.healed_devices == [1]
        owed = fragments_on(store.index.referenced_segments(), {1})
        assert heal.fragments_repaired == owed > 0
        await assert_objects(store, expected)
        await assert_fsck_clean(store)
    await assert_offline_fsck_clean(config)

    os.unlink(device_file(data_dir, 0))
    os.unlink(device_file(data_dir, 2))
    async with open_store(config, background_jobs=False) as store:
        assert store.health.statistics().down_devices == (0, 2)
        assert sorted(store.devices) == [1, 3, 4, 5]
        await assert_objects(store, expected)
        await put_objects(store, expected, "after/")
        await assert_objects(store, expected)
        health = store.health.statistics()
        assert (health.bad_fragments, health.unreadable_segments) == (0, 0)
    async with open_store(config, background_jobs=False) as store:
        await assert_objects(store, expected)


# -- 6. more missing than m; a device that comes back stale ---------------------------


async def test_three_missing_device_files_refuse_to_open_until_one_is_back(
    data_dir: str, disk_dir: str
) -> None:
    """4+2 can do without two devices, not three: the open is refused with a
    DeviceError naming the missing devices and the limit, and changes nothing;
    with one of them back, the node opens and every object reads."""
    config = await make_erasure_node(data_dir)
    expected: dict[str, bytes] = {}
    async with open_store(config, background_jobs=False) as store:
        await store.create_bucket(BUCKET)
        await put_objects(store, expected, "")
    for index in (1, 3, 5):
        os.rename(device_file(data_dir, index), os.path.join(disk_dir, f"dev{index}.img"))
    with pytest.raises(DeviceError, match=r"devices \[1, 3, 5\] .* without at most 2"):
        async with open_store(config, background_jobs=False):
            pass
    os.rename(os.path.join(disk_dir, "dev3.img"), device_file(data_dir, 3))
    async with open_store(config, background_jobs=False) as store:
        assert store.health.statistics().down_devices == (1, 5)
        await assert_objects(store, expected)


async def test_device_back_after_missing_is_healed_of_what_it_missed(
    data_dir: str, disk_dir: str
) -> None:
    """A metadata device file taken away, then put back unchanged (stale): while it
    was away objects were written and deleted. It comes back owed; the heal
    rewrites exactly the fragments of stripes written while it was away, and then
    with two other devices deleted everything still reads, so it really holds
    its share again (and the WAL and checkpoint it lagged behind were repaired)."""
    config = await make_erasure_node(data_dir)
    expected: dict[str, bytes] = {}
    async with open_store(config, background_jobs=False) as store:
        await store.create_bucket(BUCKET)
        await put_objects(store, expected, "before/")
    away = os.path.join(disk_dir, "dev2.img")
    os.rename(device_file(data_dir, 2), away)
    async with open_store(config, background_jobs=False) as store:
        assert store.health.statistics().down_devices == (2,)
        await put_objects(store, expected, "away/")
        await store.delete_object(BUCKET, "before/big")
        del expected["before/big"]
        written_away = [
            s for key in expected if key.startswith("away/") for s in segments_of(store, key)
        ]
    os.rename(away, device_file(data_dir, 2))

    async with open_store(config, background_jobs=False) as store:
        assert store.health.statistics().down_devices == ()
        assert store.health.statistics().owed_devices == (2,)
        await assert_objects(store, expected)
        heal = await store.scrubber.scrub(devices={2})
        assert heal.clean, heal.render()
        assert heal.healed_devices == [2]
        assert heal.fragments_repaired == fragments_on(written_away, {2}) > 0
        await assert_fsck_clean(store)
    await assert_offline_fsck_clean(config)
    for index in (0, 1):
        os.unlink(device_file(data_dir, index))
    async with open_store(config, background_jobs=False) as store:
        assert store.health.statistics().down_devices == (0, 1)
        await assert_objects(store, expected)
