"""Erasure coding: the core's codec path, and PUT, GET, degraded GET and scrub over 4+2.

What it measures, in one run:

1. **Codec path vs bare pyeclib** on the same 4 MiB segment (4+2, isa_l_rs_vand):
   * encode: `erasure.encode_with_checksums(codec, view)` -- what the data path
     runs in a worker thread per stripe, given (as there) a memoryview of the
     writer's aligned buffer -- against `ECDriver.encode(bytes)` (pyeclib refuses
     a memoryview, so the bare side gets the same bytes as a `bytes`);
   * decode: the CRC32C check of each fragment used (`crc32c.crc32c`, as the read
     path does) plus `codec.decode(fragments, size)`, against
     `ECDriver.decode(list)`: healthy (the 4 data fragments) and degraded (data
     fragments 0 and 1 missing: 2, 3 and both parity fragments).
   The core and bare calls alternate, so both see the same noise.
   `erasure.tune_malloc()` runs first; core and bare share this process, so both
   get it. The core's encode is also timed in parts (the `bytes()` copy of the
   view, the pyeclib call, the CRC32Cs) to show where its time goes.

2. **Store PUT and GET** of 64 MiB objects (`open_writer` with 1 MiB writes and a
   durable `commit()`; `open_reader` with 1 MiB reads) on a 6-device node (4+2,
   1 MiB fragments: 4 MiB segments), against the raw O_DIRECT bandwidth of the
   same six device files measured in the same round: one thread per file, all
   six at once, 1 MiB blocks (as bench_sequential does for one file), the bytes a
   64 MiB PUT puts on each device (16 MiB), then one fdatasync per file; then
   the same blocks read back.
   * PUT ceiling: raw write x k/(k+m): each user byte costs (k+m)/k device bytes.
   * GET ceiling: raw read, not raw read x k/(k+m). A healthy GET reads only the
     k data fragments of each stripe, one device byte per user byte, and stripes
     start on a rotating device (space.allocate_stripe), so every device serves
     reads; all six files sit on one disk, whose aggregate rate is the limit.
     k/(k+m) of it would be the ceiling of a reader that fetched parity too, or
     of k of six independent disks; that ratio is printed as well.
   * MD5: `hashlib.md5` over the object in 1 MiB updates on one core. A PUT's
     ETag is the MD5 of its bytes in order, so PUT is also held to
     min(PUT ceiling, MD5).

3. **Degraded GET**: the store is closed, two device files (dev4, dev5: not
   metadata devices, so the WAL and checkpoints keep all three copies) are
   renamed away and the store reopened (it opens degraded); the same objects as
   the healthy GET are read, then the files are put back.

4. **Scrub**: `store.scrubber.scrub()` with rate_bytes_per_s = 0 over the kept
   objects (every fragment of every segment, parity included), device bytes
   read / elapsed, against raw read.

How: six device files under --dir (default /var/tmp: O_DIRECT needs a disk, and
/tmp may be tmpfs), written whole once (so nobody pays ext4's conversion of
unwritten extents), then formatted as one node. --objects objects of 64 MiB are
stored once and kept. Each round: the codec comparison, raw write + read, MD5,
then two store sessions, taking turns at going first: a healthy open (after a
degraded one the two devices are owed, so their heal pass runs first, unmeasured:
the background job would otherwise run it alongside the GET), GET of the kept
objects, scrub, PUT of a new object and its delete; and a degraded open with GET
of the kept objects. The process CPU time (all threads, getrusage) of each PUT
and GET is printed too: on this 2-vCPU machine it says how much of a core an
operation needs. Ratios are taken within a round; every figure is the median
over --repeat rounds with min and max. The raw blocks live at the end of each
data region, which the store never reaches here (checked every round).

Targets: core codec / bare pyeclib >= 0.8; PUT / (raw write x k/(k+m)) >= 0.5;
GET / raw read >= 0.5; degraded GET / healthy GET >= 0.7; scrub: reported.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import crc32c
import trio
from _util import DEFAULT_BASE_DIR, MB, Summary, md5_rate, print_row, scratch_dir, verdict

from objfs.config import StoreConfig
from objfs.store import Store, erasure, open_store
from objfs.store.device import (
    AlignedBuffer,
    create_device_file,
    make_directory,
    open_devices,
)
from objfs.store.format import format_devices
from objfs.store.superblock import Superblock
from objfs.store.types import Extent, MiB

BUCKET = "bench"
K, M = 4, 2
SCHEME = erasure.SCHEME_ISA_L_RS_VAND
MISSING_DEVICES = (4, 5)  # renamed away for the degraded GET (not metadata devices)
CODEC_TARGET = 0.8
STORE_TARGET = 0.5
DEGRADED_TARGET = 0.7


@dataclass
class Rounds:
    """Per-round figures: MB/s (user bytes unless named otherwise)."""

    encode_core: list[float] = field(default_factory=list)
    encode_bare: list[float] = field(default_factory=list)
    encode_core_bytes: list[float] = field(default_factory=list)  # core given bytes
    encode_bare_again: list[float] = field(default_factory=list)  # ... and its bare pair
    decode_core: list[float] = field(default_factory=list)
    decode_bare: list[float] = field(default_factory=list)
    degraded_core: list[float] = field(default_factory=list)
    degraded_bare: list[float] = field(default_factory=list)
    part_copy_us: list[float] = field(default_factory=list)
    part_encode_us: list[float] = field(default_factory=list)
    part_crc_us: list[float] = field(default_factory=list)
    part_decode_crc_us: list[float] = field(default_factory=list)
    raw_write: list[float] = field(default_factory=list)  # device bytes, six files
    raw_read: list[float] = field(default_factory=list)
    md5: list[float] = field(default_factory=list)
    put: list[float] = field(default_factory=list)
    put_commit_ms: list[float] = field(default_factory=list)
    put_cpu_ms: list[float] = field(default_factory=list)  # process CPU (all threads) per PUT
    get_cpu_ms: list[float] = field(default_factory=list)  # ... per object GET
    get: list[float] = field(default_factory=list)
    get_degraded: list[float] = field(default_factory=list)
    scrub: list[float] = field(default_factory=list)  # device bytes read / s


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=DEFAULT_BASE_DIR, help="where the device files go")
    parser.add_argument("--object-mib", type=int, default=64, help="object size (MiB)")
    parser.add_argument("--objects", type=int, default=2, help="kept objects (GET, scrub)")
    parser.add_argument("--read-mib", type=int, default=1, help="GET read size (MiB)")
    parser.add_argument("--device-mib", type=int, default=1024, help="size of each device file")
    parser.add_argument("--repeat", type=int, default=7, help="rounds (median of them)")
    parser.add_argument(
        "--codec-iterations", type=int, default=60, help="codec calls of each kind per round"
    )
    return parser.parse_args()


# -- 1. the codec path -------------------------------------------------------------


class CodecBench:
    """The core's encode/decode steps and bare pyeclib on one 4 MiB segment."""

    def __init__(self, segment_bytes: int) -> None:
        from pyeclib.ec_iface import ECDriver

        self.segment_bytes = segment_bytes
        self.codec = erasure.codec(SCHEME, K, M)
        self.driver = ECDriver(k=K, m=M, ec_type=erasure.BACKENDS[SCHEME])
        self.data = os.urandom(segment_bytes)
        self.buffer = AlignedBuffer(segment_bytes)  # as the writer fills it
        self.buffer.view[:] = self.data
        self.view = self.buffer.view[:segment_bytes]
        fragments, self.crcs = erasure.encode_with_checksums(self.codec, self.view)
        if fragments != self.driver.encode(self.data):
            raise RuntimeError("the core's fragments differ from pyeclib's")
        self.fragments = fragments
        self.healthy = {n: fragments[n] for n in range(K)}
        self.degraded = {n: fragments[n] for n in range(2, K + M)}  # data 0 and 1 missing

    def close(self) -> None:
        self.view.release()
        self.buffer.close()

    def encode_core(self) -> None:
        erasure.encode_with_checksums(self.codec, self.data)  # the writer gives bytes

    def encode_core_bytes(self) -> None:
        erasure.encode_with_checksums(self.codec, self.view)  # a view: copied first

    def encode_bare(self) -> None:
        self.driver.encode(self.data)

    def _decode_core(self, fragments: dict[int, bytes]) -> bytes | erasure.SegmentBytes:
        """What the read path does with fragments it has read: check each one's
        CRC32C, then `erasure.assemble` (the data fragments' payloads as they are
        when all are there, else a pyeclib decode). The reader then slices out
        what it returns, one copy that a bare decode's caller makes too."""
        for number, fragment in fragments.items():
            if crc32c.crc32c(fragment) != self.crcs[number]:
                raise RuntimeError("fragment checksum mismatch")
        return erasure.assemble(self.codec, fragments, self.segment_bytes)

    def decode_core(self) -> None:
        self._decode_core(self.healthy)

    def decode_bare(self) -> None:
        self.driver.decode(list(self.healthy.values()))

    def degraded_core(self) -> None:
        self._decode_core(self.degraded)

    def degraded_bare(self) -> None:
        self.driver.decode(list(self.degraded.values()))

    def check(self) -> None:
        for fragments in (self.healthy, self.degraded):
            got = self._decode_core(fragments)
            if (got.tobytes() if isinstance(got, erasure.SegmentBytes) else got) != self.data:
                raise RuntimeError("core decode returned other bytes")
            if self.driver.decode(list(fragments.values())) != self.data:
                raise RuntimeError("pyeclib decode returned other bytes")

    def pair(
        self, core: Callable[[], None], bare: Callable[[], None], iterations: int
    ) -> tuple[float, float]:
        """(core MB/s, bare MB/s), the two calls alternating."""
        core_s = bare_s = 0.0
        clock = time.perf_counter
        for _ in range(iterations):
            start = clock()
            core()
            middle = clock()
            bare()
            core_s += middle - start
            bare_s += clock() - middle
        total = self.segment_bytes * iterations
        return total / core_s / MB, total / bare_s / MB

    def parts(self, iterations: int) -> tuple[float, float, float, float]:
        """Median microseconds of the core encode's parts -- bytes(view), the pyeclib
        call, the CRC32C of the k+m fragments -- and of the healthy decode's CRCs."""
        copy, encode, crc, decode_crc = [], [], [], []
        clock = time.perf_counter
        for _ in range(iterations):
            start = clock()
            data = bytes(self.view)
            copied = clock()
            fragments = self.driver.encode(data)
            encoded = clock()
            for fragment in fragments:
                crc32c.crc32c(fragment)
            crced = clock()
            for fragment in self.healthy.values():
                crc32c.crc32c(fragment)
            done = clock()
            copy.append((copied - start) * 1e6)
            encode.append((encoded - copied) * 1e6)
            crc.append((crced - encoded) * 1e6)
            decode_crc.append((done - crced) * 1e6)
        median = Summary.of
        return (
            median(copy).median,
            median(encode).median,
            median(crc).median,
            median(decode_crc).median,
        )


def codec_round(bench: CodecBench, iterations: int, rounds: Rounds) -> None:
    for _ in range(3):  # warm: first calls allocate
        for call in (bench.encode_core, bench.encode_bare, bench.decode_core, bench.degraded_core):
            call()
    core, bare = bench.pair(bench.encode_core, bench.encode_bare, iterations)
    rounds.encode_core.append(core)
    rounds.encode_bare.append(bare)
    core, bare = bench.pair(bench.encode_core_bytes, bench.encode_bare, iterations)
    rounds.encode_core_bytes.append(core)
    rounds.encode_bare_again.append(bare)
    core, bare = bench.pair(bench.decode_core, bench.decode_bare, iterations)
    rounds.decode_core.append(core)
    rounds.decode_bare.append(bare)
    core, bare = bench.pair(bench.degraded_core, bench.degraded_bare, iterations)
    rounds.degraded_core.append(core)
    rounds.degraded_bare.append(bare)
    copy, encode, crc, decode_crc = bench.parts(iterations // 2)
    rounds.part_copy_us.append(copy)
    rounds.part_encode_us.append(encode)
    rounds.part_crc_us.append(crc)
    rounds.part_decode_crc_us.append(decode_crc)


# -- 2. raw bandwidth of the six files --------------------------------------------


def _in_threads(jobs: list[Callable[[], None]]) -> float:
    """Run each job in its own thread, all at once; seconds until the last ends."""
    errors: list[BaseException] = []

    def run(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    return seconds


def raw_round(
    paths: list[str], offsets: list[int], blocks: list[AlignedBuffer]
) -> tuple[float, float]:
    """(write MB/s, read MB/s) over all files at once: one thread per file writes
    `blocks` at its offset with O_DIRECT (then fdatasync), then reads them back.

    The files are opened here without the store's flock (the store is closed)."""
    block_bytes = blocks[0].capacity_bytes
    fds = [os.open(path, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC) for path in paths]
    targets = [AlignedBuffer(block_bytes) for _ in paths]
    try:

        def writer(fd: int, offset: int) -> Callable[[], None]:
            def job() -> None:
                position = offset
                for block in blocks:
                    done = 0
                    while done < block_bytes:
                        done += os.pwritev(fd, [block.view[done:]], position + done)
                    position += block_bytes
                os.fdatasync(fd)

            return job

        def reader(fd: int, offset: int, target: AlignedBuffer) -> Callable[[], None]:
            def job() -> None:
                position = offset
                for _ in blocks:
                    done = 0
                    while done < block_bytes:
                        count = os.preadv(fd, [target.view[done:]], position + done)
                        if count == 0:
                            raise RuntimeError(f"short read at {position + done}")
                        done += count
                    position += block_bytes

            return job

        total = len(paths) * len(blocks) * block_bytes
        write_s = _in_threads([writer(fd, o) for fd, o in zip(fds, offsets, strict=True)])
        read_s = _in_threads(
            [reader(fd, o, t) for fd, o, t in zip(fds, offsets, targets, strict=True)]
        )
        for target in targets:
            if target.view[:] != blocks[-1].view[:]:
                raise RuntimeError("raw read returned other bytes than were written")
    finally:
        for fd in fds:
            os.close(fd)
        for target in targets:
            target.close()
    return total / write_s / MB, total / read_s / MB


def precondition(paths: list[str], size_bytes: int) -> None:
    """Write every block of every file once (in parallel), so no extent is 'unwritten'."""
    buffer = AlignedBuffer(8 * MiB)

    def fill(path: str) -> Callable[[], None]:
        def job() -> None:
            fd = os.open(path, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC)
            try:
                for offset in range(0, size_bytes, buffer.capacity_bytes):
                    length = min(buffer.capacity_bytes, size_bytes - offset)
                    os.pwritev(fd, [buffer.view[:length]], offset)
                os.fdatasync(fd)
            finally:
                os.close(fd)

        return job

    try:
        _in_threads([fill(path) for path in paths])
    finally:
        buffer.close()


# -- the store ---------------------------------------------------------------------


async def put(store: Store, key: str, data: memoryview, block_bytes: int) -> tuple[float, float]:
    """(seconds for the whole PUT, seconds of commit())."""
    # The chunks as a network face hands them over: bytes objects, made untimed.
    chunks = [
        bytes(data[offset : offset + block_bytes]) for offset in range(0, len(data), block_bytes)
    ]
    start = time.perf_counter()
    async with store.open_writer(BUCKET, key) as writer:
        for chunk in chunks:
            await writer.write(chunk)
        commit_start = time.perf_counter()
        version = await writer.commit()
        commit_seconds = time.perf_counter() - commit_start
    seconds = time.perf_counter() - start
    if version.size_bytes != len(data):
        raise RuntimeError(f"stored {version.size_bytes} bytes, not {len(data)}")
    return seconds, commit_seconds


async def get_all(store: Store, objects: dict[str, bytes], read_bytes: int) -> float:
    """MB/s of reading every object in `read_bytes` reads, each chunk compared with
    the expected bytes and dropped (as a GET streaming to a socket drops it)."""
    total = 0
    seconds = 0.0
    for key, expected in objects.items():
        wrong = 0
        start = time.perf_counter()
        async with store.open_reader(BUCKET, key) as reader:
            for offset in range(0, reader.size_bytes, read_bytes):
                chunk = await reader.read(offset, read_bytes)
                wrong += chunk != expected[offset : offset + len(chunk)]
        seconds += time.perf_counter() - start
        total += len(expected)
        if wrong:
            raise RuntimeError(f"GET of {key} returned other bytes")
    return total / seconds / MB


class LogCounter(logging.Handler):
    """Keeps objfs's log records out of the output; counts errors (a degraded open
    logs the missing devices; anything else is printed at the end)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.expected = 0
        self.unexpected: list[str] = []
        self.degraded = False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.degraded and ("missing" in message or "left out" in message):
            self.expected += 1
        else:
            self.unexpected.append(f"{record.levelname} {record.getMessage()}")


async def setup(root: str, device_bytes: int) -> tuple[list[str], list[Superblock]]:
    """What `create_data_dir` does, with the files written whole before formatting."""
    directory = os.path.join(root, "devices")
    await trio.to_thread.run_sync(make_directory, directory)
    paths = [os.path.join(directory, f"dev{i}.img") for i in range(K + M)]
    for path in paths:
        await trio.to_thread.run_sync(create_device_file, path, device_bytes)
    start = time.perf_counter()
    await trio.to_thread.run_sync(precondition, paths, device_bytes)
    seconds = time.perf_counter() - start
    print(
        f"preconditioned {len(paths)} x {device_bytes // MiB} MiB in {seconds:.1f} s "
        f"({len(paths) * device_bytes / seconds / MB:,.0f} MB/s)",
        flush=True,
    )
    devices = await open_devices(paths)
    try:
        superblocks = await format_devices(devices)
    finally:
        for device in devices:
            await device.aclose()
    return paths, superblocks


def move_away(paths: list[str], back: bool = False) -> None:
    for index in MISSING_DEVICES:
        here, away = paths[index], paths[index] + ".away"
        os.rename(away, here) if back else os.rename(here, away)


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class StoreBench:
    """The node under test and what the sessions of each round measure on it."""

    args: argparse.Namespace
    rounds: Rounds
    counter: LogCounter
    config: StoreConfig
    paths: list[str]
    raw_offsets: list[int]
    raw_bytes: int  # per device, at raw_offsets
    source: bytes  # the object each round PUTs
    kept: dict[str, bytes]  # the objects GET and scrub read

    async def healthy(self, round_number: int) -> None:
        """Wait for the heal pass over returned devices, GET the kept objects, scrub
        them, PUT a new object, delete it."""
        rounds, read_bytes = self.rounds, self.args.read_mib * MiB
        async with open_store(self.config, background_jobs=False) as store:
            if store.health.down:
                raise RuntimeError(f"devices down in a healthy open: {sorted(store.health.down)}")
            # Devices that were down at an open are owed: when they are back, a heal
            # pass reads every fragment on them (the background job would run it
            # alongside the GET). Run it first, not measured.
            owed = store.health.owed - store.health.down
            if owed:
                healed = await store.scrubber.scrub(devices=owed)
                if set(healed.healed_devices) != owed or store.health.owed:
                    raise RuntimeError(f"the heal pass left owed: {healed.render()}")
            cpu = process_cpu_seconds()
            rounds.get.append(await get_all(store, self.kept, read_bytes))
            rounds.get_cpu_ms.append(
                (process_cpu_seconds() - cpu)
                * 1000
                * self.args.object_mib
                * MiB
                / sum(len(data) for data in self.kept.values())
            )
            start = time.perf_counter()
            report = await store.scrubber.scrub()
            seconds = time.perf_counter() - start
            if not report.clean or report.fragments_checked != report.segments * (K + M):
                raise RuntimeError(f"scrub did not check everything cleanly:\n{report.render()}")
            rounds.scrub.append(report.bytes_read / seconds / MB)

            key = f"object-{round_number}"
            cpu = process_cpu_seconds()
            seconds, commit_seconds = await put(store, key, memoryview(self.source), MiB)
            rounds.put_cpu_ms.append((process_cpu_seconds() - cpu) * 1000)
            if store.head_object(BUCKET, key).etag != hashlib.md5(self.source).hexdigest():
                raise RuntimeError("the stored ETag is not the MD5 of the bytes")
            rounds.put.append(len(self.source) / seconds / MB)
            rounds.put_commit_ms.append(commit_seconds * 1000)
            for index, offset in enumerate(self.raw_offsets):
                if not store.space.allocators[index].is_free(Extent(index, offset, self.raw_bytes)):
                    raise RuntimeError("the store allocated the raw test's blocks")
            await store.delete_object(BUCKET, key)

    async def degraded(self, round_number: int) -> None:
        """With two device files renamed away: GET the kept objects."""
        move_away(self.paths)
        self.counter.degraded = True
        try:
            async with open_store(self.config, background_jobs=False) as store:
                if sorted(store.health.down) != list(MISSING_DEVICES):
                    raise RuntimeError(f"devices down: {sorted(store.health.down)}")
                self.rounds.get_degraded.append(
                    await get_all(store, self.kept, self.args.read_mib * MiB)
                )
                if store.health.degraded_reads == 0:
                    raise RuntimeError("the degraded GET decoded nothing from parity")
        finally:
            self.counter.degraded = False
            move_away(self.paths, back=True)


async def run(args: argparse.Namespace, counter: LogCounter) -> None:
    tuned = erasure.tune_malloc()
    object_bytes = args.object_mib * MiB
    block_bytes = 1 * MiB
    rounds = Rounds()

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    codec_bench = CodecBench(K * MiB)
    codec_bench.check()
    print(
        f"tune_malloc(): {'applied' if tuned else 'NOT applied'} (mmap threshold 32 MiB, "
        "trim threshold 256 MiB; core and bare share this process)",
        flush=True,
    )

    source = os.urandom(object_bytes)
    view = memoryview(source)
    kept = {f"kept-{n}": os.urandom(object_bytes) for n in range(args.objects)}
    per_device_bytes = object_bytes // K  # what a PUT of the object puts on each device
    blocks = []
    for offset in range(0, per_device_bytes, block_bytes):
        block = AlignedBuffer(block_bytes)
        block.view[:] = view[offset : offset + block_bytes]
        blocks.append(block)

    with scratch_dir(args.dir, "objfs-bench-ec-") as root:
        paths, superblocks = await setup(root, args.device_mib * MiB)
        config = StoreConfig(data_dir=root, scrub_rate_bytes_per_s=0)
        bench = StoreBench(
            args,
            rounds,
            counter,
            config,
            paths,
            [sb.data_offset_bytes + sb.data_size_bytes - per_device_bytes for sb in superblocks],
            per_device_bytes,
            source,
            kept,
        )
        async with open_store(config) as store:
            policy = store.policy
            if (policy.data_fragments, policy.parity_fragments, policy.scheme) != (K, M, SCHEME):
                raise RuntimeError(f"the node chose {policy.describe()}, not 4+2 isa_l_rs_vand")
            await store.create_bucket(BUCKET)
            for key, data in kept.items():
                await put(store, key, memoryview(data), block_bytes)
        print(
            f"{K + M} device files under {root}: {args.device_mib} MiB each; policy "
            f"{policy.describe()}, {config.fragment_size_bytes // MiB} MiB fragments; objects "
            f"{args.object_mib} MiB ({args.objects} kept); {args.repeat} rounds",
            flush=True,
        )

        for round_number in range(args.repeat):
            codec_round(codec_bench, args.codec_iterations, rounds)
            raw_write, raw_read = await trio.to_thread.run_sync(
                raw_round, paths, bench.raw_offsets, blocks
            )
            rounds.raw_write.append(raw_write)
            rounds.raw_read.append(raw_read)
            rounds.md5.append(md5_rate(view, block_bytes))
            # The healthy and the degraded session take turns at going first, so
            # neither always follows the other's I/O.
            sessions = [bench.healthy, bench.degraded]
            if round_number % 2:
                sessions.reverse()
            for session in sessions:
                await session(round_number)
    for block in blocks:
        block.close()
    codec_bench.close()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    report_figures(args, rounds, counter)


def ratios(numerators: list[float], denominators: list[float]) -> Summary:
    return Summary.of([n / d for n, d in zip(numerators, denominators, strict=True)])


def report_figures(args: argparse.Namespace, rounds: Rounds, counter: LogCounter) -> None:
    of, show = Summary.of, Summary.show
    share = K / (K + M)

    def ratio_row(name: str, summary: Summary, target: float | None) -> None:
        label = f"  {verdict(summary.median, target)} (>= {target})" if target else ""
        print_row(name, f"{summary.show(2)}{label}")

    print(f"codec, 4 MiB segment, {K}+{M} {erasure.BACKENDS[SCHEME]} (MB/s of segment bytes):")
    print_row("core encode (encode_with_checksums, bytes)", show(of(rounds.encode_core), 0, "MB/s"))
    print_row("  core encode given a view", show(of(rounds.encode_core_bytes), 0, "MB/s"))
    print_row("bare ECDriver.encode(bytes)", show(of(rounds.encode_bare), 0, "MB/s"))
    print_row(
        "core decode, healthy (CRC32C x4 + assemble)", show(of(rounds.decode_core), 0, "MB/s")
    )
    print_row("bare ECDriver.decode, healthy", show(of(rounds.decode_bare), 0, "MB/s"))
    print_row("core decode, 2 data missing", show(of(rounds.degraded_core), 0, "MB/s"))
    print_row("bare ECDriver.decode, 2 data missing", show(of(rounds.degraded_bare), 0, "MB/s"))
    print_row("core encode parts: bytes(view)", show(of(rounds.part_copy_us), 0, "us"))
    print_row("  pyeclib encode", show(of(rounds.part_encode_us), 0, "us"))
    print_row(f"  CRC32C of {K + M} fragments", show(of(rounds.part_crc_us), 0, "us"))
    print_row(f"decode: CRC32C of {K} fragments", show(of(rounds.part_decode_crc_us), 0, "us"))
    print(f"ratios, core / bare (target >= {CODEC_TARGET}):")
    ratio_row("encode", ratios(rounds.encode_core, rounds.encode_bare), CODEC_TARGET)
    given_bytes = ratios(rounds.encode_core_bytes, rounds.encode_bare_again)
    ratio_row("  encode, core given a view", given_bytes, None)
    ratio_row("decode, healthy", ratios(rounds.decode_core, rounds.decode_bare), CODEC_TARGET)
    ratio_row(
        "decode, 2 data missing", ratios(rounds.degraded_core, rounds.degraded_bare), CODEC_TARGET
    )

    mib = args.object_mib
    put_ceiling = [w * share for w in rounds.raw_write]
    read_share = [r * share for r in rounds.raw_read]
    print(f"limits (same rounds; six files at once, one thread each, {mib // K} MiB per file):")
    print_row("raw O_DIRECT write + fdatasync (device B)", show(of(rounds.raw_write), 0, "MB/s"))
    print_row("  x k/(k+m) = PUT ceiling (user B)", show(of(put_ceiling), 0, "MB/s"))
    print_row("raw O_DIRECT read (device B)", show(of(rounds.raw_read), 0, "MB/s"))
    print_row("MD5, one core, 1 MiB updates", show(of(rounds.md5), 0, "MB/s"))
    print("store (user bytes):")
    print_row(f"PUT {mib} MiB (1 MiB writes, durable)", show(of(rounds.put), 0, "MB/s"))
    print_row("  of which commit()", show(of(rounds.put_commit_ms), 1, "ms"))
    print_row("  process CPU (all threads) per PUT", show(of(rounds.put_cpu_ms), 0, "ms"))
    print_row(
        f"GET {mib} MiB x {args.objects} ({args.read_mib} MiB reads)",
        show(of(rounds.get), 0, "MB/s"),
    )
    print_row(f"  process CPU per {mib} MiB GET", show(of(rounds.get_cpu_ms), 0, "ms"))
    print_row(f"GET, devices {MISSING_DEVICES} missing", show(of(rounds.get_degraded), 0, "MB/s"))
    print_row("scrub (device bytes read / s)", show(of(rounds.scrub), 0, "MB/s"))
    print("ratios (median of per-round ratios):")
    ratio_row("PUT / (raw write x k/(k+m))", ratios(rounds.put, put_ceiling), STORE_TARGET)
    ratio_row("PUT / MD5", ratios(rounds.put, rounds.md5), None)
    limit = [min(c, m) for c, m in zip(put_ceiling, rounds.md5, strict=True)]
    ratio_row("PUT / min(PUT ceiling, MD5)", ratios(rounds.put, limit), None)
    ratio_row("GET / raw read", ratios(rounds.get, rounds.raw_read), STORE_TARGET)
    ratio_row("GET / (raw read x k/(k+m))", ratios(rounds.get, read_share), None)
    ratio_row("degraded GET / raw read", ratios(rounds.get_degraded, rounds.raw_read), None)
    ratio_row(
        "degraded GET / healthy GET", ratios(rounds.get_degraded, rounds.get), DEGRADED_TARGET
    )
    ratio_row("scrub / raw read", ratios(rounds.scrub, rounds.raw_read), None)
    if counter.unexpected:
        print(f"log records other than the missing devices ({len(counter.unexpected)}):")
        for line in counter.unexpected[:10]:
            print(f"  {line}")


def main() -> None:
    args = parse_args()
    logger = logging.getLogger("objfs")
    handler, propagate = LogCounter(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        trio.run(run, args, handler)
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


if __name__ == "__main__":
    main()
