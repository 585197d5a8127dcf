"""The storage core's paths that only unusual conditions reach keep their promises.

Goal: objects stored as many short segments (because free space is fragmented),
writers that fail half way, Content-MD5 mismatches and the policies that keep
more than one fragment per stripe read back byte for byte and give back their
space exactly, before and after a reopen.

Method: the three 16 MiB memory devices of tests/store/test_objects.py's `Node`
(256 KiB fragments). Free space is fragmented by filling the devices with small
objects and deleting every other one; tests assert that the objects they write
really were split. Space is compared with `store.space.free_bytes` (or, across a
reopen, test_objects' `data_free_bytes`), and every store is fsck-checked with
every fragment read when it closes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import AsyncIterator

import pytest
from store_helpers import assert_fsck_clean, payload
from test_objects import BUCKET, Node, data_free_bytes, read_all

from objfs.errors import DigestMismatch, NoSpace, NoSuchKey
from objfs.store import Store
from objfs.store.format import format_devices
from objfs.store.types import BucketName, KiB, MiB, ObjectKey, Segment

HOLE = 64 * KiB


async def made_node(policy: str) -> Node:
    made = Node()
    made.config = dataclasses.replace(made.config, ec_policy=policy)
    await format_devices(made.devices, wal_size_bytes=2 * MiB)
    return made


@pytest.fixture(params=["1+0", "1+1", "2+1"])
async def any_node(request: pytest.FixtureRequest) -> Node:
    return await made_node(request.param)


@pytest.fixture
async def fragmented(any_node: Node) -> AsyncIterator[tuple[Store, dict[str, bytes]]]:
    """An open store (any policy) whose free space is holes: (store, objects kept)."""
    async with any_node.open() as store:
        await store.create_bucket(BUCKET)
        kept = await fragment(store)
        yield store, kept
        await check_kept(store, kept)


async def fragment(store: Store) -> dict[str, bytes]:
    """Fill the devices with objects of HOLE bytes per data fragment, then delete
    every other one; return the objects left (name -> bytes).

    The space kept back for checkpoints is filled too (it is one run at the end
    of each device otherwise, where whole segments still fit). The holes left
    are many and large enough that the largest of them still hold that reserve."""
    hole = HOLE * store.policy.data_fragments
    filled: list[str] = []
    with store.space.reserve_lifted(), pytest.raises(NoSpace):
        while True:
            name = f"fill{len(filled):05d}"
            await store.put_object(BUCKET, name, payload(name, hole))
            filled.append(name)
    for name in filled[::2]:
        await store.delete_object(BUCKET, name)
    return {name: payload(name, hole) for name in filled[1::2]}


async def check_kept(store: Store, kept: dict[str, bytes]) -> None:
    for name, data in kept.items():
        assert await store.get_object(BUCKET, name) == data, name


def segments(store: Store, key: str) -> list[Segment]:
    version = store.index.current(BucketName(BUCKET), ObjectKey(key))
    return [piece.source for piece in version.pieces if isinstance(piece.source, Segment)]


def full_segment_bytes(store: Store) -> int:
    return store.datapath.segment_size_bytes


async def stream(store: Store, key: str, data: bytes, *, chunk: int = 100_000) -> None:
    async with store.open_writer(BUCKET, key) as writer:
        for start in range(0, len(data), chunk):
            await writer.write(data[start : start + chunk])
        await writer.commit()


# -- reads of split objects --------------------------------------------------------------


@pytest.mark.parametrize("any_node", ["1+0", "2+1"], indirect=True)
async def test_split_object_reads_back_in_any_range(
    fragmented: tuple[Store, dict[str, bytes]],
) -> None:
    store, _ = fragmented
    free = store.space.free_bytes
    data = payload("split", 3 * full_segment_bytes(store) + 12_345)
    await stream(store, "split", data)
    parts = segments(store, "split")
    assert len(parts) > 4, "free space was not fragmented enough to split the segments"
    assert await read_all(store, "split") == data
    # Ranges around every segment boundary, each by a reader of its own (random
    # access: only the fragments that hold it) and by one reader (sequential, cached).
    boundaries = []
    position = 0
    for segment in parts:
        position += segment.size_bytes
        boundaries.append(position)
    rng = random.Random(7)
    async with store.open_reader(BUCKET, "split") as sequential:
        for boundary in boundaries:
            for start, size in ((boundary - 1, 2), (boundary - 5000, 10_000), (boundary, 1)):
                start = max(start, 0)
                expected = data[start : start + size]
                assert (
                    await store.get_object(BUCKET, "split", offset_bytes=start, size_bytes=size)
                    == expected
                )
                assert await sequential.read(start, size) == expected
        for _ in range(50):
            start = rng.randrange(len(data))
            size = rng.randrange(1, 3 * HOLE)
            assert await sequential.read(start, size) == data[start : start + size]
    await store.delete_object(BUCKET, "split")
    assert store.space.free_bytes == free
    await assert_fsck_clean(store)


# -- composing a split object --------------------------------------------------------------


async def test_split_object_written_in_place_copied_renamed_and_deleted(any_node: Node) -> None:
    """write_at, truncate, copy, rename and overwrite of an object stored as many
    short segments: bytes right after each, and after a reopen; when every name
    is gone, exactly the space it took comes back."""
    async with any_node.open() as store:
        await store.create_bucket(BUCKET)
        kept = await fragment(store)
        empty = data_free_bytes(store)
        data = bytearray(payload("obj", 2 * full_segment_bytes(store) + 777))
        await stream(store, "obj", bytes(data))
        assert len(segments(store, "obj")) > 2
        rng = random.Random(3)
        for number in range(6):
            offset = rng.randrange(len(data) + 5000)
            patch = payload(f"patch{number}", rng.randrange(1, 3 * HOLE))
            await store.write_at(BUCKET, "obj", offset, patch)
            if offset > len(data):
                data += bytes(offset - len(data))
            data[offset : offset + len(patch)] = patch
            assert await read_all(store, "obj") == data
        await store.copy_object(BUCKET, "obj", BUCKET, "copy")
        copy = bytes(data)
        await store.truncate(BUCKET, "obj", len(data) // 3)
        del data[len(data) // 3 :]
        await store.truncate(BUCKET, "obj", len(data) + 10_000)
        data += bytes(10_000)
        await store.rename_object(BUCKET, "obj", "renamed")
        assert await read_all(store, "renamed") == data
        assert await read_all(store, "copy") == copy
        await assert_fsck_clean(store)
        used = data_free_bytes(store)
        any_node.power_cut()  # while open: the WAL replays every change
    async with any_node.open() as store:
        assert store.replayed_records > 0
        assert data_free_bytes(store) == used
        assert await read_all(store, "renamed") == data
        assert await read_all(store, "copy") == copy
        await check_kept(store, kept)
        await store.put_object(BUCKET, "copy", b"now inline")
        assert await read_all(store, "renamed") == data
        await store.delete_object(BUCKET, "renamed")
        assert data_free_bytes(store) == empty
    async with any_node.open() as store:
        assert data_free_bytes(store) == empty
        assert await read_all(store, "copy") == b"now inline"
        await check_kept(store, kept)


# -- writers that fail half way ----------------------------------------------------------


@pytest.mark.parametrize("any_node", ["1+1"], indirect=True)
async def test_writer_out_of_space_half_way_frees_what_it_stored(
    fragmented: tuple[Store, dict[str, bytes]],
) -> None:
    store, _ = fragmented
    free = store.space.free_bytes
    with pytest.raises(NoSpace):
        await stream(store, "huge", payload("huge", free + 2 * full_segment_bytes(store)))
    assert store.space.free_bytes == free
    with pytest.raises(NoSuchKey):
        store.head_object(BUCKET, "huge")
    data = payload("after", full_segment_bytes(store) + 1)
    await stream(store, "after", data)
    assert await read_all(store, "after") == data
    await store.delete_object(BUCKET, "after")
    assert store.space.free_bytes == free
    await assert_fsck_clean(store)


@pytest.mark.parametrize("any_node", ["2+1"], indirect=True)
async def test_content_md5_mismatch_of_a_split_object_frees_its_space(
    fragmented: tuple[Store, dict[str, bytes]],
) -> None:
    store, _ = fragmented
    free = store.space.free_bytes
    data = payload("md5", 2 * full_segment_bytes(store) + 5)
    with pytest.raises(DigestMismatch):
        async with store.open_writer(BUCKET, "bad") as writer:
            await writer.write(data)
            await writer.commit(expected_md5=hashlib.md5(b"other").hexdigest())
    assert store.space.free_bytes == free
    async with store.open_writer(BUCKET, "good") as writer:
        await writer.write(data)
        await writer.commit(expected_md5=hashlib.md5(data).hexdigest())
    assert len(segments(store, "good")) > 3  # the space really was fragmented
    assert await read_all(store, "good") == data
    await store.delete_object(BUCKET, "good")
    assert store.space.free_bytes == free


# -- checkpoints in fragmented space -----------------------------------------------------


async def test_space_kept_for_checkpoints_stays_usable_when_free_space_is_fragmented() -> None:
    """Data writes stop at the space kept back for the next checkpoint body. If
    that space may be any free blocks, writes can leave it as holes too small to
    hold the body in the extents a checkpoint pointer can name: then no
    checkpoint fits, the WAL fills and every change, deletes included, fails
    with NoSpace for good. The holes here are 16 KiB: 2+1 stripes of 16,000
    bytes, two of every three deleted, under an index of 1.4 MiB."""
    node = await made_node("2+1")
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        small = {f"inline{n:03d}": payload(f"inline{n}", 4096) for n in range(350)}
        for key, data in small.items():
            await store.put_object(BUCKET, key, data)
        await store.checkpoint()
        filled: list[str] = []
        with pytest.raises(NoSpace):
            while True:
                key = f"fill{len(filled):04d}"
                await store.put_object(BUCKET, key, payload(key, 16_000))
                filled.append(key)
        for number, key in enumerate(filled):
            if number % 3:
                await store.delete_object(BUCKET, key)
        kept = {key: payload(key, 16_000) for key in filled[::3]}
        big = 0
        with pytest.raises(NoSpace):
            while True:
                await store.put_object(BUCKET, f"big{big}", payload(f"big{big}", 512 * KiB))
                big += 1
        assert big, "the devices had room beyond the holes"
        # Every change needs WAL room, which a checkpoint makes: fill the WAL.
        for _ in range(40):
            await store.set_bucket_setting(BUCKET, "pad", bytes(100 * KiB))
        await store.delete_object(BUCKET, "big0")
        assert await store.checkpoint(force=True)
        await check_kept(store, kept)
        await check_kept(store, small)
    async with node.open() as store:
        await check_kept(store, kept)
        await store.delete_object(BUCKET, "big1")


async def test_mirror_device_failing_mid_stream_keeps_the_object_whole() -> None:
    """A 1+1 writer whose second device starts failing writes half way: the
    stripes written after it go to the other devices (or are owed), the object
    reads back whole, and deleting it gives back exactly its space."""
    node = await made_node("1+1")
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        free = store.space.free_bytes
        data = payload("mirrored", 10 * full_segment_bytes(store) + 5)
        async with store.open_writer(BUCKET, "k") as writer:
            await writer.write(data[: 3 * full_segment_bytes(store)])
            node.devices[1].fail_writes = True
            await writer.write(data[3 * full_segment_bytes(store) :])
            await writer.commit()
        assert 1 in store.health.down
        assert await read_all(store, "k") == data
        await assert_fsck_clean(store)
        await store.delete_object(BUCKET, "k")
        assert store.space.free_bytes == free
        node.devices[1].fail_writes = False
