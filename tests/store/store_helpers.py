"""Helpers shared by the store's fault-injection tests: payloads, puts, WAL positioning.

Each test file binds its own bucket with functools.partial.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from objfs.config import StoreConfig
from objfs.store import Store
from objfs.store.format import create_data_dir
from objfs.store.fsck import FsckReport, check_open_store
from objfs.store.types import BucketName, KiB, MiB, ObjectKey, Segment

# A 4+2 node on six 64 MiB device files with 64 KiB fragments (one stripe holds
# 256 KiB), as tests/store/test_erasure.py and test_move_segment.py use it.
ERASURE_DEVICE_COUNT = 6
ERASURE_DEVICE_BYTES = 64 * MiB
ERASURE_FRAGMENT_BYTES = 64 * KiB


def erasure_config(data_dir: str) -> StoreConfig:
    """4+2, 64 KiB fragments, checkpoints only at close, scrubs at full speed (and
    no background scrub: a rate of 0 turns it off)."""
    return StoreConfig(
        data_dir=data_dir,
        ec_policy="4+2",
        fragment_size_bytes=ERASURE_FRAGMENT_BYTES,
        checkpoint_interval_ms=3_600_000,
        scrub_rate_bytes_per_s=0,
    )


async def make_erasure_node(data_dir: str) -> StoreConfig:
    """Six fresh device files in `data_dir`; the 4+2 node's config."""
    await create_data_dir(
        data_dir, device_count=ERASURE_DEVICE_COUNT, device_size_bytes=ERASURE_DEVICE_BYTES
    )
    return erasure_config(data_dir)


def segments_of(store: Store, key: str, *, bucket: str) -> list[Segment]:
    """The segments the current version of a key reads, in order."""
    version = store.index.current(BucketName(bucket), ObjectKey(key))
    return [piece.source for piece in version.pieces if isinstance(piece.source, Segment)]


async def assert_fsck_clean(store: Store) -> FsckReport:
    """fsck of the open store, every fragment read and verified, finds nothing."""
    report = await check_open_store(store, verify_data=True)
    assert report.clean, report.render()
    return report


def payload(tag: str, size: int) -> bytes:
    """Bytes that differ per tag and per position, so a misplaced byte shows."""
    return random.Random(tag).randbytes(size)


async def put_many(
    store: Store, expected: dict[str, bytes], names: Sequence[str], *, bucket: str
) -> None:
    """Put a small inline object under each name and remember it in `expected`."""
    for name in names:
        data = payload(name, 100 + len(expected) * 37 % 900)
        await store.put_object(bucket, name, data)
        expected[name] = data


async def advance_wal_to(store: Store, target: int, modulus: int, *, bucket: str) -> None:
    """Overwrite the key "pad" with inline objects until the WAL tail is `target` mod `modulus`.

    A PUT_VERSION frame of an inline object of 256..4096 bytes is a fixed overhead
    plus the object's size; the overhead is measured with the first put.
    """
    before = store.wal.applied_position
    await store.put_object(bucket, "pad", bytes(1000))
    overhead = store.wal.applied_position - before - 1000
    for _ in range(2000):
        gap = (target - store.wal.applied_position) % modulus
        if gap == 0:
            return
        size = gap - overhead
        if size > 4096:
            size = min(4096, gap - 2 * overhead - 256)  # leaves a gap of >= overhead + 256
        elif size < 256:
            size = 1000  # go round once more
        await store.put_object(bucket, "pad", bytes(size))
    raise AssertionError(f"WAL tail never reached {target} mod {modulus}")
