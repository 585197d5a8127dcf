"""objfs.fuse.files — an open file: its unflushed writes and its ETag.

The kernel sends writes of at most 1 MiB. One `OpenFile` per inode (shared by
every handle of it) gathers contiguous writes in memory and stores them with
one `Store.write_at` per `FLUSH_BYTES` (or when a write jumps elsewhere), so a
large file written in place costs new pieces and a few records, never a whole
rewrite. Reads, truncates, renames and `close()`/`fsync()` flush first, so the
store is the truth whenever anyone else can look.

When the file is closed (flush) or synced, its ETag is set if the writes left
it unknown: the MD5 of its bytes when they were written in order from the
start (hashed as they are stored), or read back and hashed when the file is
small; a large file written out of order gets an opaque ETag in the multipart
form (`hex-1`), which clients do not take for an MD5 (docs/fuse.md).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import trio

from objfs.errors import ObjfsError, PreconditionFailed
from objfs.fuse.inodes import Node
from objfs.store import Store

log = logging.getLogger(__name__)

FLUSH_BYTES = 16 * 1024 * 1024
REHASH_MAX_BYTES = 64 * 1024 * 1024  # files up to this size get a true MD5 ETag on close


class OpenFile:
    def __init__(self, store: Store, node: Node, *, fresh: bool) -> None:
        self.store = store
        self.node = node
        self.lock = trio.Lock()  # one flush, truncate or ETag at a time
        self._start = 0  # the unflushed run: bytes [start, start + len(run))
        self._run = bytearray()
        # MD5 of bytes [0, md5_end) as stored, while every store so far continued it.
        self._md5: Any = hashlib.md5() if fresh else None
        self._md5_end = 0
        self._error: ObjfsError | None = None  # a failed background store, told at flush

    @property
    def end(self) -> int:
        """Where the unflushed bytes end (0 when there are none)."""
        return self._start + len(self._run) if self._run else 0

    # -- writes ---------------------------------------------------------------------

    async def write(self, offset: int, data: bytes) -> None:
        while not self._absorb(offset, data):
            await self.flush_data()
        if len(self._run) >= FLUSH_BYTES:
            await self.flush_data()

    def _absorb(self, offset: int, data: bytes) -> bool:
        if not self._run:
            self._start = offset
            self._run += data
            return True
        relative = offset - self._start
        if 0 <= relative <= len(self._run):
            self._run[relative : relative + len(data)] = data
            return True
        return False

    async def flush_data(self) -> None:
        """Store the unflushed bytes (waits for a store already under way)."""
        async with self.lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        if not self._run:
            return
        start, data = self._start, bytes(self._run)
        self._run = bytearray()
        hashed = self._md5 is not None and start == self._md5_end
        if not hashed:
            self._md5 = None
        failure: ObjfsError | None = None
        async with trio.open_nursery() as nursery:
            if hashed:  # hashlib lets go of the GIL: hash while the bytes are stored
                nursery.start_soon(trio.to_thread.run_sync, self._md5.update, data)
            try:
                await self.store.write_at(self.node.bucket, self.node.path, start, data)
            except ObjfsError as exc:
                failure = exc  # raised below, outside the nursery: not as a group
        if failure is not None:
            # Writes already acknowledged are lost: say so on this call and, like a
            # failed writeback, on the next fsync() or close() as well.
            self._error, self._md5 = failure, None
            raise failure
        self._md5_end += len(data) if hashed else 0

    async def truncate(self, size: int) -> None:
        async with self.lock:
            await self._flush_locked()
            await self.store.truncate(self.node.bucket, self.node.path, size)
            if size == 0:
                self._md5, self._md5_end = hashlib.md5(), 0
            elif size != self._md5_end:
                self._md5 = None

    # -- reads ----------------------------------------------------------------------

    async def read(self, offset: int, size: int) -> bytes:
        await self.flush_data()
        info = self.store.head_object(self.node.bucket, self.node.path)
        size = min(size, info.size_bytes - offset)
        if size <= 0:
            return b""
        return await self.store.get_object(
            self.node.bucket, self.node.path, offset_bytes=offset, size_bytes=size
        )

    # -- close and fsync ------------------------------------------------------------

    async def sync(self) -> None:
        """Store everything and give the object its ETag: after this, S3 sees the file."""
        async with self.lock:
            await self._flush_locked()
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            info = self.store.head_object(self.node.bucket, self.node.path)
            if info.etag is not None:
                return
            if self._md5 is not None and self._md5_end == info.size_bytes:
                etag = self._md5.hexdigest()
            elif info.size_bytes <= REHASH_MAX_BYTES:
                data = await self.store.get_object(self.node.bucket, self.node.path)
                etag = await trio.to_thread.run_sync(lambda: hashlib.md5(data).hexdigest())
            else:
                token = f"{info.bucket}/{info.key}/{info.mtime_ns}/{info.size_bytes}"
                etag = hashlib.md5(token.encode()).hexdigest() + "-1"
            try:
                await self.store.set_attributes(
                    self.node.bucket, self.node.path, etag=etag, if_mtime_ns=info.mtime_ns
                )
            except PreconditionFailed:
                log.debug("%s/%s changed while its ETag was made", info.bucket, info.key)
