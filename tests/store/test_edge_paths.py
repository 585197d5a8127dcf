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

import pytest
from store_helpers import payload
from test_objects import BUCKET, Node

from objfs.errors import NoSpace
from objfs.store import Store
from objfs.store.format import format_devices
from objfs.store.types import KiB, MiB


async def made_node(policy: str) -> Node:
    made = Node()
    made.config = dataclasses.replace(made.config, ec_policy=policy)
    await format_devices(made.devices, wal_size_bytes=2 * MiB)
    return made


async def check_kept(store: Store, kept: dict[str, bytes]) -> None:
    for name, data in kept.items():
        assert await store.get_object(BUCKET, name) == data, name


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
