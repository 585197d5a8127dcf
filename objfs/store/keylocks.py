"""objfs.store.keylocks — one lock per key, alive only while someone holds or waits for it.

Serialises read-modify-write changes of one key (write in place, truncate), whose
record is computed from the current version. Whole-object writes need no lock:
their record does not depend on what it replaces.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import final

import trio


@final
class KeyLocks:
    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[trio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (trio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
