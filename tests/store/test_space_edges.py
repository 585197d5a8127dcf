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
from objfs.store.format import create_data_dir
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
