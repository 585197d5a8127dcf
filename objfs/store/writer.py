"""objfs.store.writer — `ObjectWriter`: a streaming PUT in bounded memory.

Bytes arrive in any chunk sizes and are gathered into aligned segment buffers;
each full buffer is hashed (MD5 for the ETag, in a worker thread) and written in
the background while the next one fills, with at most `in_flight` buffers alive.
Nothing is visible until `commit()`: it waits for the writes, then appends one
PUT_VERSION record. A writer that is not committed frees what it stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import final

import crc32c
import trio

from objfs.errors import EntityTooLarge, ObjfsError, ReadOnly
from objfs.store.datapath import DataPath
from objfs.store.device import AlignedBuffer
from objfs.store.erasure import SCHEME_REPLICAS
from objfs.store.names import MAX_OBJECT_BYTES
from objfs.store.types import ObjectVersion, Piece, Segment

# Called at commit with (size, etag, pieces, fresh segments); returns the version stored.
CommitFunction = Callable[[int, str, tuple[Piece, ...]], Awaitable[ObjectVersion]]


@final
class ObjectWriter:
    def __init__(
        self,
        datapath: DataPath,
        nursery: trio.Nursery,
        *,
        segment_size_bytes: int,
        inline_max_bytes: int,
        in_flight: int,
        commit: CommitFunction,
    ) -> None:
        self._datapath = datapath
        self._nursery = nursery
        self._segment_size = segment_size_bytes
        self._inline_max = inline_max_bytes
        self._in_flight = in_flight
        self._commit_function = commit
        self._slots = trio.Semaphore(in_flight)
        self._free_buffers: list[AlignedBuffer] = []
        self._small = bytearray()  # bytes so far, while they may still fit inline
        self._buffer: AlignedBuffer | None = None
        self._filled = 0
        self._sealed_bytes = 0  # bytes handed to background writes so far
        self._md5 = hashlib.md5()
        self._hashed = trio.Event()  # set when every sealed segment so far is hashed
        self._hashed.set()
        self._stored: list[tuple[int, list[Segment]]] = []  # (object offset, segments)
        self._error: BaseException | None = None
        self.committed = False
        # Set when the commit's record may be on disk although the commit failed
        # (the WAL failed mid-write): its segments must then not be freed.
        self.record_maybe_durable = False
        self.version: ObjectVersion | None = None

    @property
    def size_bytes(self) -> int:
        return self._sealed_bytes + self._filled + len(self._small)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes. Blocks while `in_flight` segments are being written (backpressure)."""
        self._raise_stored_error()
        view = memoryview(data).cast("B")
        if self.size_bytes + view.nbytes > MAX_OBJECT_BYTES:
            raise EntityTooLarge(f"an object may not be larger than {MAX_OBJECT_BYTES} bytes")
        if self._buffer is None and self._sealed_bytes == 0:
            # Small objects never need an aligned buffer: keep them in memory until
            # they outgrow the inline limit, then move them into segment buffers.
            if len(self._small) + view.nbytes <= self._inline_max:
                self._small += view
                return
            self._buffer = self._take_buffer()
            self._filled = len(self._small)
            self._buffer.view[: self._filled] = self._small
            self._small = bytearray()
        while view.nbytes:
            if self._buffer is None:
                self._buffer = self._take_buffer()
            if self._filled == self._segment_size:
                await self._seal()
                continue
            count = min(view.nbytes, self._segment_size - self._filled)
            self._buffer.view[self._filled : self._filled + count] = view[:count]
            self._filled += count
            view = view[count:]
            if self._filled == self._segment_size:
                await self._seal()

    async def commit(self) -> ObjectVersion:
        """Make the object durable and visible; return its version.

        Raises:
            ObjfsError: from storing the bytes or from applying the record (e.g.
                the bucket went away); nothing is then visible and space is freed.
        """
        self._raise_stored_error()
        pieces: tuple[Piece, ...]
        if self._buffer is None and self._sealed_bytes == 0:
            data = bytes(self._small)
            self._md5.update(data)
            pieces = (Piece(0, len(data), data),) if data else ()
        else:
            if self._filled:
                await self._seal()
            for _ in range(self._in_flight):  # every slot back: every write has finished
                await self._slots.acquire()
            self._raise_stored_error()
            pieces = self._pieces()
        try:
            version = await self._commit_function(self.size_bytes, self._md5.hexdigest(), pieces)
        except ReadOnly:
            self.record_maybe_durable = True
            raise
        self.committed = True
        self.version = version
        return version

    def discard(self) -> None:
        """Free whatever was stored; for a writer that will not commit."""
        for _, segments in self._stored:
            self._datapath.discard(segments)
        self._stored.clear()
        # Dropped, not closed: an exception in flight may still hold a view of one,
        # and closing would replace it with a BufferError. GC unmaps them.
        self._free_buffers.clear()

    def _pieces(self) -> tuple[Piece, ...]:
        pieces = []
        for offset, segments in sorted(self._stored, key=lambda item: item[0]):
            for segment in segments:
                pieces.append(Piece(offset, segment.size_bytes, segment))
                offset += segment.size_bytes
        return tuple(pieces)

    def fresh_segments(self) -> list[Segment]:
        return [segment for _, segments in self._stored for segment in segments]

    def _take_buffer(self) -> AlignedBuffer:
        if self._free_buffers:
            return self._free_buffers.pop()
        return AlignedBuffer(self._segment_size)

    async def _seal(self) -> None:
        buffer, size = self._buffer, self._filled
        assert buffer is not None
        self._buffer, self._filled = None, 0
        offset = self._sealed_bytes
        self._sealed_bytes += size
        await self._slots.acquire()
        # The MD5 must see segments in order: each task hashes after the previous
        # one has, then writes; so hashing segment n overlaps writing n-1 and
        # receiving n+1, and the caller never waits for a hash.
        previous, mine = self._hashed, trio.Event()
        self._hashed = mine
        self._nursery.start_soon(self._store, buffer, size, offset, previous, mine)

    async def _store(
        self,
        buffer: AlignedBuffer,
        size: int,
        offset: int,
        previous: trio.Event,
        mine: trio.Event,
    ) -> None:
        view = buffer.view[:size]

        whole_crc = self._datapath.policy.scheme == SCHEME_REPLICAS

        def digest() -> int | None:
            self._md5.update(view)
            # Whole copies are stored with the CRC of these bytes: take it while
            # they are in cache. Erasure-coded fragments get theirs when encoded.
            return int(crc32c.crc32c(view)) if whole_crc else None

        try:
            try:
                await previous.wait()
                crc = await trio.to_thread.run_sync(digest)
            finally:
                mine.set()  # never leave the next segment waiting, even on failure
            segments = await self._datapath.write_segments(buffer, size, whole_crc=crc)
            self._stored.append((offset, segments))
        except (ObjfsError, OSError) as exc:
            self._error = exc
        finally:
            view.release()
            self._free_buffers.append(buffer)
            self._slots.release()

    def _raise_stored_error(self) -> None:
        if self._error is not None:
            raise self._error
