"""Moving a segment's fragments (MOVE_SEGMENT) on real device files.

Goal: a stored segment can be written again elsewhere and every version that
reads it follows, with nothing lost, leaked or handed out twice: the
operation a cluster uses to move stripes off a node that leaves
(docs/cluster.md). The segment keeps its id, so copies made by reference keep
sharing it; the first block of its old first extent stays reserved while it
is referenced (no new segment can get the same id), and is freed with it.

Method: a 4+2 node on six 64 MiB device files (as tests/store/test_erasure.py),
objects of one and several stripes, a copy by reference. Every segment is
moved with `Store.move_segment`; the tests assert on the bytes read back, on
where the fragments are, on the free space (to the block), on fsck with data
verification (online and offline, which rebuilds the space map from the
checkpoint's moved table and the WAL), and across a reopen.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator

import pytest
import store_helpers
from store_helpers import assert_fsck_clean, make_erasure_node, payload

from objfs.store import Store, open_store
from objfs.store.fsck import run_fsck
from objfs.store.types import BLOCK_SIZE_BYTES, KiB, MiB, Segment

BUCKET = "moves"
segments_of = functools.partial(store_helpers.segments_of, bucket=BUCKET)
SIZES = {"small": 3000, "one": 100 * KiB, "several": 1 * MiB + 4321}


@pytest.fixture
def data_dir(disk_dir: str) -> Iterator[str]:
    yield os.path.join(disk_dir, "node")


def extents_of(segments: list[Segment]) -> set[tuple[int, int]]:
    return {(f.extent.device_index, f.extent.offset_bytes) for s in segments for f in s.fragments}


async def put_all(store: Store) -> dict[str, bytes]:
    await store.create_bucket(BUCKET)
    expected = {}
    for key, size in SIZES.items():
        expected[key] = payload(key, size)
        await store.put_object(BUCKET, key, expected[key])
    await store.copy_object(BUCKET, "several", BUCKET, "copy")
    expected["copy"] = expected["several"]
    return expected


async def assert_objects(store: Store, expected: dict[str, bytes]) -> None:
    for key, data in expected.items():
        assert await store.get_object(BUCKET, key) == data, key
        assert (
            await store.get_object(BUCKET, key, offset_bytes=70_000, size_bytes=9)
            == (data[70_000:70_009])
        ), key


async def test_moved_segments_read_the_same_bytes_from_new_fragments_and_free_the_old(
    data_dir: str,
) -> None:
    """Every segment moved: the objects and the copy that shares their segments
    read the same bytes, from none of the old fragments; the old fragments are
    free but for one block per segment (its id), fsck is clean online and
    offline and after a reopen, and deleting everything gives back every byte."""
    config = await make_erasure_node(data_dir)
    async with open_store(config, background_jobs=False) as store:
        expected = await put_all(store)
        old = {key: segments_of(store, key) for key in expected}
        assert [s.segment_id for s in old["copy"]] == [s.segment_id for s in old["several"]]
        ids = sorted({s.segment_id for segments in old.values() for s in segments})
        assert len(ids) == 1 + 5  # "one", and "several" in five stripes of 256 KiB
        free_before = store.space.free_bytes

        for segment_id in ids:
            assert await store.move_segment(segment_id)

        assert store.index.moved_count() == len(ids)
        await assert_objects(store, expected)
        for key in ("one", "several", "copy"):
            new = segments_of(store, key)
            assert [s.segment_id for s in new] == [s.segment_id for s in old[key]]
            assert not extents_of(new) & extents_of(old[key]), key
        # Same sizes of stripes; one block per segment stays reserved as its id.
        assert store.space.free_bytes == free_before - len(ids) * BLOCK_SIZE_BYTES
        await assert_fsck_clean(store)

    report = await run_fsck(config, verify_data=True, repair=False)
    assert report.clean, report.render()

    async with open_store(config, background_jobs=False) as store:
        assert store.index.moved_count() == len(ids)
        await assert_objects(store, expected)
        await assert_fsck_clean(store)
        held = sum(extent.length_bytes for extent in store.index.referenced_extents())
        free = store.space.free_bytes
        for key in expected:
            await store.delete_object(BUCKET, key)
        assert store.index.moved_count() == 0
        assert store.space.free_bytes == free + held  # the id blocks included
        await assert_fsck_clean(store)


async def test_a_segment_moved_twice_and_copied_in_between_keeps_one_identity(
    data_dir: str,
) -> None:
    """A copy made after the first move embeds the moved storage; a second move
    is followed by both names, and deleting the original leaves the copy whole."""
    config = await make_erasure_node(data_dir)
    async with open_store(config, background_jobs=False) as store:
        expected = await put_all(store)
        (segment,) = segments_of(store, "one")
        assert await store.move_segment(segment.segment_id)
        await store.copy_object(BUCKET, "one", BUCKET, "one-copy")
        expected["one-copy"] = expected["one"]
        assert await store.move_segment(segment.segment_id)
        (moved,) = segments_of(store, "one-copy")
        assert moved.segment_id == segment.segment_id
        assert moved == segments_of(store, "one")[0]
        await store.delete_object(BUCKET, "one")
        del expected["one"]
        await assert_objects(store, expected)
        await assert_fsck_clean(store)
    async with open_store(config, background_jobs=False) as store:
        await assert_objects(store, expected)
        await assert_fsck_clean(store)


async def test_a_reader_open_across_a_move_keeps_reading_its_fragments(data_dir: str) -> None:
    """A reader opened before the move holds the old fragments: they are freed
    when it closes, not before, even while new writes take free space."""
    config = await make_erasure_node(data_dir)
    async with open_store(config, background_jobs=False) as store:
        expected = await put_all(store)
        async with store.open_reader(BUCKET, "several") as reader:
            for segment in segments_of(store, "several"):
                assert await store.move_segment(segment.segment_id)
            for number in range(40):  # enough to reuse the old extents if they were free
                await store.put_object(BUCKET, f"filler-{number}", payload(str(number), 300_000))
            assert await reader.read(0, reader.size_bytes) == expected["several"]
            assert store.space.statistics().deferred_frees == 5
        assert store.space.statistics().deferred_frees == 0
        await assert_objects(store, expected)
        await assert_fsck_clean(store)


async def test_moving_a_segment_deleted_meanwhile_frees_its_new_fragments(data_dir: str) -> None:
    """A move of a segment nothing references (any more) reports False and
    leaves no new fragment behind."""
    config = await make_erasure_node(data_dir)
    async with open_store(config, background_jobs=False) as store:
        await put_all(store)
        (segment,) = segments_of(store, "one")
        await store.delete_object(BUCKET, "one")
        free = store.space.free_bytes
        assert not await store.move_segment(segment.segment_id)
        assert store.space.free_bytes == free
        await assert_fsck_clean(store)
