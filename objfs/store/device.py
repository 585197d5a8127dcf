"""objfs.store.device — the only module that issues disk syscalls.

A device is a block device or a preallocated file, opened with O_DIRECT (or, by
explicit opt-in, buffered with fdatasync). Every syscall runs in a worker thread
through `trio.to_thread.run_sync` with one `CapacityLimiter` per device, so a slow
disk never stalls the event loop. Calls that take several writes or reads do them
in one thread hop, because each hop costs ~110 us here.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, final

import trio

from objfs.errors import DeviceError, NoSpace, ObjfsError
from objfs.store.types import BLOCK_SIZE_BYTES

log = logging.getLogger(__name__)
T = TypeVar("T")

Buffer = bytes | bytearray | memoryview


def round_up(value: int, multiple: int = BLOCK_SIZE_BYTES) -> int:
    """Round up to a multiple: round_up(1) == 4096, round_up(4096) == 4096, round_up(0) == 0."""
    return -(-value // multiple) * multiple


def round_down(value: int, multiple: int = BLOCK_SIZE_BYTES) -> int:
    return value - value % multiple


@final
class AlignedBuffer:
    """Page-aligned memory (an anonymous mmap) that O_DIRECT accepts without a copy.

    Callers fill `view` and hand the buffer to `BlockDevice.write`; the capacity is
    always a whole number of blocks.
    """

    __slots__ = ("_map", "capacity_bytes", "view")

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = max(round_up(capacity_bytes), BLOCK_SIZE_BYTES)
        self._map = mmap.mmap(-1, self.capacity_bytes)
        self.view = memoryview(self._map)

    def close(self) -> None:
        self.view.release()
        self._map.close()


WriteData = Buffer | tuple[AlignedBuffer, int]  # bytes, or (aligned buffer, length used)


@dataclass(frozen=True, slots=True)
class DeviceStatistics:
    path: str
    size_bytes: int
    reads: int
    read_bytes: int
    writes: int
    written_bytes: int
    flushes: int
    direct_io: bool
    io_errors: int = 0  # syscalls that failed (EIO, ENOSPC, ...), as the caller saw them


class BlockDevice(Protocol):
    """What the store needs of a device. Offsets of writes are block-aligned.

    Reads may be at any offset and length (the device reads the covering blocks).
    A write shorter than a block multiple is padded with zeros to the next block.
    """

    path: str
    size_bytes: int

    async def read(self, offset_bytes: int, length_bytes: int) -> bytes: ...

    async def read_many(self, requests: Sequence[tuple[int, int]]) -> list[bytes]: ...

    async def write(self, offset_bytes: int, data: WriteData) -> None: ...

    async def write_many(
        self, writes: Sequence[tuple[int, WriteData]], *, flush: bool = False
    ) -> None: ...

    async def flush(self) -> None: ...

    async def aclose(self) -> None: ...

    def statistics(self) -> DeviceStatistics: ...


class _Scratch(threading.local):
    """Per-thread aligned buffer for reads and for writes of unaligned memory."""

    buffer: AlignedBuffer | None = None

    def get(self, size_bytes: int) -> AlignedBuffer:
        if self.buffer is None or self.buffer.capacity_bytes < size_bytes:
            if self.buffer is not None:
                self.buffer.close()
            self.buffer = AlignedBuffer(max(size_bytes, 1024 * 1024))
        return self.buffer


_scratch = _Scratch()


class DeviceInUse(DeviceError):
    """Another process holds the device's lock (objfs is already running on it)."""


@final
class FileDevice:
    """A block device or preallocated file, opened O_DIRECT (or buffered, opt-in)."""

    def __init__(self, path: str, fd: int, size_bytes: int, *, direct_io: bool, threads: int):
        self.path = path
        self.size_bytes = size_bytes
        self._fd = fd
        self._direct_io = direct_io
        self._limiter = trio.CapacityLimiter(threads)
        self._closed = False
        self._reads = self._read_bytes = self._writes = self._written_bytes = self._flushes = 0
        self._io_errors = 0  # counted on the event loop, when a worker's syscall raised

    # -- the syscalls (worker threads only) --------------------------------------

    def _check_range(self, offset_bytes: int, length_bytes: int) -> None:
        if offset_bytes < 0 or offset_bytes + length_bytes > self.size_bytes:
            raise DeviceError(
                f"{self.path}: I/O at [{offset_bytes}, {offset_bytes + length_bytes}) "
                f"is outside the device ({self.size_bytes} bytes)"
            )

    def _read_sync(self, offset_bytes: int, length_bytes: int) -> bytes:
        start = round_down(offset_bytes)
        end = round_up(offset_bytes + length_bytes)
        self._check_range(start, end - start)
        scratch = _scratch.get(end - start)
        view = scratch.view[: end - start]
        done = 0
        while done < end - start:
            count = os.preadv(self._fd, [view[done:]], start + done)
            if count == 0:
                raise DeviceError(f"{self.path}: short read at {start + done}")
            done += count
        self._reads += 1
        self._read_bytes += end - start
        skip = offset_bytes - start
        return bytes(view[skip : skip + length_bytes])

    def _write_sync(self, offset_bytes: int, data: WriteData) -> None:
        if offset_bytes % BLOCK_SIZE_BYTES:
            raise ValueError(f"{self.path}: unaligned write offset {offset_bytes}")
        if isinstance(data, tuple):
            buffer, length_bytes = data
            padded = round_up(length_bytes)
            buffer.view[length_bytes:padded] = bytes(padded - length_bytes)
            view = buffer.view[:padded]
        else:
            length_bytes = len(data)
            padded = round_up(length_bytes)
            scratch = _scratch.get(padded)
            scratch.view[:length_bytes] = data
            scratch.view[length_bytes:padded] = bytes(padded - length_bytes)
            view = scratch.view[:padded]
        self._check_range(offset_bytes, padded)
        done = 0
        try:
            while done < padded:
                done += os.pwritev(self._fd, [view[done:]], offset_bytes + done)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise NoSpace(f"{self.path}: the filesystem under the device is full") from exc
            raise
        self._writes += 1
        self._written_bytes += padded

    def _flush_sync(self) -> None:
        os.fdatasync(self._fd)
        self._flushes += 1

    def _write_many_sync(self, writes: Sequence[tuple[int, WriteData]], flush: bool) -> None:
        for offset_bytes, data in writes:
            self._write_sync(offset_bytes, data)
        if flush:
            self._flush_sync()

    # -- the async API (event loop) ----------------------------------------------

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        try:
            return await trio.to_thread.run_sync(function, *args, limiter=self._limiter)
        except (OSError, DeviceError):
            self._io_errors += 1
            raise

    async def read(self, offset_bytes: int, length_bytes: int) -> bytes:
        return await self._run(self._read_sync, offset_bytes, length_bytes)

    async def read_many(self, requests: Sequence[tuple[int, int]]) -> list[bytes]:
        def run() -> list[bytes]:
            return [self._read_sync(offset, length) for offset, length in requests]

        return await self._run(run)

    async def write(self, offset_bytes: int, data: WriteData) -> None:
        await self._run(self._write_sync, offset_bytes, data)

    async def write_many(
        self, writes: Sequence[tuple[int, WriteData]], *, flush: bool = False
    ) -> None:
        await self._run(self._write_many_sync, writes, flush)

    async def flush(self) -> None:
        await self._run(self._flush_sync)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)

    def statistics(self) -> DeviceStatistics:
        return DeviceStatistics(
            path=self.path,
            size_bytes=self.size_bytes,
            reads=self._reads,
            read_bytes=self._read_bytes,
            writes=self._writes,
            written_bytes=self._written_bytes,
            flushes=self._flushes,
            direct_io=self._direct_io,
            io_errors=self._io_errors,
        )


def create_device_file(path: str, size_bytes: int) -> None:
    """Create a preallocated device file (the embedded default). Blocking: call from a thread.

    Raises:
        DeviceError: the file exists, or the filesystem cannot hold `size_bytes`.
    """
    size_bytes = round_down(size_bytes)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError as exc:
        raise DeviceError(f"{path}: already exists; not overwriting it") from exc
    try:
        os.posix_fallocate(fd, 0, size_bytes)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        os.unlink(path)
        raise DeviceError(f"{path}: cannot preallocate {size_bytes} bytes: {exc.strerror}") from exc
    os.close(fd)
    sync_directory_of(path)


VOLATILE_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


def filesystem_type(path: str) -> str | None:
    """The type of the filesystem holding `path` (from /proc/self/mounts), if known."""
    real = os.path.realpath(path)
    best, kind = "", None
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[2]
    except OSError:
        return None
    return kind


def check_durable_filesystem(path: str, *, buffered: bool) -> None:
    """Refuse `path` on a RAM filesystem unless `buffered` (store.buffered_io) opts
    in; then only warn. Linux 6.6+ lets tmpfs take O_DIRECT, so nothing else would
    stop a node there, and it would lose everything at reboot (the page cache is
    all a RAM filesystem has, hence buffered_io as the opt-in). Blocking.

    Raises:
        DeviceError: on tmpfs or ramfs without the opt-in.
    """
    kind = filesystem_type(path)
    if kind not in VOLATILE_FILESYSTEMS:
        return
    if not buffered:
        raise DeviceError(
            f"{path}: is on {kind}, a RAM filesystem whose contents vanish at reboot; "
            "put the data on a disk, or set store.buffered_io = true to run there anyway"
        )
    log.warning("%s: lives on a RAM filesystem: its contents vanish at reboot", path)


def open_device_sync(path: str, *, buffered: bool = False, threads: int = 4) -> FileDevice:
    """Open a device file or block device. Blocking: call from a thread.

    Args:
        path: a block device or a regular file made by `create_device_file`.
        buffered: use the page cache and fdatasync instead of O_DIRECT; only for
            filesystems that refuse O_DIRECT (tmpfs). Durability still holds
            because every flush is an fdatasync.
        threads: how many syscalls may run on this device at once.

    Raises:
        DeviceError: missing, not a file or block device, refuses O_DIRECT, or
            held by another process.
    """
    flags = os.O_RDWR | os.O_CLOEXEC | (0 if buffered else os.O_DIRECT)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise DeviceError(f"{path}: no such device or file") from exc
    except IsADirectoryError as exc:
        raise DeviceError(f"{path}: is a directory, not a device") from exc
    except OSError as exc:
        if exc.errno == errno.EINVAL and not buffered:
            raise DeviceError(
                f"{path}: the filesystem refuses O_DIRECT (tmpfs before Linux 6.6 does); "
                "put the data on a disk filesystem, or set store.buffered_io = true to use "
                "the page cache with fdatasync"
            ) from exc
        raise DeviceError(f"{path}: cannot open: {exc.strerror}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            raise DeviceError(f"{path}: not a regular file or block device")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise DeviceInUse(f"{path}: in use by another objfs process") from exc
        size_bytes = round_down(os.lseek(fd, 0, os.SEEK_END))
    except BaseException:
        os.close(fd)
        raise
    if stat.S_ISREG(mode):
        try:
            check_durable_filesystem(path, buffered=buffered)
        except DeviceError:
            os.close(fd)
            raise
    return FileDevice(path, fd, size_bytes, direct_io=not buffered, threads=threads)


async def open_device(path: str, *, buffered: bool = False, threads: int = 4) -> FileDevice:
    """`open_device_sync` off the event loop."""
    return await trio.to_thread.run_sync(
        lambda: open_device_sync(path, buffered=buffered, threads=threads)
    )


async def write_parallel(
    jobs: Sequence[tuple[BlockDevice, Sequence[tuple[int, WriteData]]]],
) -> None:
    """Write (and flush) each device's list of writes, all devices at once.

    Raises:
        DeviceError: naming the first device that failed (every write was tried).
        NoSpace: the filesystem under a device file is full.
    """
    failures: list[tuple[BlockDevice, Exception]] = []

    async def one(device: BlockDevice, writes: Sequence[tuple[int, WriteData]]) -> None:
        try:
            await device.write_many(writes, flush=True)
        except (OSError, ObjfsError) as exc:
            failures.append((device, exc))

    async with trio.open_nursery() as nursery:
        for device, writes in jobs:
            nursery.start_soon(one, device, writes)
    if failures:
        device, exc = failures[0]
        if isinstance(exc, NoSpace):
            raise exc
        raise DeviceError(f"{device.path}: write failed: {exc}") from exc


def make_directory(path: str) -> None:
    """mkdir -p, then fsync the parent so the new directory survives a crash. Blocking."""
    os.makedirs(path, exist_ok=True)
    sync_directory_of(path)


def free_disk_bytes(path: str) -> int:
    """Bytes free to unprivileged users on the filesystem holding `path`. Blocking."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


async def open_devices(
    paths: Sequence[str], *, buffered: bool = False, threads: int = 4
) -> list[FileDevice]:
    """Open every path, or none: on a failure the ones already open are closed."""
    opened: list[FileDevice] = []
    try:
        for path in paths:
            opened.append(await open_device(path, buffered=buffered, threads=threads))
    except BaseException:
        for device in opened:
            await device.aclose()
        raise
    return opened


async def open_available(
    paths: Sequence[str], *, buffered: bool = False, threads: int = 4
) -> list[FileDevice]:
    """Open every path that can be opened and log the others: a node may run with
    up to m devices missing. A device in use by another process, or the only one,
    is an error all the same.

    Raises:
        DeviceError: as `open_device_sync`, for the cases above.
    """
    opened: list[FileDevice] = []
    try:
        for path in paths:
            try:
                opened.append(await open_device(path, buffered=buffered, threads=threads))
            except DeviceError as exc:
                if isinstance(exc, DeviceInUse) or len(paths) == 1:
                    raise
                log.error("%s; left out (the node runs degraded without it)", exc)
    except BaseException:
        for device in opened:
            await device.aclose()
        raise
    return opened


def write_file_atomically(path: str, data: bytes, *, mode: int = 0o600) -> None:
    """Replace `path` with `data` so a crash leaves the old file or the new one:
    write a temporary file, fsync it, rename it over, fsync the directory. Blocking."""
    temporary = f"{path}.tmp-{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    sync_directory_of(path)


def read_small_file(path: str) -> bytes | None:
    """A small file's bytes, or None if it does not exist. Blocking."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        return None


def file_stamp(path: str) -> tuple[int, int, int] | None:
    """(inode, size, mtime ns) of a file, or None if it does not exist: changes when
    the file is replaced or rewritten. Blocking."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns


def read_file_part(path: str, offset: int = 0, length: int = -1) -> bytes:
    """`length` bytes of a file from `offset` (-1: to its end); fewer at its end. Blocking.

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb") as file:
        file.seek(offset)
        return file.read(length)


def sync_file(path: str) -> None:
    """Make a file another writer renamed into place durable: fsync it and its
    directory. Blocking."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    sync_directory_of(path)


def sync_directory_of(path: str) -> None:
    """fsync the directory holding `path`, so a name created, renamed or removed
    there survives a crash. Blocking."""
    parent = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(parent)
    finally:
        os.close(parent)


def link_file(path: str, link: str) -> None:
    """A second name for a file, replacing any file by that name. Blocking."""
    remove_file(link)
    os.link(path, link)


def remove_file(path: str) -> None:
    """Remove a file if it is there. Blocking."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
