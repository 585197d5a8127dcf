"""Small PUTs: 4 KiB objects from many concurrent writers, against the device's fsync rate.

What it measures: PUTs per second of `Store.put_object` with 4 KiB bodies (stored
inline in their WAL record) from 64 concurrent trio tasks on one store, and with
1 writer for comparison. For each run: WAL fsyncs per second (`Store.wal.flushes`)
and device flushes per second (the device's `statistics().flushes`, which also
count data flushes and checkpoints), records per group commit (`wal.records /
wal.batches`), the p50 and p99 latency of one PUT, and how many checkpoints ran.

The limit, measured in the same run on the same device file: a loop of one 4 KiB
O_DIRECT write plus fdatasync (`FileDevice._write_sync` + `_flush_sync`), at
consecutive never-written (fallocated) blocks at the end of the data region --
what the WAL's first lap over a fresh device file meets. One writer cannot beat
that rate; with group commit, many writers share each fsync and can.

How: every repetition creates a fresh store (a new preallocated device file under
--dir, default /var/tmp), measures the raw rate, then runs 64 writers and then 1
writer, each on a store of its own after a short warm-up, for --duration seconds.
Keys are new (w<writer>/<n>) unless --key-space makes writers overwrite a fixed
set; --preload N first puts N small objects straight into the index, to see how
the figures hold on a store that already holds many objects (every checkpoint
writes the whole index). Figures are medians over --repeat repetitions, with
min and max.

Target: >= 5000 PUTs/s with 64 writers (group commit).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field

import trio
from _util import (
    DEFAULT_BASE_DIR,
    Summary,
    percentile,
    print_row,
    scratch_dir,
)

from objfs.config import StoreConfig
from objfs.store import Store, open_store
from objfs.store.device import AlignedBuffer, open_device_sync
from objfs.store.format import create_data_dir
from objfs.store.records import PutVersion
from objfs.store.superblock import Superblock
from objfs.store.types import (
    BLOCK_SIZE_BYTES,
    NULL_VERSION,
    BucketName,
    MiB,
    ObjectKey,
    ObjectVersion,
    Piece,
)

BUCKET = "bench"
TARGET_PUTS_PER_SECOND = 5000


@dataclass(frozen=True, slots=True)
class RunResult:
    puts: int
    seconds: float
    wal_flushes: int
    device_flushes: int
    batches: int
    records: int
    checkpoints: int
    p50_ms: float
    p99_ms: float

    @property
    def puts_per_second(self) -> float:
        return self.puts / self.seconds

    @property
    def wal_fsyncs_per_second(self) -> float:
        return self.wal_flushes / self.seconds

    @property
    def device_flushes_per_second(self) -> float:
        return self.device_flushes / self.seconds

    @property
    def records_per_batch(self) -> float:
        return self.records / self.batches if self.batches else 0.0


@dataclass
class Series:
    """Results of one configuration over the repetitions."""

    writers: int
    runs: list[RunResult] = field(default_factory=list)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=DEFAULT_BASE_DIR, help="where the device files go")
    parser.add_argument("--writers", type=int, default=64, help="concurrent writers")
    parser.add_argument("--size", type=int, default=4096, help="object size in bytes")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per timed run")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before timing")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (median of them)")
    parser.add_argument("--raw-seconds", type=float, default=1.0, help="raw fsync loop length")
    parser.add_argument("--device-mib", type=int, default=2048, help="device file size (MiB)")
    parser.add_argument(
        "--key-space",
        type=int,
        default=0,
        help="keys per writer, overwritten in turn (0: every PUT a new key)",
    )
    parser.add_argument("--no-single", action="store_true", help="skip the 1-writer runs")
    parser.add_argument(
        "--preload",
        type=int,
        default=0,
        help="objects (16-byte inline) put into the index before the run, as in an older store",
    )
    return parser.parse_args()


def raw_fsync_rate(path: str, superblock: Superblock, seconds: float) -> float:
    """fdatasyncs per second of a loop of 4 KiB O_DIRECT appends into fresh blocks."""
    device = open_device_sync(path)
    buffer = AlignedBuffer(BLOCK_SIZE_BYTES)
    buffer.view[:] = os.urandom(BLOCK_SIZE_BYTES)
    region_end = superblock.data_offset_bytes + superblock.data_size_bytes
    region_blocks = min(superblock.data_size_bytes // 2, 256 * MiB) // BLOCK_SIZE_BYTES
    first = region_end - region_blocks * BLOCK_SIZE_BYTES
    try:
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            offset = first + (count % region_blocks) * BLOCK_SIZE_BYTES
            device._write_sync(offset, (buffer, BLOCK_SIZE_BYTES))
            device._flush_sync()
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        buffer.close()
        os.close(device._fd)


async def drive(
    store: Store, writers: int, seconds: float, payload: bytes, key_space: int, tag: str
) -> list[float]:
    """Run `writers` tasks doing PUTs until `seconds` pass; return every PUT's latency."""
    latencies: list[float] = []
    deadline = trio.current_time() + seconds

    async def writer(number: int) -> None:
        count = 0
        while trio.current_time() < deadline:
            suffix = count % key_space if key_space else count
            key = f"{tag}/w{number:03d}/{suffix:09d}"
            start = time.perf_counter()
            await store.put_object(BUCKET, key, payload)
            latencies.append(time.perf_counter() - start)
            count += 1

    async with trio.open_nursery() as nursery:
        for number in range(writers):
            nursery.start_soon(writer, number)
    return latencies


def preload(store: Store, objects: int) -> None:
    """Put `objects` small objects straight into the index (the records a PUT would commit).

    Not through the WAL: the next checkpoint holds them, as in a store that has
    been running for a while. Only the index (and so every checkpoint) grows.
    """
    for serial in range(objects):
        body = serial.to_bytes(16, "little")
        version = ObjectVersion(
            NULL_VERSION,
            len(body),
            time.time_ns(),
            hashlib.md5(body).hexdigest(),
            pieces=(Piece(0, len(body), body),),
        )
        key = ObjectKey(f"old/{serial % 1000:03d}/object-{serial:08d}")
        store.index.apply(PutVersion(BucketName(BUCKET), key, version))


async def one_run(
    data_dir: str, writers: int, args: argparse.Namespace, payload: bytes
) -> RunResult:
    async with open_store(StoreConfig(data_dir=data_dir)) as store:
        await store.create_bucket(BUCKET)
        preload(store, args.preload)
        await drive(store, writers, args.warmup, payload, args.key_space, "warm")
        wal, device = store.wal, store.devices[0]
        before = (wal.flushes, device.statistics().flushes, wal.batches, wal.records)
        checkpoints = store.checkpoints
        start = time.perf_counter()
        latencies = await drive(store, writers, args.duration, payload, args.key_space, "run")
        seconds = time.perf_counter() - start
        after = (wal.flushes, device.statistics().flushes, wal.batches, wal.records)
        return RunResult(
            puts=len(latencies),
            seconds=seconds,
            wal_flushes=after[0] - before[0],
            device_flushes=after[1] - before[1],
            batches=after[2] - before[2],
            records=after[3] - before[3],
            checkpoints=store.checkpoints - checkpoints,
            p50_ms=percentile(latencies, 0.50) * 1000,
            p99_ms=percentile(latencies, 0.99) * 1000,
        )


async def fresh_store(root: str, name: str, device_bytes: int) -> tuple[str, str, Superblock]:
    data_dir = os.path.join(root, name)
    (superblock,) = await create_data_dir(data_dir, device_size_bytes=device_bytes)
    return data_dir, os.path.join(data_dir, "devices", "dev0.img"), superblock


async def run(args: argparse.Namespace) -> None:
    payload = os.urandom(args.size)
    configurations = [args.writers] + ([] if args.no_single or args.writers == 1 else [1])
    series = [Series(writers) for writers in configurations]
    raw_rates: list[float] = []
    keys = f"{args.key_space} keys per writer, overwritten" if args.key_space else "new keys"
    if args.preload:
        keys += f", {args.preload:,} objects already in the index"
    print(
        f"{args.size}-byte PUTs, {keys}; {args.duration:g} s per run after "
        f"{args.warmup:g} s warm-up; {args.repeat} repetitions; device files under {args.dir}",
        flush=True,
    )
    with scratch_dir(args.dir, "objfs-bench-small-") as root:
        for repetition in range(args.repeat):
            device_bytes = args.device_mib * MiB
            data_dir, path, superblock = await fresh_store(root, f"raw{repetition}", device_bytes)
            raw_rates.append(
                await trio.to_thread.run_sync(raw_fsync_rate, path, superblock, args.raw_seconds)
            )
            for one in series:
                data_dir, _, _ = await fresh_store(
                    root, f"w{one.writers}-{repetition}", device_bytes
                )
                one.runs.append(await one_run(data_dir, one.writers, args, payload))
                print(
                    f"  repetition {repetition + 1}: {one.writers:>3} writers "
                    f"{one.runs[-1].puts_per_second:,.0f} PUTs/s",
                    flush=True,
                )
            for name in os.listdir(root):
                await trio.to_thread.run_sync(shutil.rmtree, os.path.join(root, name))
    report(args, raw_rates, series)


def report(args: argparse.Namespace, raw_rates: list[float], series: list[Series]) -> None:
    raw = Summary.of(raw_rates)
    print("limit (same run):")
    print_row("raw 4 KiB O_DIRECT write + fdatasync", raw.show(0, "/s"))
    for one in series:
        runs = one.runs
        puts = Summary.of([r.puts_per_second for r in runs])
        print(f"store, {one.writers} writer{'s' if one.writers > 1 else ''}:")
        print_row(f"PUTs/s ({args.size} B)", puts.show(0, "/s"))
        print_row(
            "WAL fsyncs/s (wal.flushes)",
            Summary.of([r.wal_fsyncs_per_second for r in runs]).show(0, "/s"),
        )
        print_row(
            "device flushes/s (statistics().flushes)",
            Summary.of([r.device_flushes_per_second for r in runs]).show(0, "/s"),
        )
        print_row("records per batch", Summary.of([r.records_per_batch for r in runs]).show(1))
        print_row("latency p50", Summary.of([r.p50_ms for r in runs]).show(2, "ms"))
        print_row("latency p99", Summary.of([r.p99_ms for r in runs]).show(2, "ms"))
        print_row(
            "checkpoints during the run", Summary.of([float(r.checkpoints) for r in runs]).show(0)
        )
        per_fsync = Summary.of(
            [r.puts_per_second / rate for r, rate in zip(runs, raw_rates, strict=True)]
        )
        print_row("PUTs/s / raw fsync rate", per_fsync.show(2))
        if one.writers == args.writers:
            verdict = "meets" if puts.median >= TARGET_PUTS_PER_SECOND else "BELOW"
            print_row(f"target >= {TARGET_PUTS_PER_SECOND} PUTs/s", f"{verdict} target")


if __name__ == "__main__":
    trio.run(run, parse_args())
