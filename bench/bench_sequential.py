"""Sequential PUT and GET of large objects through the store, against the raw device.

What it measures: the bandwidth of a store-level PUT (streaming `open_writer`,
1 MiB writes, durable `commit()`) and GET (`open_reader`, 1 MiB and 8 MiB reads)
of one 64 MiB object, and in the same run the limits it is held to:

* raw write: the same device file opened with `open_device_sync` (O_DIRECT),
  64 MiB written from one thread as 1 MiB aligned blocks with
  `FileDevice._write_sync` (no copy: the blocks are prepared beforehand), then
  one fdatasync, as durable as a committed PUT;
* raw read: the same blocks read back with `preadv` into an aligned buffer
  (O_DIRECT, one thread, 1 MiB at a time) -- after they were written, since a
  fallocated extent never written reads as zeros without any I/O;
* MD5: `hashlib.md5` over the same 64 MiB in 1 MiB updates on one core. The
  store computes the ETag over every byte it stores, so MD5 bounds PUT too.

How: one device file under --dir (default /var/tmp: O_DIRECT needs a disk, and
/tmp may be tmpfs), preconditioned by writing it whole once so that neither side
pays ext4's conversion of unwritten extents, then formatted. Each round measures
raw write, raw read and MD5, then opens the store and does PUT, GET (1 MiB), GET
(8 MiB) and a delete; rounds repeat (--repeat) and every figure is the median with
min and max. Ratios are taken within a round (so the store and its limit saw the
same noise), then their median is printed. The raw blocks live at the end of the
data region, which the store never reaches here (checked every round).

Target: store PUT / raw write >= 0.6 and store GET / raw read >= 0.6. Because
PUT cannot beat MD5, PUT / min(raw write, MD5) is printed as well.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from dataclasses import dataclass, field

import trio
from _util import DEFAULT_BASE_DIR, MB, Summary, md5_rate, print_row, scratch_dir, verdict

from objfs.config import StoreConfig
from objfs.store import Store, open_store
from objfs.store.device import (
    AlignedBuffer,
    create_device_file,
    make_directory,
    open_device,
    open_device_sync,
)
from objfs.store.format import format_devices
from objfs.store.superblock import Superblock
from objfs.store.types import Extent, MiB

BUCKET = "bench"
TARGET_RATIO = 0.6


@dataclass
class Rounds:
    """Per-round figures, in MB/s unless named otherwise."""

    raw_write: list[float] = field(default_factory=list)
    raw_read: list[float] = field(default_factory=list)
    md5: list[float] = field(default_factory=list)
    put: list[float] = field(default_factory=list)
    put_commit_ms: list[float] = field(default_factory=list)
    get_small: list[float] = field(default_factory=list)
    get_large: list[float] = field(default_factory=list)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=DEFAULT_BASE_DIR, help="where the device file goes")
    parser.add_argument("--object-mib", type=int, default=64, help="object size (MiB)")
    parser.add_argument("--block-mib", type=int, default=1, help="raw block and PUT write size")
    parser.add_argument("--large-read-mib", type=int, default=8, help="the larger GET read size")
    parser.add_argument("--device-mib", type=int, default=1024, help="device file size (MiB)")
    parser.add_argument("--repeat", type=int, default=7, help="rounds (median of them)")
    parser.add_argument(
        "--no-precondition",
        action="store_true",
        help="skip writing the device file whole before formatting",
    )
    return parser.parse_args()


def precondition(path: str, size_bytes: int) -> None:
    """Write every block of the file once, so no extent is 'unwritten' any more."""
    device = open_device_sync(path)
    buffer = AlignedBuffer(8 * MiB)
    try:
        for offset in range(0, size_bytes, buffer.capacity_bytes):
            length = min(buffer.capacity_bytes, size_bytes - offset)
            device._write_sync(offset, (buffer, length))
        device._flush_sync()
    finally:
        buffer.close()
        os.close(device._fd)


def raw_round(path: str, offset: int, blocks: list[AlignedBuffer]) -> tuple[float, float]:
    """(write MB/s, read MB/s) of the blocks at `offset`, O_DIRECT, one thread."""
    device = open_device_sync(path)
    total = sum(block.capacity_bytes for block in blocks)
    try:
        start = time.perf_counter()
        position = offset
        for block in blocks:
            device._write_sync(position, (block, block.capacity_bytes))
            position += block.capacity_bytes
        device._flush_sync()
        write_seconds = time.perf_counter() - start

        target = AlignedBuffer(blocks[0].capacity_bytes)
        try:
            start = time.perf_counter()
            position = offset
            for block in blocks:
                done = 0
                while done < block.capacity_bytes:
                    count = os.preadv(device._fd, [target.view[done:]], position + done)
                    if count == 0:
                        raise RuntimeError(f"short read at {position + done}")
                    done += count
                position += block.capacity_bytes
            read_seconds = time.perf_counter() - start
            if target.view[:] != blocks[-1].view[:]:
                raise RuntimeError("raw read returned other bytes than were written")
        finally:
            target.close()
    finally:
        os.close(device._fd)
    return total / write_seconds / MB, total / read_seconds / MB


async def put(store: Store, key: str, data: memoryview, block_bytes: int) -> tuple[float, float]:
    """(seconds for the whole PUT, seconds of commit()), and checks the ETag."""
    start = time.perf_counter()
    async with store.open_writer(BUCKET, key) as writer:
        for offset in range(0, len(data), block_bytes):
            await writer.write(data[offset : offset + block_bytes])
        commit_start = time.perf_counter()
        version = await writer.commit()
        commit_seconds = time.perf_counter() - commit_start
    seconds = time.perf_counter() - start
    if version.size_bytes != len(data):
        raise RuntimeError(f"stored {version.size_bytes} bytes, not {len(data)}")
    return seconds, commit_seconds


async def get(store: Store, key: str, expected: bytes, read_bytes: int) -> float:
    """Seconds to read the object in `read_bytes` reads, each compared with the
    expected bytes and dropped, as a GET that streams to a socket drops them.
    (Keeping every chunk measured page faults of fresh memory, not the store.)"""
    wrong = 0
    start = time.perf_counter()
    async with store.open_reader(BUCKET, key) as reader:
        for offset in range(0, reader.size_bytes, read_bytes):
            chunk = await reader.read(offset, read_bytes)
            # bytes == bytes is a memcmp; bytes == memoryview would compare item by item.
            wrong += chunk != expected[offset : offset + len(chunk)]
    seconds = time.perf_counter() - start
    if wrong:
        raise RuntimeError(f"GET with {read_bytes}-byte reads returned other bytes")
    return seconds


async def setup(root: str, device_bytes: int, precondition_file: bool) -> tuple[str, Superblock]:
    directory = os.path.join(root, "devices")
    path = os.path.join(directory, "dev0.img")
    await trio.to_thread.run_sync(make_directory, directory)
    await trio.to_thread.run_sync(create_device_file, path, device_bytes)
    if precondition_file:
        await trio.to_thread.run_sync(precondition, path, device_bytes)
    device = await open_device(path)
    try:
        (superblock,) = await format_devices([device])
    finally:
        await device.aclose()
    return path, superblock


async def run(args: argparse.Namespace) -> None:
    object_bytes = args.object_mib * MiB
    block_bytes = args.block_mib * MiB
    large_read_bytes = args.large_read_mib * MiB
    source = os.urandom(object_bytes)
    view = memoryview(source)
    etag = hashlib.md5(source).hexdigest()
    blocks = []
    for offset in range(0, object_bytes, block_bytes):
        block = AlignedBuffer(block_bytes)
        block.view[:] = view[offset : offset + block_bytes]
        blocks.append(block)

    rounds = Rounds()
    with scratch_dir(args.dir, "objfs-bench-seq-") as root:
        path, superblock = await setup(root, args.device_mib * MiB, not args.no_precondition)
        raw_offset = superblock.data_offset_bytes + superblock.data_size_bytes - object_bytes
        config = StoreConfig(data_dir=root)
        print(
            f"device file {path}: {args.device_mib} MiB, "
            f"{'preconditioned' if not args.no_precondition else 'fresh (fallocated)'}; "
            f"object {args.object_mib} MiB, {args.repeat} rounds",
            flush=True,
        )
        async with open_store(config) as store:
            await store.create_bucket(BUCKET)

        for round_number in range(args.repeat):
            raw_write, raw_read = await trio.to_thread.run_sync(raw_round, path, raw_offset, blocks)
            rounds.raw_write.append(raw_write)
            rounds.raw_read.append(raw_read)
            rounds.md5.append(md5_rate(view, block_bytes))

            async with open_store(config) as store:
                key = f"object-{round_number}"
                seconds, commit_seconds = await put(store, key, view, block_bytes)
                if store.head_object(BUCKET, key).etag != etag:
                    raise RuntimeError("the stored ETag is not the MD5 of the bytes")
                rounds.put.append(object_bytes / seconds / MB)
                rounds.put_commit_ms.append(commit_seconds * 1000)
                seconds = await get(store, key, source, block_bytes)
                rounds.get_small.append(object_bytes / seconds / MB)
                seconds = await get(store, key, source, large_read_bytes)
                rounds.get_large.append(object_bytes / seconds / MB)
                if not store.space.allocators[0].is_free(Extent(0, raw_offset, object_bytes)):
                    raise RuntimeError(
                        "the store allocated the raw test's blocks; grow --device-mib"
                    )
                await store.delete_object(BUCKET, key)
    for block in blocks:
        block.close()
    report(args, rounds)


def ratios(numerators: list[float], denominators: list[float]) -> Summary:
    return Summary.of([n / d for n, d in zip(numerators, denominators, strict=True)])


def report(args: argparse.Namespace, rounds: Rounds) -> None:
    block = f"{args.block_mib} MiB"
    large = f"{args.large_read_mib} MiB"
    mib = args.object_mib
    of = Summary.of
    print("limits (same run):")
    show = Summary.show
    print_row(
        f"raw O_DIRECT write, {block} blocks + fdatasync", show(of(rounds.raw_write), 0, "MB/s")
    )
    print_row(f"raw O_DIRECT read, {block} blocks", show(of(rounds.raw_read), 0, "MB/s"))
    print_row(f"MD5, one core, {block} updates", show(of(rounds.md5), 0, "MB/s"))
    print("store:")
    print_row(f"PUT {mib} MiB ({block} writes, durable)", show(of(rounds.put), 0, "MB/s"))
    print_row("  of which commit()", show(of(rounds.put_commit_ms), 2, "ms"))
    print_row(f"GET {mib} MiB ({block} reads)", show(of(rounds.get_small), 0, "MB/s"))
    print_row(f"GET {mib} MiB ({large} reads)", show(of(rounds.get_large), 0, "MB/s"))
    limit = [min(w, m) for w, m in zip(rounds.raw_write, rounds.md5, strict=True)]
    put_ratio = ratios(rounds.put, rounds.raw_write)
    get_small_ratio = ratios(rounds.get_small, rounds.raw_read)
    get_large_ratio = ratios(rounds.get_large, rounds.raw_read)
    print(f"ratios (median of per-round ratios; target >= {TARGET_RATIO}):")
    print_row("PUT / raw write", f"{put_ratio.show(2)}  {verdict(put_ratio.median, TARGET_RATIO)}")
    print_row("PUT / MD5", ratios(rounds.put, rounds.md5).show(2))
    print_row("PUT / min(raw write, MD5)", ratios(rounds.put, limit).show(2))
    print_row(
        f"GET ({block}) / raw read",
        f"{get_small_ratio.show(2)}  {verdict(get_small_ratio.median, TARGET_RATIO)}",
    )
    print_row(
        f"GET ({large}) / raw read",
        f"{get_large_ratio.show(2)}  {verdict(get_large_ratio.median, TARGET_RATIO)}",
    )


if __name__ == "__main__":
    trio.run(run, parse_args())
