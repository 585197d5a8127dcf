"""Helpers shared by the store's fault-injection tests: payloads, puts, WAL positioning.

Each test file binds its own bucket with functools.partial.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from objfs.store import Store


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
