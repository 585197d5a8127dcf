"""objfs.fuse.files — an open file: its unflushed writes and its ETag.

The kernel sends writes of at most 1 MiB. One `OpenFile` per inode (shared by
every handle of it) gathers writes in memory as runs of contiguous bytes and
stores them with one `Store.write_runs` (one record, the bytes of every run
side by side in shared segments) per `FLUSH_BYTES` or `MAX_RUNS`, so a large
file written in place costs new pieces and few records, never a rewrite, and
random small writes cost a record per thousands of them. Reads, truncates,
renames and `close()`/`fsync()` store what is gathered first, so the store is
the truth whenever anyone else can look. Reads go through one reader
held open (by a task in the mount's nursery) while the version stays the same,
so sequential reads get the store's readahead.

When the file is closed (flush) or synced, its ETag is set if the writes left
it unknown: the MD5 of its bytes when they were written in order from the
start (hashed as they are stored), or read back and hashed when the file is
small; a large file written out of order gets an opaque ETag in the multipart
form (`hex-1`), which clients do not take for an MD5 (docs/fuse.md).
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import time
from typing import Any

import trio

from objfs.errors import ObjfsError, PreconditionFailed
from objfs.fuse.inodes import Node
from objfs.store import Store
from objfs.store.reader import ObjectReader

log = logging.getLogger(__name__)

FLUSH_BYTES = 16 * 1024 * 1024  # unstored bytes of one file that start a store
MAX_RUNS = 4096  # separate runs (random writes) that start one
REHASH_MAX_BYTES = 64 * 1024 * 1024  # files up to this size get a true MD5 ETag on close


class _HeldReader:
    """A reader kept open by a task of the mount's nursery, for one version."""

    def __init__(self, identity: tuple[str, str, int, int]) -> None:
        self.identity = identity  # (bucket, key, mtime, size): the version it reads
        self.reader: ObjectReader | None = None
        self.done = trio.Event()


class OpenFile:
    def __init__(self, store: Store, node: Node, nursery: trio.Nursery, *, fresh: bool) -> None:
        self.store = store
        self.node = node
        self._nursery = nursery  # where held readers live
        self._held: _HeldReader | None = None
        # One store, truncate or ETag at a time, in the order asked (FIFO). Not a
        # Lock: a store behind the writer is handed the semaphore by another task.
        self.lock = trio.Semaphore(1)
        self._storing_end = 0  # where the runs being stored behind the writer end
        # Unstored writes: runs of contiguous bytes, sorted, apart (never touching).
        self._starts: list[int] = []
        self._runs: list[bytearray] = []
        self._buffered = 0  # bytes in the runs
        # MD5 of bytes [0, md5_end) as stored, while every store so far continued it.
        self._md5: Any = hashlib.md5() if fresh else None
        self._md5_end = 0
        self._error: Exception | None = None  # a failed background store, told at flush
        # When the last write came (the file's mtime from then on, stored with the runs).
        self.written_ns: int | None = None

    @property
    def end(self) -> int:
        """Where the bytes not yet stored end (0 when there are none)."""
        runs_end = self._starts[-1] + len(self._runs[-1]) if self._runs else 0
        return max(runs_end, self._storing_end)

    # -- writes ---------------------------------------------------------------------

    async def write(self, offset: int, data: bytes) -> None:
        if self._error is not None:
            self._raise_error()
        self._absorb(offset, data)
        self.written_ns = time.time_ns()
        if self._buffered >= FLUSH_BYTES or len(self._runs) >= MAX_RUNS:
            # Store these runs behind the writer; the next ones gather meanwhile.
            # One store at a time: a writer faster than the store waits here.
            await self.lock.acquire()
            runs = self._take_runs()
            self._storing_end = runs[-1][0] + len(runs[-1][1]) if runs else 0
            self._nursery.start_soon(self._store_behind, runs)

    def _absorb(self, offset: int, data: bytes) -> None:
        """Lay `data` over the runs, merging the runs it overlaps or touches."""
        end = offset + len(data)
        starts, runs = self._starts, self._runs
        first = bisect.bisect_right(starts, offset) - 1  # the run starting at or before
        if first < 0 or starts[first] + len(runs[first]) < offset:
            first += 1  # that run ends before the write: not touched
        last = bisect.bisect_right(starts, end) - 1  # the last run starting by its end
        if first > last:  # touches nothing: a run of its own
            starts.insert(first, offset)
            runs.insert(first, bytearray(data))
            self._buffered += len(data)
            return
        if first == last and starts[first] <= offset:  # inside or extending one run
            run = runs[first]
            before = len(run)
            run[offset - starts[first] : end - starts[first]] = data
            self._buffered += len(run) - before
            return
        low = min(offset, starts[first])
        high = max(end, starts[last] + len(runs[last]))
        merged = bytearray(high - low)
        for start, run in zip(starts[first : last + 1], runs[first : last + 1], strict=True):
            merged[start - low : start - low + len(run)] = run
            self._buffered -= len(run)
        merged[offset - low : end - low] = data
        self._buffered += len(merged)
        starts[first : last + 1] = [low]
        runs[first : last + 1] = [merged]

    def _take_runs(self) -> list[tuple[int, bytearray]]:
        runs = list(zip(self._starts, self._runs, strict=True))
        self._starts, self._runs, self._buffered = [], [], 0
        return runs

    async def _store_behind(self, runs: list[tuple[int, bytearray]]) -> None:
        try:
            await self._store(runs)
        except ObjfsError:
            pass  # kept in self._error: the next write, fsync or close reports it
        except Exception:
            log.exception("storing writes to %s/%s failed", self.node.bucket, self.node.path)
        finally:
            self._storing_end = 0
            self.lock.release()

    async def flush_data(self) -> None:
        """Store the unflushed bytes (after a store already under way)."""
        async with self.lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        if self._runs:
            await self._store(self._take_runs())

    async def _store(self, runs: list[tuple[int, bytearray]]) -> None:
        hashed = self._md5 is not None and len(runs) == 1 and runs[0][0] == self._md5_end
        if not hashed:
            self._md5 = None
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            if hashed:  # hashlib lets go of the GIL: hash while the bytes are stored
                nursery.start_soon(trio.to_thread.run_sync, self._md5.update, runs[0][1])
            try:
                await self.store.write_runs(
                    self.node.bucket, self.node.path, runs, mtime_ns=self.written_ns
                )
            except Exception as exc:  # any: the MD5 may hold bytes now lost
                failure = exc  # raised below, outside the nursery: not as a group
        if failure is not None:
            # Writes already acknowledged are lost: say so on this call and, like a
            # failed writeback, on the next fsync() or close() as well.
            self._error, self._md5 = failure, None
            raise failure
        self._md5_end += len(runs[0][1]) if hashed else 0

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        assert error is not None
        raise error

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
        if offset >= info.size_bytes or size <= 0:
            return b""
        held = self._held
        if held is None or held.identity != (info.bucket, info.key, info.mtime_ns, info.size_bytes):
            self.close_reader()
            self._held = held = _HeldReader((info.bucket, info.key, info.mtime_ns, info.size_bytes))
            await self._nursery.start(self._hold_reader, held)
        assert held.reader is not None
        return await held.reader.read(offset, size)

    async def _hold_reader(
        self, held: _HeldReader, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep one reader open across reads (it reads ahead) until `close_reader`."""
        started = False
        try:
            async with self.store.open_reader(self.node.bucket, self.node.path) as reader:
                held.reader = reader
                task_status.started()
                started = True
                await held.done.wait()
        except Exception:
            if not started:
                raise  # the read that asked for it fails with this
            log.exception("the reader of %s/%s failed", self.node.bucket, self.node.path)

    def close_reader(self) -> None:
        if self._held is not None:
            self._held.done.set()
            self._held = None

    # -- close and fsync ------------------------------------------------------------

    async def sync(self) -> None:
        """Store everything and give the object its ETag: after this, S3 sees the file."""
        async with self.lock:
            await self._flush_locked()
            if self._error is not None:
                self._raise_error()
            done = self._md5.hexdigest() if self._md5 is not None else None
            await settle_etag(self.store, self.node.bucket, self.node.path, done, self._md5_end)


async def settle_etag(
    store: Store, bucket: str, key: str, md5: str | None = None, md5_end: int = 0
) -> None:
    """Give an object whose bytes changed in place its ETag again (module docstring):
    `md5` is the MD5 of its first `md5_end` bytes when the writer hashed them."""
    info = store.head_object(bucket, key)
    if info.etag is not None:
        return
    if md5 is not None and md5_end == info.size_bytes:
        etag = md5
    elif info.size_bytes <= REHASH_MAX_BYTES:
        data = await store.get_object(bucket, key)
        etag = await trio.to_thread.run_sync(lambda: hashlib.md5(data).hexdigest())
    else:
        token = f"{info.bucket}/{info.key}/{info.mtime_ns}/{info.size_bytes}"
        etag = hashlib.md5(token.encode()).hexdigest() + "-1"
    try:
        await store.set_attributes(bucket, key, etag=etag, if_mtime_ns=info.mtime_ns)
    except PreconditionFailed:
        log.debug("%s/%s changed while its ETag was made", bucket, key)
