"""objfs.store.writer — `ObjectWriter`: a streaming PUT in bounded memory.

Bytes arrive in any chunk sizes and are gathered into segments; each full
segment is hashed (MD5 for the ETag, in a worker thread, in order) and stored in
the background while the next one fills, with at most `in_flight` segments
alive. Nothing is visible until `commit()`: it waits for the stores, then
appends one PUT_VERSION record. A writer that is not committed frees what it
stored.

How a segment is gathered depends on the policy. Whole copies go to the devices
straight from a page-aligned buffer (O_DIRECT takes it as it is; buffers come
from the data path's pool, so each PUT does not fault in fresh memory).
Erasure-coded segments go to pyeclib, which takes only `bytes`: the chunks are
kept as they arrive (`bytes` by reference, anything else copied) and joined
once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from typing import final

import crc32c
import trio

from objfs.errors import (
    DigestMismatch,
    EntityTooLarge,
    NoSpace,
    ObjfsError,
    OutcomeUnknown,
    ReadOnly,
)
from objfs.store.datapath import DataPath
from objfs.store.device import AlignedBuffer
from objfs.store.erasure import SCHEME_REPLICAS
from objfs.store.names import MAX_OBJECT_BYTES
from objfs.store.types import ObjectVersion, Piece, Segment

# Called at commit with (size, etag, pieces, checksums or None: those given at
# open); returns the version stored.
CommitFunction = Callable[
    [int, str, tuple[Piece, ...], Mapping[str, str] | None], Awaitable[ObjectVersion]
]


@final
class _Gathered:
    """One segment's bytes while they arrive: an aligned buffer, or a list of chunks."""

    def __init__(self, buffer: AlignedBuffer | None) -> None:
        self.buffer = buffer
        self.chunks: list[bytes] = []
        self.filled = 0

    def add(self, source: bytes | None, view: memoryview) -> None:
        """Append `view`; `source` is the caller's `bytes` when `view` is all of it."""
        if self.buffer is not None:
            self.buffer.view[self.filled : self.filled + view.nbytes] = view
        else:
            self.chunks.append(source if source is not None else bytes(view))
        self.filled += view.nbytes

    def payload(self) -> AlignedBuffer | bytes:
        if self.buffer is not None:
            return self.buffer
        joined = b"".join(self.chunks)  # one chunk: the same object, no copy
        self.chunks = [joined]
        return joined


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
        self._aligned = datapath.policy.scheme == SCHEME_REPLICAS
        self._slots = trio.Semaphore(in_flight)
        self._small = bytearray()  # bytes so far, while they may still fit inline
        self._current: _Gathered | None = None
        self._sealed_bytes = 0  # bytes handed to background stores so far
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
        filled = self._current.filled if self._current is not None else 0
        return self._sealed_bytes + filled + len(self._small)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes. Blocks while `in_flight` segments are being stored (backpressure)."""
        self._raise_stored_error()
        view = memoryview(data).cast("B")
        if self.size_bytes + view.nbytes > MAX_OBJECT_BYTES:
            raise EntityTooLarge(f"an object may not be larger than {MAX_OBJECT_BYTES} bytes")
        if self._current is None and self._sealed_bytes == 0:
            # Small objects never need a segment: keep them in memory until they
            # outgrow the inline limit, then start the first segment with them.
            if len(self._small) + view.nbytes <= self._inline_max:
                self._small += view
                return
            self._current = self._start_segment()
            self._current.add(None, memoryview(self._small))
            self._small = bytearray()
        whole = data if isinstance(data, bytes) else None
        while view.nbytes:
            if self._current is None:
                self._current = self._start_segment()
            count = min(view.nbytes, self._segment_size - self._current.filled)
            self._current.add(whole if count == len(data) else None, view[:count])
            view = view[count:]
            if self._current.filled == self._segment_size:
                await self._seal()

    async def commit(
        self,
        *,
        expected_md5: str | None = None,
        checksums: Mapping[str, str] | None = None,
    ) -> ObjectVersion:
        """Make the object durable and visible; return its version.

        Args:
            expected_md5: hex MD5 the bytes must have (a client's Content-MD5).
            checksums: stored with the version instead of those given at open
                (e.g. a checksum that arrived in a trailer).

        Raises:
            DigestMismatch: the bytes' MD5 is not `expected_md5`.
            ObjfsError: from storing the bytes or from applying the record (e.g.
                the bucket went away); nothing is then visible and space is freed.
        """
        self._raise_stored_error()
        pieces: tuple[Piece, ...]
        if self._current is None and self._sealed_bytes == 0:
            data = bytes(self._small)
            self._md5.update(data)
            pieces = (Piece(0, len(data), data),) if data else ()
        else:
            if self._current is not None and self._current.filled:
                await self._seal()
            for _ in range(self._in_flight):  # every slot back: every store has finished
                await self._slots.acquire()
            self._raise_stored_error()
            pieces = self._pieces()
        etag = self._md5.hexdigest()
        if expected_md5 is not None and expected_md5.lower() != etag:
            raise DigestMismatch("The Content-MD5 you specified did not match what we received.")
        try:
            version = await self._commit_function(self.size_bytes, etag, pieces, checksums)
        except (ReadOnly, OutcomeUnknown):  # the record may yet be durable: keep its segments
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

    def _pieces(self) -> tuple[Piece, ...]:
        pieces = []
        for offset, segments in sorted(self._stored, key=lambda item: item[0]):
            for segment in segments:
                pieces.append(Piece(offset, segment.size_bytes, segment))
                offset += segment.size_bytes
        return tuple(pieces)

    def fresh_segments(self) -> list[Segment]:
        return [segment for _, segments in self._stored for segment in segments]

    def _start_segment(self) -> _Gathered:
        if self._aligned:
            return _Gathered(self._datapath.buffers.take(self._segment_size))
        return _Gathered(None)

    async def _seal(self) -> None:
        gathered = self._current
        assert gathered is not None
        self._current = None
        offset, size = self._sealed_bytes, gathered.filled
        self._sealed_bytes += size
        await self._slots.acquire()
        # The MD5 must see segments in order: each task hashes after the previous
        # one has, then stores; so hashing segment n overlaps storing n-1 and
        # receiving n+1, and the caller never waits for a hash.
        previous, mine = self._hashed, trio.Event()
        self._hashed = mine
        self._nursery.start_soon(self._store, gathered, size, offset, previous, mine)

    async def _store(
        self,
        gathered: _Gathered,
        size: int,
        offset: int,
        previous: trio.Event,
        mine: trio.Event,
    ) -> None:
        aligned = self._aligned

        def digest() -> tuple[AlignedBuffer | bytes, int | None]:
            # Joining an erasure-coded segment's chunks copies it whole: here, off the loop.
            payload = gathered.payload()
            whole = payload.view[:size] if isinstance(payload, AlignedBuffer) else payload
            with memoryview(whole) as view:
                self._md5.update(view)
                # Whole copies are stored with the CRC of these bytes: take it while
                # they are in cache. Erasure-coded fragments get theirs when encoded.
                return payload, int(crc32c.crc32c(view)) if aligned else None

        try:
            try:
                await previous.wait()
                payload, crc = await trio.to_thread.run_sync(digest)
            finally:
                mine.set()  # never leave the next segment waiting, even on failure
            segments = await self._datapath.write_segments(payload, size, whole_crc=crc)
            self._stored.append((offset, segments))
        except (ObjfsError, OSError) as exc:
            # Several segments may fail at once: tell one, NoSpace if any (as
            # `DataPath.store_bytes` does), else the first.
            if self._error is None or (
                isinstance(exc, NoSpace) and not isinstance(self._error, NoSpace)
            ):
                self._error = exc
        finally:
            if gathered.buffer is not None:
                self._datapath.buffers.give(gathered.buffer)
            self._slots.release()

    def _raise_stored_error(self) -> None:
        if self._error is not None:
            raise self._error
