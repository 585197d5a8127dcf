"""The WAL on its own: group commit, ring wrap, scan, and stale frames of earlier laps.

Method: a `Wal` over in-memory devices with a recording apply function; `scan`
must read back exactly the records that were acknowledged, in order.
"""

from __future__ import annotations

import trio

from objfs.store.records import CreateBucket, Record
from objfs.store.testing import MemoryDevice
from objfs.store.types import BucketName, Lsn, MiB
from objfs.store.wal import Wal, scan

WAL_OFFSET, WAL_SIZE, SALT = 1 * MiB, 1 * MiB, 0x1234


def make_wal(devices: list[MemoryDevice], applied: list[tuple[int, Record]], **kw: int) -> Wal:
    async def nothing() -> None:
        await trio.lowlevel.checkpoint()

    def apply(lsn: Lsn, record: Record) -> int:
        applied.append((lsn, record))
        return lsn

    return Wal(
        dict(enumerate(devices)),
        wal_offset_bytes=WAL_OFFSET,
        wal_size_bytes=WAL_SIZE,
        next_lsn=kw.get("next_lsn", 1),
        tail_position=kw.get("tail", 0),
        head_position=kw.get("head", 0),
        tail_block=b"",
        salt=SALT,
        apply=apply,
        before_write=nothing,
        request_checkpoint=lambda: None,
    )


def record(i: int, size: int = 10) -> CreateBucket:
    return CreateBucket(BucketName(f"b{i}"), "x" * size, i)


async def test_concurrent_appends_share_batches_and_apply_in_lsn_order() -> None:
    devices = [MemoryDevice(4 * MiB, path=f"m{i}") for i in range(2)]
    applied: list[tuple[int, Record]] = []
    wal = make_wal(devices, applied)
    results: dict[int, int] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(wal.run)

        async def one(i: int) -> None:
            results[i] = await wal.append(record(i))

        async with trio.open_nursery() as writers:
            for i in range(200):
                writers.start_soon(one, i)
        wal.close()
    assert [lsn for lsn, _ in applied] == list(range(1, 201))
    assert sorted(results.values()) == list(range(1, 201))
    assert wal.batches < 200  # group commit: fewer batches (and flushes) than records
    assert devices[0].stats["flushes"] == wal.batches
    for device in devices:
        result = await scan(device, WAL_OFFSET, WAL_SIZE, start_position=0, start_lsn=1, salt=SALT)
        assert [r.record for r in result.records] == [r for _, r in applied]


async def test_ring_wraps_and_scan_follows_the_wrap_frame() -> None:
    device = MemoryDevice(4 * MiB)
    applied: list[tuple[int, Record]] = []
    # Start near the end of a later lap, as after many checkpoints.
    start = 3 * WAL_SIZE - 12_288  # block-aligned, so the tail block is empty
    wal = make_wal([device], applied, next_lsn=500, tail=start, head=start)
    async with trio.open_nursery() as nursery:
        await nursery.start(wal.run)
        for i in range(20):
            await wal.append(record(i, size=3000))
        wal.close()
    result = await scan(
        device, WAL_OFFSET, WAL_SIZE, start_position=start, start_lsn=500, salt=SALT
    )
    assert [r.record for r in result.records] == [r for _, r in applied]
    assert result.end_position > 3 * WAL_SIZE  # it went round
    assert result.next_lsn == applied[-1][0] + 1


async def test_frames_of_an_earlier_lap_or_another_format_do_not_extend_the_chain() -> None:
    device = MemoryDevice(4 * MiB)
    applied: list[tuple[int, Record]] = []
    wal = make_wal([device], applied)
    async with trio.open_nursery() as nursery:
        await nursery.start(wal.run)
        for i in range(10):
            await wal.append(record(i))
        wal.close()
    # Read from the middle as if a later checkpoint said "LSN 6 at this position":
    full = await scan(device, WAL_OFFSET, WAL_SIZE, start_position=0, start_lsn=1, salt=SALT)
    middle = full.records[4].end_position
    tail = await scan(device, WAL_OFFSET, WAL_SIZE, start_position=middle, start_lsn=6, salt=SALT)
    assert [r.lsn for r in tail.records] == [6, 7, 8, 9, 10]
    # Expecting a different LSN there (a stale lap) finds nothing.
    stale = await scan(device, WAL_OFFSET, WAL_SIZE, start_position=middle, start_lsn=60, salt=SALT)
    assert stale.records == []
    other = await scan(device, WAL_OFFSET, WAL_SIZE, start_position=0, start_lsn=1, salt=SALT + 1)
    assert other.records == []
