"""A full store answers with one plain error, and still takes what frees space.

Goal: on a store out of room, a write of several segments at once fails with
`NoSpace` itself (not a group of them, which the faces take for a bug: S3 500,
the mount EIO), frees what it stored, and leaves the store usable; and a full
store still deletes, renames and changes attributes, with or without a reader
open on the object.

Method: a 2+1 store on three small O_DIRECT device files under `disk_dir`
(48 MiB each, 256 KiB fragments: a segment holds 512 KiB), filled with 1 MiB
objects until a PUT fails with NoSpace, then with small inline objects until
the index may grow no more. fsck (every fragment read) is clean at the end.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from store_helpers import assert_fsck_clean, payload

from objfs.config import StoreConfig
from objfs.errors import NoSpace, NoSuchKey
from objfs.store import Store, open_store
from objfs.store.device import create_device_file, open_devices
from objfs.store.format import create_data_dir, format_devices
from objfs.store.types import KiB, MiB

BUCKET = "full"
DEVICE_BYTES = 48 * MiB
SEGMENT_BYTES = 512 * KiB  # 2 data fragments of 256 KiB


@pytest.fixture
async def store(disk_dir: str) -> AsyncIterator[Store]:
    """An empty 2+1 store on three small device files, with one bucket."""
    data_dir = os.path.join(disk_dir, "node")
    await create_data_dir(data_dir, device_count=3, device_size_bytes=DEVICE_BYTES)
    config = StoreConfig(
        data_dir=data_dir,
        fragment_size_bytes=256 * KiB,
        checkpoint_interval_ms=3_600_000,
        scrub_rate_bytes_per_s=0,
    )
    async with open_store(config) as opened:
        assert opened.policy.describe().startswith("2+1")
        await opened.create_bucket(BUCKET)
        yield opened
        await assert_fsck_clean(opened)


async def fill_data(store: Store) -> list[str]:
    """Put 1 MiB objects until one fails with NoSpace; the keys that fit."""
    keys: list[str] = []
    while True:
        key = f"big{len(keys):03d}"
        try:
            await store.put_object(BUCKET, key, payload(key, 1 * MiB))
        except NoSpace:
            return keys
        keys.append(key)


# -- 1. several segments at once: one plain NoSpace -----------------------------------


async def test_a_write_in_place_of_several_segments_on_a_full_store_raises_no_space(
    store: Store,
) -> None:
    """`write_at` stores its bytes as several segments at once (in a nursery): when
    they do not fit, it raised a group of NoSpace errors, which the mount told as
    a bug (EIO) until it unwrapped them itself, and any other face would too."""
    await store.put_object(BUCKET, "target", b"small")
    free = store.space.free_bytes
    too_much = payload("too much", 3 * DEVICE_BYTES)
    with pytest.raises(NoSpace):
        await store.write_at(BUCKET, "target", 0, too_much)
    assert store.space.free_bytes == free
    assert await store.get_object(BUCKET, "target") == b"small"
    with pytest.raises(NoSpace):
        runs = [(0, too_much[:DEVICE_BYTES]), (2 * DEVICE_BYTES, too_much[DEVICE_BYTES:])]
        await store.write_runs(BUCKET, "target", runs)
    assert store.space.free_bytes == free
    data = payload("fits", 4 * SEGMENT_BYTES + 1)
    await store.write_at(BUCKET, "target", 0, data)
    assert await store.get_object(BUCKET, "target") == data


async def test_a_streaming_write_that_does_not_fit_raises_no_space(store: Store) -> None:
    """The streaming writer stores up to four segments at once too; its failure is
    one plain NoSpace, and what it stored is freed."""
    free = store.space.free_bytes
    with pytest.raises(NoSpace):
        async with store.open_writer(BUCKET, "huge") as writer:
            for _ in range(3 * DEVICE_BYTES // MiB):
                await writer.write(payload("chunk", 1 * MiB))
            await writer.commit()
    assert store.space.free_bytes == free
    with pytest.raises(NoSuchKey):
        store.head_object(BUCKET, "huge")


# -- 2. a full store still frees space and changes metadata ------------------------------


async def fill(store: Store) -> list[str]:
    """Fill the data space, then grow the index with small inline objects until
    the store refuses (the devices are down to the space kept for checkpoints);
    the keys stored."""
    keys = await fill_data(store)
    with pytest.raises(NoSpace):
        while True:
            key = f"small{len(keys):04d}"
            await store.put_object(BUCKET, key, payload(key, 4000))
            keys.append(key)
    assert not store.space.room_to_grow()
    return keys


async def test_a_full_store_deletes_renames_and_changes_attributes(store: Store) -> None:
    """Nothing that frees space or only changes metadata needs room: on a store
    that refuses every PUT, these all work, a reader open on the object deleted
    keeps reading it, and then there is room again."""
    await store.put_object(BUCKET, "dir/a", payload("a", 1 * MiB))
    await store.put_object(BUCKET, "dir/b", payload("b", 1 * MiB))
    await store.put_object(BUCKET, "read", payload("read", 3 * MiB))
    keys = await fill(store)
    with pytest.raises(NoSpace):
        await store.put_object(BUCKET, "more", b"x")
    await store.set_attributes(BUCKET, "dir/a", content_type="text/plain")
    await store.rename_object(BUCKET, "dir/a", "other/a")
    await store.rename_prefix(BUCKET, "dir/", "moved/")
    await store.truncate(BUCKET, "moved/b", 10)
    async with store.open_reader(BUCKET, "read") as reader:
        await store.delete_object(BUCKET, "read")
        assert await reader.read(0, 3 * MiB) == payload("read", 3 * MiB)
    await store.delete_object(BUCKET, "other/a")
    await store.delete_object(BUCKET, "moved/b")
    for key in keys[:4]:
        await store.delete_object(BUCKET, key)
    await store.put_object(BUCKET, "more", payload("more", 1 * MiB))
    assert await store.get_object(BUCKET, "more") == payload("more", 1 * MiB)


async def test_a_full_store_lets_a_face_set_an_object_aside_and_keep_a_directory(
    store: Store,
) -> None:
    """The mount sets an open file aside when it is unlinked (a copy, then a delete
    of the source) and gives a directory S3 made its marker (an empty object)
    when its last name goes: a full store refused both, so rm said ENOSPC. With
    `use_reserve` they are made; without it, they are still refused."""
    await store.create_bucket(".objfs-aside", internal=True)
    await store.put_object(BUCKET, "dir/open", payload("open", 1 * MiB))
    await fill(store)
    with pytest.raises(NoSpace):
        await store.copy_object(BUCKET, "dir/open", ".objfs-aside", "1")
    with pytest.raises(NoSpace):
        await store.put_object(BUCKET, "dir/", b"")
    await store.copy_object(BUCKET, "dir/open", ".objfs-aside", "1", use_reserve=True)
    await store.put_object(BUCKET, "dir/", b"", use_reserve=True)
    await store.delete_object(BUCKET, "dir/open")
    assert await store.get_object(".objfs-aside", "1") == payload("open", 1 * MiB)
    assert store.head_object(BUCKET, "dir/").size_bytes == 0
    with pytest.raises(NoSpace):
        await store.put_object(BUCKET, "big", payload("big", 1 * MiB), use_reserve=True)
    await store.delete_object(".objfs-aside", "1")


# -- 3. what the store says is still available -----------------------------------------


async def test_available_bytes_are_what_writes_can_still_take(store: Store) -> None:
    """`statistics().available_bytes` (a mount's df) is free space less the space
    kept for checkpoints on each metadata device: free space counted it, so df
    showed megabytes free on a store that refused every write."""
    stats = store.statistics()
    assert stats.available_bytes <= stats.free_bytes - 3 * store.space.reserve_bytes
    keys = await fill_data(store)
    assert_about_what_was_stored(store, stats.available_bytes, len(keys) * MiB)
    assert store.statistics().available_bytes < 2 * MiB  # not room for one more object
    await fill(store)
    assert store.statistics().available_bytes == 0


async def test_available_bytes_count_only_space_stripes_can_use(disk_dir: str) -> None:
    """Each 2+1 stripe takes a fragment on each of three devices: of devices of
    32, 32 and 96 MiB, the large one's space beyond the others' is no use to
    them, and available space must not count it."""
    directory = os.path.join(disk_dir, "node", "devices")
    os.makedirs(directory)
    paths = [os.path.join(directory, f"dev{i}.img") for i in range(3)]
    for path, size in zip(paths, (32 * MiB, 32 * MiB, 96 * MiB), strict=True):
        create_device_file(path, size)
    devices = await open_devices(paths)
    try:
        await format_devices(devices)
    finally:
        for device in devices:
            await device.aclose()
    config = StoreConfig(data_dir=os.path.join(disk_dir, "node"), fragment_size_bytes=256 * KiB)
    async with open_store(config) as opened:
        await opened.create_bucket(BUCKET)
        available = opened.statistics().available_bytes
        keys = await fill_data(opened)
        assert_about_what_was_stored(opened, available, len(keys) * MiB)
        assert opened.statistics().available_bytes < 2 * MiB  # not room for one more object
        for key in keys:
            await opened.delete_object(BUCKET, key)
        await assert_fsck_clean(opened)


def assert_about_what_was_stored(store: Store, available_bytes: int, stored_bytes: int) -> None:
    """Available space said before a fill (device bytes: with parity) was what
    the fill stored, give or take one 1 MiB object and the block each fragment
    rounds up to."""
    policy = store.policy
    user_bytes = available_bytes * policy.data_fragments // policy.width
    assert stored_bytes <= user_bytes < stored_bytes + 2 * MiB
