"""Readers with readahead: every chunk size and order gives the stored bytes,
corruption met by a readahead still surfaces on the read, and closing a reader
with readaheads in flight leaves nothing pinned.

Method: a multi-segment object spread over three in-memory devices, read
sequentially in several chunk sizes and at random offsets; a bit flipped on a
device; the `store` fixture checks fsck (including the space map) at the end.
"""

from __future__ import annotations

import os
import random

import pytest
import trio

from objfs.errors import Corrupted
from objfs.store import Store
from objfs.store.testing import MemoryDevice
from objfs.store.types import BucketName, MiB, ObjectKey, Segment

SIZE = 3 * 1024 * 1024 + 12_345  # 13 segments of 256 KiB over three devices


@pytest.fixture
def memory_devices() -> list[MemoryDevice]:
    """Smaller than conftest's 64 MiB (one ~3 MiB object needs little room), because
    zeroing six 64 MiB buffers took most of each test's time."""
    return [MemoryDevice(16 * MiB, path=f"mem{i}") for i in range(3)]


@pytest.mark.parametrize("chunk", [1000, 100_000, 256 * 1024, 1024 * 1024, 3_000_000])
async def test_sequential_reads_of_any_chunk_size_give_the_bytes(store: Store, chunk: int) -> None:
    data = os.urandom(SIZE)
    await store.create_bucket("reads")
    await store.put_object("reads", "big", data)
    parts = []
    async with store.open_reader("reads", "big") as reader:
        for offset in range(0, SIZE, chunk):
            parts.append(await reader.read(offset, chunk))
    assert b"".join(parts) == data


async def test_random_reads_give_the_bytes(store: Store) -> None:
    data = os.urandom(SIZE)
    await store.create_bucket("reads")
    await store.put_object("reads", "big", data)
    rng = random.Random(7)
    async with store.open_reader("reads", "big") as reader:
        for _ in range(200):
            offset = rng.randrange(SIZE + 10)
            size = rng.choice([1, 4096, 70_000, 300_000, 1_500_000])
            assert await reader.read(offset, size) == data[offset : offset + size]


async def test_corruption_met_by_readahead_is_raised_by_the_read(
    store: Store, memory_devices: list[MemoryDevice]
) -> None:
    data = os.urandom(SIZE)
    await store.create_bucket("reads")
    await store.put_object("reads", "big", data)
    pieces = store.index.current(BucketName("reads"), ObjectKey("big")).pieces
    victim = pieces[3]
    assert isinstance(victim.source, Segment)
    # Two of the three fragments of a 2+1 segment: fewer than k intact.
    extents = [fragment.extent for fragment in victim.source.fragments[:2]]
    for extent in extents:
        memory_devices[extent.device_index].flip_bit(extent.offset_bytes + 100)
    async with store.open_reader("reads", "big") as reader:
        # Reading pieces 0..2 sequentially starts readaheads of the next pieces.
        for piece in pieces[:3]:
            assert (
                await reader.read(piece.offset_bytes, piece.length_bytes)
                == (data[piece.end_bytes - piece.length_bytes : piece.end_bytes])
            )
        with pytest.raises(Corrupted):
            await reader.read(victim.offset_bytes, victim.length_bytes)
        after = pieces[4]
        assert await reader.read(after.offset_bytes, 10) == data[after.offset_bytes :][:10]
    # Put the bits back so the fixture's fsck (which verifies data) is clean.
    for extent in extents:
        memory_devices[extent.device_index].flip_bit(extent.offset_bytes + 100)


async def test_closing_a_reader_with_readaheads_in_flight_unpins_everything(store: Store) -> None:
    data = os.urandom(SIZE)
    await store.create_bucket("reads")
    await store.put_object("reads", "big", data)
    for _ in range(5):
        async with store.open_reader("reads", "big") as reader:
            assert await reader.read(0, 1000) == data[:1000]  # starts readaheads, then leave
    await store.delete_object("reads", "big")
    assert store.space.statistics().pinned_segments == 0
    assert store.space.statistics().deferred_frees == 0


def read_bytes(devices: list[MemoryDevice]) -> int:
    return sum(device.statistics().read_bytes for device in devices)


async def test_random_small_reads_fetch_one_fragment_sequential_reads_whole_segments(
    store: Store, memory_devices: list[MemoryDevice]
) -> None:
    """On 2+1 segments (512 KiB: two 256 KiB data fragments), a 4 KiB read away
    from where the last read ended fetches only the data fragment holding it and
    starts no readahead; a sequential read fetches whole segments and reads ahead.
    With that fragment damaged, the same read rebuilds the segment: right bytes."""
    data = os.urandom(SIZE)
    await store.create_bucket("reads")
    await store.put_object("reads", "big", data)
    pieces = store.index.current(BucketName("reads"), ObjectKey("big")).pieces
    segment = pieces[2].source
    assert isinstance(segment, Segment) and segment.data_fragments == 2
    fragment_bytes = segment.fragments[1].size_bytes
    async with store.open_reader("reads", "big") as reader:
        offset = pieces[2].offset_bytes + segment.size_bytes // 2 + 100  # data fragment 1
        before = read_bytes(memory_devices)
        assert await reader.read(offset, 4096) == data[offset : offset + 4096]
        assert read_bytes(memory_devices) - before <= fragment_bytes + 4096  # one fragment
    async with store.open_reader("reads", "big") as reader:
        before = read_bytes(memory_devices)
        assert await reader.read(0, 4096) == data[:4096]  # a first read at 0: sequential
        assert read_bytes(memory_devices) - before >= 2 * fragment_bytes  # the whole segment
    extent = segment.fragments[1].extent
    memory_devices[extent.device_index].flip_bit(extent.offset_bytes + 500)
    async with store.open_reader("reads", "big") as reader:
        assert await reader.read(offset, 4096) == data[offset : offset + 4096]
    assert store.health.statistics().degraded_reads >= 1
    memory_devices[extent.device_index].flip_bit(extent.offset_bytes + 500)


async def test_reads_in_flight_together_out_of_order_fetch_each_segment_once(
    store: Store, memory_devices: list[MemoryDevice]
) -> None:
    """The kernel sends a FUSE file's readahead as several reads at once, which
    arrive in any order: four 128 KiB reads at a time, each group started in
    reverse, still count as sequential — the right bytes, every segment fetched
    about once (not once per read), and readahead keeps going."""
    data = os.urandom(SIZE)
    await store.create_bucket("reads")
    await store.put_object("reads", "big", data)
    chunk = 128 * 1024
    offsets = list(range(0, SIZE, chunk))
    got: dict[int, bytes] = {}
    async with store.open_reader("reads", "big") as reader:
        before = read_bytes(memory_devices)

        async def read(offset: int) -> None:
            got[offset] = await reader.read(offset, chunk)

        for group in range(0, len(offsets), 4):
            async with trio.open_nursery() as nursery:
                for offset in reversed(offsets[group : group + 4]):
                    nursery.start_soon(read, offset)
        fetched = read_bytes(memory_devices) - before
    assert b"".join(got[offset] for offset in offsets) == data
    # 2+1: the data fragments are the object's bytes; whole-segment reads also
    # take the parity fragment. Re-fetching per read would be several times this.
    assert fetched <= SIZE * 3 // 2 + 13 * 3 * 4096, fetched
