"""Recovery after a crash: time to open a store of 1 M objects, and the index's memory.

What it measures, on a store whose newest checkpoint holds --objects objects
(default 1,000,000) and whose WAL holds --tail more records after it (default
100,000: 50 % new keys, 30 % overwrites of checkpointed keys, 20 % deletes):

* recovery seconds: `open_store` until it yields, in a fresh process (read the
  checkpoint body, decode it, build the index, scan and replay the WAL tail,
  rebuild the free-space maps), with a breakdown by phase;
* memory: the resident set of the recovering process after recovery (after a
  gc.collect()) minus before it, per object in the index; the peak (VmHWM)
  during recovery too; with --tracemalloc one more recovery under tracemalloc
  gives the bytes Python allocated and kept;
* the checkpoint that holds the objects: its body size and how long
  `Store.checkpoint()` took (and how much of that was encoding).

What the objects look like (--kind): `segment` (default): 4 KiB each, stored as
one segment (one piece -> segment -> fragment -> extent, as every object of up
to one 1 MiB segment is; 4 KiB, not 1 MiB, only so that 1 M distinct extents fit
in a small device file: the extents are reserved but never written), with a
32-hex-digit ETag and keys like "data/123/object-00001234.bin"; `inline`: 16-byte
bodies inside their records; `empty`: size 0, no pieces. The bucket is
unversioned, so each key has one version.

How: a child process builds the state quickly, without the full put path: the
checkpointed objects are applied straight to the index (`store.index.apply` of
the same PutVersion records a PUT would commit; their extents are carved out of
one extent taken from the allocator beforehand), one record goes through the
WAL, `store.checkpoint()` writes them out; then the tail records go through
`store.wal.append` from many concurrent tasks, durable and applied. The child
prints 'ready' and is killed with SIGKILL, so no final checkpoint hides the
tail. Each recovery then runs in a fresh process, which exits without closing
the store (so the on-disk state stays the same for the next one); --repeat of
them give the median. The device file lives under --dir (default /var/tmp).

Target: recovery < 20 s and < 1 KiB of memory per object at 1 M objects.

Run time: about 3 minutes with the defaults on this 2-core machine while one
recovery takes 40 s (about 2 once it meets its target); `--objects 100000
--tail 10000` takes under a minute.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import inspect
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import trio
from _util import (
    DEFAULT_BASE_DIR,
    Summary,
    peak_rss_bytes,
    print_row,
    rss_bytes,
    scratch_dir,
)

from objfs.config import StoreConfig
from objfs.store import Store, checkpoint, device, open_store, recovery, wal
from objfs.store.format import create_data_dir
from objfs.store.index import ObjectIndex
from objfs.store.records import DeleteObject, PutVersion, Record
from objfs.store.types import (
    BLOCK_SIZE_BYTES,
    NULL_VERSION,
    BucketName,
    Extent,
    Fragment,
    MiB,
    ObjectKey,
    ObjectVersion,
    Piece,
    Segment,
)

BUCKET = BucketName("bench")
TARGET_SECONDS = 20.0
TARGET_BYTES_PER_OBJECT = 1024
BASE_MTIME_NS = 1_700_000_000_000_000_000
INLINE_BODY_BYTES = 16
NO_CHECKPOINTS_MS = 86_400_000  # the longest interval the config takes: no timed checkpoints


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=DEFAULT_BASE_DIR, help="where the device file goes")
    parser.add_argument("--objects", type=int, default=1_000_000, help="objects in the checkpoint")
    parser.add_argument("--tail", type=int, default=100_000, help="WAL records after it")
    parser.add_argument(
        "--kind", choices=("segment", "inline", "empty"), default="segment", help="object layout"
    )
    parser.add_argument("--repeat", type=int, default=3, help="recoveries (median of them)")
    parser.add_argument("--tasks", type=int, default=256, help="concurrent WAL appenders")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="one more recovery under tracemalloc"
    )
    parser.add_argument("--phase", choices=("build", "recover"), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    return parser.parse_args()


# -- the state ---------------------------------------------------------------------


def object_key(serial: int) -> ObjectKey:
    return ObjectKey(f"data/{serial % 1000:03d}/object-{serial:08d}.bin")


def make_version(kind: str, serial: int, extent_offset: int) -> ObjectVersion:
    """The version a PUT of object `serial` would have committed."""
    mtime_ns = BASE_MTIME_NS + serial
    if kind == "empty":
        return ObjectVersion(NULL_VERSION, 0, mtime_ns, hashlib.md5(b"").hexdigest())
    if kind == "inline":
        body = serial.to_bytes(INLINE_BODY_BYTES, "little")
        return ObjectVersion(
            NULL_VERSION,
            len(body),
            mtime_ns,
            hashlib.md5(body).hexdigest(),
            pieces=(Piece(0, len(body), body),),
        )
    extent = Extent(0, extent_offset, BLOCK_SIZE_BYTES)
    segment = Segment(BLOCK_SIZE_BYTES, (Fragment(extent, BLOCK_SIZE_BYTES, serial & 0xFFFFFFFF),))
    return ObjectVersion(
        NULL_VERSION,
        BLOCK_SIZE_BYTES,
        mtime_ns,
        f"{serial:032x}",  # stands for the MD5 of bytes that are never written
        pieces=(Piece(0, BLOCK_SIZE_BYTES, segment),),
    )


def tail_plan(objects: int, tail: int) -> tuple[int, list[int], list[int]]:
    """(new keys, keys overwritten, keys deleted) of the WAL tail: 50/30/20 %."""
    overwrites = tail * 3 // 10
    deletes = tail // 5
    if overwrites + deletes > objects:
        raise SystemExit(f"--tail {tail} needs at least {overwrites + deletes} --objects")
    chosen = random.Random(42).sample(range(objects), overwrites + deletes)
    return tail - overwrites - deletes, chosen[:overwrites], chosen[overwrites:]


def sizes(args: argparse.Namespace) -> tuple[int, int]:
    """(device bytes, WAL bytes) for the state."""
    new_keys, overwritten, _ = tail_plan(args.objects, args.tail)
    extents = args.objects + new_keys + len(overwritten) if args.kind == "segment" else 0
    bodies = 2 * (args.objects + new_keys) * 512  # two checkpoint bodies, generously
    wal_bytes = max(64 * MiB, -(-args.tail * 256 * 8 // MiB) * MiB)  # the tail: < 1/8 of it
    data = extents * BLOCK_SIZE_BYTES + bodies + 256 * MiB
    return -(-(MiB + wal_bytes + data) // MiB) * MiB, wal_bytes


async def build(args: argparse.Namespace) -> None:
    """Child: create the state, print 'ready <json>', then wait to be killed."""
    started = time.perf_counter()
    device_bytes, wal_bytes = sizes(args)
    await create_data_dir(args.root, device_size_bytes=device_bytes, wal_size_bytes=wal_bytes)
    config = StoreConfig(data_dir=args.root, checkpoint_interval_ms=NO_CHECKPOINTS_MS)
    new_keys, overwritten, deleted = tail_plan(args.objects, args.tail)
    async with open_store(config) as store:
        await store.create_bucket(BUCKET)
        extents = args.objects + new_keys + len(overwritten)
        base = 0
        if args.kind == "segment":
            big = store.space.allocators[0].allocate(extents * BLOCK_SIZE_BYTES)
            base = big.offset_bytes

        def offset(serial: int) -> int:
            return base + serial * BLOCK_SIZE_BYTES

        for serial in range(args.objects):
            record = PutVersion(
                BUCKET, object_key(serial), make_version(args.kind, serial, offset(serial))
            )
            store.index.apply(record)
        # One record through the WAL, so the checkpoint's LSN covers the applied state.
        marker = args.objects + new_keys + len(overwritten)
        await store.wal.append(
            PutVersion(BUCKET, object_key(marker), make_version("empty", marker, 0))
        )
        encode_seconds: list[float] = []
        write_seconds: list[float] = []
        timed_everywhere(checkpoint.encode_body, encode_seconds)
        timed_everywhere(device.write_parallel, write_seconds)
        checkpoint_started = time.perf_counter()
        if not await store.checkpoint():
            raise RuntimeError("the checkpoint was not written")
        checkpoint_seconds = time.perf_counter() - checkpoint_started
        checkpoint_encode_seconds, checkpoint_write_seconds = (
            sum(encode_seconds),
            sum(write_seconds),
        )
        newest = max(store.pointers.values(), key=lambda pointer: pointer.generation)
        checkpoints_before_tail = store.checkpoints

        records: list[Record] = []
        extent_serial = args.objects
        for serial in range(args.objects, args.objects + new_keys):
            version = make_version(args.kind, serial, offset(extent_serial))
            records.append(PutVersion(BUCKET, object_key(serial), version))
            extent_serial += 1
        for serial in overwritten:
            version = make_version(args.kind, serial, offset(extent_serial))
            records.append(PutVersion(BUCKET, object_key(serial), version))
            extent_serial += 1
        records.extend(DeleteObject(BUCKET, object_key(s), None, None) for s in deleted)
        random.Random(7).shuffle(records)
        tail_started = time.perf_counter()
        await append_all(store, records, args.tasks)
        tail_seconds = time.perf_counter() - tail_started
        if store.checkpoints != checkpoints_before_tail:
            raise RuntimeError("a checkpoint ran during the WAL tail; it would hide the replay")
        ready = {
            "objects_checkpointed": args.objects + 1,
            "objects_final": store.index.object_count(),
            "tail_records": len(records),
            "checkpoint_seconds": checkpoint_seconds,
            "encode_seconds": checkpoint_encode_seconds,
            "write_seconds": checkpoint_write_seconds,
            "body_bytes": newest.body_bytes,
            "wal_tail_bytes": store.wal.used_bytes,
            "tail_appends_per_second": len(records) / tail_seconds,
            "device_bytes": device_bytes,
            "build_seconds": time.perf_counter() - started,
        }
        print("ready " + json.dumps(ready), flush=True)
        await trio.sleep_forever()  # killed here: no clean close, no final checkpoint


async def append_all(store: Store, records: list[Record], tasks: int) -> None:
    async def appender(first: int) -> None:
        for index in range(first, len(records), tasks):
            await store.wal.append(records[index])

    async with trio.open_nursery() as nursery:
        for first in range(min(tasks, len(records))):
            nursery.start_soon(appender, first)


# -- recovery ----------------------------------------------------------------------


def timed_everywhere(function: Callable[..., Any], seconds: list[float]) -> None:
    """Time every call of `function` into `seconds`, wherever objfs refers to it.

    Replaces the name in every loaded objfs module that binds this very function
    (this process only), so the timing survives the code moving between modules.
    """
    if inspect.iscoroutinefunction(function):

        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                seconds.append(time.perf_counter() - started)

        wrapper: Callable[..., Any] = timed_async
    else:

        def timed_sync(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds.append(time.perf_counter() - started)

        wrapper = timed_sync
    for name, module in list(sys.modules.items()):
        if name == "objfs" or name.startswith("objfs."):
            for attribute, value in list(vars(module).items()):
                if value is function:
                    setattr(module, attribute, wrapper)


def timed_classmethod(cls: type, name: str, seconds: list[float]) -> None:
    """Time every call of the classmethod cls.name into `seconds`."""
    method = cls.__dict__.get(name)
    if not isinstance(method, classmethod):
        return
    function = method.__func__

    def timed(owner: type, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(owner, *args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - started)

    setattr(cls, name, classmethod(timed))


def instrument() -> dict[str, list[float]]:
    """Phase timers around the steps of recovery (in this process only)."""
    phases: dict[str, list[float]] = {
        "read checkpoint body": [],
        "decode checkpoint body": [],
        "build index from snapshot": [],
        "WAL: scan (read + decode frames)": [],
        "WAL: scan + apply": [],
        "rebuild free-space maps": [],
    }
    timed_everywhere(recovery.read_body, phases["read checkpoint body"])
    timed_everywhere(checkpoint.decode_body, phases["decode checkpoint body"])
    timed_classmethod(ObjectIndex, "from_snapshot", phases["build index from snapshot"])
    timed_everywhere(wal.scan, phases["WAL: scan (read + decode frames)"])
    timed_everywhere(recovery.replay_wal, phases["WAL: scan + apply"])
    timed_everywhere(recovery.rebuild_allocators, phases["rebuild free-space maps"])
    return phases


async def recover(args: argparse.Namespace) -> None:
    """Child: time open_store, measure memory, print 'result <json>', exit without closing."""
    phases = instrument()
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start()
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    # As `objfs serve` opens it: the recovered index frozen out of later GC passes.
    async with open_store(StoreConfig(data_dir=args.root), freeze_index=True) as store:
        seconds = time.perf_counter() - started
        gc.collect()
        result: dict[str, Any] = {
            "seconds": seconds,
            "rss_delta_bytes": rss_bytes() - before,
            "peak_delta_bytes": peak_rss_bytes() - before,
            "objects": store.index.object_count(),
            "replayed": store.replayed_records,
            "phases": {name: sum(values) for name, values in phases.items() if values},
        }
        if args.tracemalloc:
            import tracemalloc

            current, peak = tracemalloc.get_traced_memory()
            result["traced_bytes"] = current
            result["traced_peak_bytes"] = peak
        print("result " + json.dumps(result), flush=True)
        os._exit(0)  # no close: a close would checkpoint and change what the next run recovers


# -- the parent --------------------------------------------------------------------


def child_command(args: argparse.Namespace, phase: str, root: str, *, traced: bool) -> list[str]:
    command = [sys.executable, os.path.abspath(__file__), "--phase", phase, "--root", root]
    command += ["--objects", str(args.objects), "--tail", str(args.tail), "--kind", args.kind]
    command += ["--tasks", str(args.tasks)]
    return command + (["--tracemalloc"] if traced else [])


def run_build(args: argparse.Namespace, root: str) -> dict[str, Any]:
    with subprocess.Popen(
        child_command(args, "build", root, traced=False), stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        try:
            for line in child.stdout:
                if line.startswith("ready "):
                    ready: dict[str, Any] = json.loads(line[len("ready ") :])
                    child.send_signal(signal.SIGKILL)  # a crash: the WAL tail stays unreplayed
                    child.wait()
                    return ready
                print(line, end="", flush=True)
        finally:
            if child.poll() is None:
                child.kill()
        raise RuntimeError(f"the build process exited with {child.wait()} before 'ready'")


def run_recovery(args: argparse.Namespace, root: str, *, traced: bool) -> dict[str, Any]:
    completed = subprocess.run(
        child_command(args, "recover", root, traced=traced),
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    for line in completed.stdout.splitlines():
        if line.startswith("result "):
            result: dict[str, Any] = json.loads(line[len("result ") :])
            return result
    raise RuntimeError(f"the recovery process printed no result: {completed.stdout!r}")


def main(args: argparse.Namespace) -> None:
    device_bytes, wal_bytes = sizes(args)
    print(
        f"{args.objects:,} {args.kind} objects in the checkpoint + {args.tail:,} WAL records; "
        f"device file {device_bytes // MiB:,} MiB (WAL {wal_bytes // MiB} MiB) under {args.dir}",
        flush=True,
    )
    with scratch_dir(args.dir, "objfs-bench-recovery-") as root:
        built = run_build(args, root)
        print(
            f"  built in {built['build_seconds']:.1f} s "
            f"(tail appends {built['tail_appends_per_second']:,.0f}/s)",
            flush=True,
        )
        results = []
        for repetition in range(args.repeat):
            results.append(run_recovery(args, root, traced=False))
            print(
                f"  recovery {repetition + 1}: {results[-1]['seconds']:.2f} s, "
                f"{results[-1]['replayed']:,} records replayed",
                flush=True,
            )
        traced = run_recovery(args, root, traced=True) if args.tracemalloc else None
    report(args, built, results, traced)


def report(
    args: argparse.Namespace,
    built: dict[str, Any],
    results: list[dict[str, Any]],
    traced: dict[str, Any] | None,
) -> None:
    objects = results[0]["objects"]
    for result in results:
        if result["replayed"] != built["tail_records"] or result["objects"] != objects:
            print(
                f"  WARNING: a recovery replayed {result['replayed']} records (expected "
                f"{built['tail_records']}) or found {result['objects']} objects"
            )
    seconds = Summary.of([r["seconds"] for r in results])
    per_object = Summary.of([r["rss_delta_bytes"] / objects for r in results])
    peak = Summary.of([r["peak_delta_bytes"] / objects for r in results])
    print("checkpoint (written once, during the build):")
    print_row("objects in it", f"{built['objects_checkpointed']:,}")
    print_row("body size", f"{built['body_bytes'] / 1e6:,.1f} MB")
    print_row("body bytes per object", f"{built['body_bytes'] / built['objects_checkpointed']:.0f}")
    print_row("Store.checkpoint() took", f"{built['checkpoint_seconds']:.2f} s")
    print_row("  of which encoding the body", f"{built['encode_seconds']:.2f} s")
    print_row("  of which writing body + pointer", f"{built['write_seconds']:.2f} s")
    print("recovery (fresh process each time):")
    print_row("objects after recovery", f"{objects:,}")
    print_row("WAL records replayed", f"{results[0]['replayed']:,}")
    print_row("WAL tail size", f"{built['wal_tail_bytes'] / 1e6:,.1f} MB")
    print_row("open_store seconds", seconds.show(2, "s"))
    names = list(results[0]["phases"])
    for name in names:
        phase = Summary.of([r["phases"].get(name, 0.0) for r in results])
        print_row(f"  {name}", phase.show(2, "s"))
    print_row("memory after recovery, RSS delta/object", per_object.show(0, "B"))
    print_row("peak RSS during recovery, delta/object", peak.show(0, "B"))
    if traced is not None:
        print_row("tracemalloc: kept bytes/object", f"{traced['traced_bytes'] / objects:.0f} B")
        print_row(
            "tracemalloc: peak bytes/object", f"{traced['traced_peak_bytes'] / objects:.0f} B"
        )
    verdict_time = "meets" if seconds.median < TARGET_SECONDS else "BELOW"
    verdict_memory = "meets" if per_object.median < TARGET_BYTES_PER_OBJECT else "BELOW"
    print("targets:")
    print_row(f"recovery < {TARGET_SECONDS:.0f} s", f"{verdict_time} target")
    print_row(f"memory < {TARGET_BYTES_PER_OBJECT} B/object", f"{verdict_memory} target")


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.phase == "build":
        trio.run(build, arguments)
    elif arguments.phase == "recover":
        trio.run(recover, arguments)
    else:
        main(arguments)
