"""Crash safety of the storage core under SIGKILL, in real processes on O_DIRECT device files.

Goal: whatever moment a process running the store is killed, the store that
opens afterwards holds every acknowledged operation, nothing that was never
asked for, each in-flight operation either whole or not at all, and passes fsck
(online with a space-map rebuild and checksum verification, and offline).

Method: the parent formats a data dir (two 256 MiB device files, an 8 MiB WAL)
and creates one bucket. Then, for up to `MAX_CYCLES` cycles (bounded by
`TIME_BUDGET_S`), it runs `crash_child.py` (16 trio tasks of random puts of 0 to
~600 KB, inline and multi-segment with 64 KiB segments, overwrites, deletes and
renames over 48 keys, checkpoints every 300 ms so the WAL is trimmed and wraps),
waits for it to report ready, lets it run a random 0.2-1.5 s and SIGKILLs it.
Each child is started while the previous cycle is still being checked and waits
for "go" on stdin before it touches the data dir, so its Python imports (half a
second) overlap the check instead of adding to every cycle.

The checker stays exact and simple because of three choices:
- State carried across cycles is a JSON file, `state.json` (key -> token), that
  the parent writes after verifying the store; the child starts from it (and
  first checks the store against it), so one cycle's log is replayed on top of a
  state that is known exactly.
- The child holds a lock on every key an op touches from before its `begin` line
  until after its `ack` line, so per key the log is one linear history and at the
  kill at most one op per key is in flight. Replaying the acknowledged ops in log
  order gives the exact state of every key no in-flight op touches.
- Object bytes are a pure function of a token, so for an in-flight op the keys it
  touches must, together, hold exactly the state before it or exactly the state
  after it (a rename is atomic: both keys move together). Whichever it was
  becomes part of the next cycle's exact state.

After each kill the parent opens the store (read-only on odd cycles, so the next
child itself must recover the crashed WAL and keep writing after it; read-write
on even cycles, so close writes a final checkpoint), compares every key's bytes,
ETag and size, requires `check_open_store(verify_data=True)` to be clean, checks
that free + referenced + checkpoint + pending bytes add up to the data regions,
closes, and requires the offline `run_fsck(verify_data=True)` to be clean.

Set OBJFS_CRASH_SEED to repeat a run's choices (kill timing still varies) and
OBJFS_KEEP_DATA=1 to keep the data dir for inspection.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import trio
from crash_child import (
    BUCKET,
    EXIT_STATE_MISMATCH,
    GO_LINE,
    LOG_FILE,
    READY_LINE,
    STATE_FILE,
    content,
    metadata,
    store_config,
)

from objfs.config import StoreConfig
from objfs.store import Store, open_store
from objfs.store.format import create_data_dir
from objfs.store.fsck import check_open_store, run_fsck
from objfs.store.types import Extent

MiB = 1024 * 1024
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash_child.py")
DEVICE_COUNT = 6  # 4+2: every put is erasure-coded across all six files
DEVICE_SIZE_BYTES = 128 * MiB
WAL_SIZE_BYTES = 8 * MiB
MAX_CYCLES = 25
MIN_CYCLES = 10
TIME_BUDGET_S = 60.0  # no new cycle starts after this
READY_TIMEOUT_S = 60.0
RUN_SECONDS = (0.2, 1.5)
FILLER_BUCKET = "filler"
WAL_PREFILL_BYTES = WAL_SIZE_BYTES - 1 * MiB

Model = dict[str, str]  # key -> token, for the keys that exist
KeyStates = dict[str, str | None]  # key -> token, or None for "absent"


@dataclass(frozen=True)
class Op:
    kind: str  # put, del, ren
    keys: tuple[str, ...]  # put/del: (key,); ren: (source, target)
    token: str | None = None  # put only
    line: str = ""


@dataclass
class InFlight:
    op: Op
    before: KeyStates
    after: KeyStates


@dataclass
class Expected:
    settled: Model  # keys no in-flight op touches: exact state (absent keys omitted)
    in_flight: list[InFlight]
    acked: int


@dataclass
class CycleStats:
    replayed_records: int = 0
    wal_position: int = 0
    segments: int = 0
    keys: int = 0
    outcomes: list[str] = field(default_factory=list)


def apply_op(state: Model, op: Op) -> None:
    """What an op does to a model of the bucket."""
    if op.kind == "put":
        assert op.token is not None
        state[op.keys[0]] = op.token
    elif op.kind == "del":
        assert op.keys[0] in state, f"log deletes a missing key: {op.line}"
        del state[op.keys[0]]
    else:
        source, target = op.keys
        assert source in state, f"log renames a missing key: {op.line}"
        state[target] = state.pop(source)


def parse_op(line: str) -> tuple[int, Op]:
    parts = line.split()
    op_id, kind, args = int(parts[1]), parts[2], parts[3:]
    if kind == "put":
        return op_id, Op(kind, (args[0],), args[1], line)
    if kind == "del":
        return op_id, Op(kind, (args[0],), None, line)
    assert kind == "ren", line
    return op_id, Op(kind, (args[0], args[1]), None, line)


def read_log(path: str) -> list[str]:
    """Complete lines of the ack log; a last line without its newline is dropped."""
    with open(path, "rb") as file:
        text = file.read().decode()
    lines = text.split("\n")
    return [line for line in lines[:-1] if line]


def replay(start: Model, lines: list[str]) -> Expected:
    """Acknowledged ops applied in log order; the unacknowledged ones left as choices."""
    state = dict(start)
    begun: dict[int, Op] = {}
    acked = 0
    for line in lines:
        word = line.split()[0]
        if word == "begin":
            op_id, op = parse_op(line)
            begun[op_id] = op
        elif word == "ack":
            apply_op(state, begun.pop(int(line.split()[1])))
            acked += 1
        else:
            assert line == READY_LINE, f"unexpected log line {line!r}"
    in_flight = []
    touched: set[str] = set()
    for op in begun.values():
        assert not touched & set(op.keys), f"two in-flight ops on one key: {op.line}"
        touched |= set(op.keys)
        before = {key: state.get(key) for key in op.keys}
        after_model = {key: token for key, token in before.items() if token is not None}
        apply_op(after_model, op)
        after = {key: after_model.get(key) for key in op.keys}
        in_flight.append(InFlight(op, before, after))
    settled = {key: token for key, token in state.items() if key not in touched}
    return Expected(settled, in_flight, acked)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


Stored = tuple[bytes, dict[str, str]]  # an object's bytes and user metadata


async def read_bucket(store: Store) -> dict[str, Stored]:
    """Every listed key's bytes and metadata, after checking its size and ETag."""
    found: dict[str, Stored] = {}
    start_after = ""
    while True:
        page = store.list_objects(BUCKET, start_after=start_after, limit=17)
        for info in page.objects:
            data = await store.get_object(BUCKET, info.key)
            assert info.size_bytes == len(data), f"{info.key}: size {info.size_bytes}"
            assert info.etag == md5_hex(data), f"{info.key}: ETag differs from its bytes"
            found[info.key] = (data, dict(info.metadata))
        if not page.is_truncated:
            return found
        assert page.next_start_after is not None
        start_after = page.next_start_after


def unique_bytes(extents: list[Extent]) -> int:
    return sum({(e.device_index, e.offset_bytes): e.length_bytes for e in extents}.values())


def assert_space_adds_up(store: Store) -> None:
    referenced = sum(
        fragment.extent.length_bytes
        for segment in store.index.referenced_segments()
        for fragment in segment.fragments
    )
    checkpoints = unique_bytes([e for p in store.pointers.values() for e in p.extents()])
    pending = unique_bytes(store.pending_extents())
    free, total = store.space.free_bytes, store.space.total_bytes
    assert free + referenced + checkpoints + pending == total, (
        f"free {free} + referenced {referenced} + checkpoints {checkpoints} + pending "
        f"{pending} != total {total}"
    )


async def check_store(
    data_dir: str, expected: Expected, *, read_only: bool
) -> tuple[Model, CycleStats]:
    """Open the store, compare it with `expected`, fsck it; return its exact state."""
    stats = CycleStats()
    config = store_config(data_dir, read_only=read_only, checkpoint_interval_ms=3_600_000)
    async with open_store(config) as store:
        stats.replayed_records = store.replayed_records
        stats.wal_position = store.wal.applied_position
        actual = await read_bucket(store)
        touched = {key for item in expected.in_flight for key in item.op.keys}
        for key in sorted(set(actual) | set(expected.settled)):
            if key in touched:
                continue
            assert key in expected.settled, f"{key}: exists but was never written or was deleted"
            assert key in actual, f"{key}: lost (acknowledged token {expected.settled[key]})"
            assert matches(actual[key], expected.settled[key]), (
                f"{key}: bytes or metadata are not those of acknowledged token "
                f"{expected.settled[key]}"
            )
        state = dict(expected.settled)
        for item in expected.in_flight:
            seen = {key: identify(key, actual.get(key), item) for key in item.op.keys}
            assert seen in (item.before, item.after), (
                f"in-flight {item.op.line!r} is half done: store has {seen}, before "
                f"{item.before}, after {item.after}"
            )
            stats.outcomes.append("after" if seen == item.after else "before")
            state.update({key: token for key, token in seen.items() if token is not None})
        report = await check_open_store(store, verify_data=True)
        assert report.clean, report.render()
        assert_space_adds_up(store)
        stats.segments, stats.keys = report.segments, len(actual)
    offline = await run_fsck(StoreConfig(data_dir=data_dir), verify_data=True, repair=False)
    assert offline.clean, offline.render()
    return state, stats


def matches(stored: Stored, token: str) -> bool:
    return stored == (content(token), metadata(token))


def identify(key: str, stored: Stored | None, item: InFlight) -> str | None:
    """Which of the in-flight op's allowed tokens `stored` is (None: the key is absent)."""
    if stored is None:
        return None
    for token in (item.before.get(key), item.after.get(key)):
        if token is not None and matches(stored, token):
            return token
    raise AssertionError(
        f"{key}: holds {len(stored[0])} bytes (metadata token {stored[1].get('token')}) that "
        f"are neither before nor after in-flight {item.op.line!r} (allowed "
        f"{item.before.get(key)} / {item.after.get(key)})"
    )


async def format_store(data_dir: str) -> None:
    """Format, create the bucket, and push the WAL close to its end so that it wraps
    while the children run (they write only ~0.3 MiB of WAL per cycle)."""
    await create_data_dir(
        data_dir,
        device_count=DEVICE_COUNT,
        device_size_bytes=DEVICE_SIZE_BYTES,
        wal_size_bytes=WAL_SIZE_BYTES,
    )
    async with open_store(store_config(data_dir)) as store:
        await store.create_bucket(BUCKET)
        await store.create_bucket(FILLER_BUCKET)
        filler = bytes(4096)  # inline: the whole object goes into the WAL record

        async def fill(task: int) -> None:
            count = 0
            while store.wal.applied_position < WAL_PREFILL_BYTES:
                await store.put_object(FILLER_BUCKET, f"f{task}-{count % 8}", filler)
                count += 1
            for slot in range(min(count, 8)):
                await store.delete_object(FILLER_BUCKET, f"f{task}-{slot}")

        async with trio.open_nursery() as nursery:
            for task in range(8):
                nursery.start_soon(fill, task)
        await store.delete_bucket(FILLER_BUCKET)


def child_output(path: str) -> str:
    with open(path, errors="replace") as file:
        return file.read()[-4000:]


def start_child(data_dir: str, seed: int, output: str) -> subprocess.Popen[bytes]:
    """Start a child; it imports, then waits for `go_and_kill` (see crash_child.main)."""
    with open(output, "wb") as out:
        return subprocess.Popen(
            [sys.executable, CHILD, data_dir, str(seed)],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_child(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait()
    if child.stdin is not None:
        child.stdin.close()


def go_and_kill(child: subprocess.Popen[bytes], data_dir: str, run_s: float, output: str) -> None:
    """Let a started child go, wait until it is ready, let it run `run_s` seconds,
    SIGKILL it."""
    log_path = os.path.join(data_dir, LOG_FILE)
    try:
        assert child.stdin is not None
        child.stdin.write(f"{GO_LINE}\n".encode())
        child.stdin.flush()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not (os.path.exists(log_path) and READY_LINE in read_log(log_path)[:1]):
            code = child.poll()
            if code is not None:
                why = "found the store differs" if code == EXIT_STATE_MISMATCH else "failed"
                raise AssertionError(f"child {why} at start (exit {code}):\n{child_output(output)}")
            assert time.monotonic() < deadline, "child not ready in time"
            time.sleep(0.01)
        time.sleep(run_s)
        code = child.poll()
        assert code is None, f"child died by itself (exit {code}):\n{child_output(output)}"
    finally:
        stop_child(child)


def test_kill9_loop(disk_dir: str) -> None:
    seed = int(os.environ.get("OBJFS_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    # Unique even if another pytest session shares disk_dir (it is named d0 in each).
    data_dir = tempfile.mkdtemp(prefix="crash-", dir=disk_dir)
    started = time.monotonic()
    print(f"seed {seed}, data dir {data_dir}")
    child: subprocess.Popen[bytes] | None = None
    try:

        def output(cycle: int) -> str:  # two: the next child starts while one is read
            return os.path.join(data_dir, f"child{cycle % 2}.out")

        trio.run(format_store, data_dir)
        state: Model = {}
        stats = CycleStats()
        cycle = 0
        child = start_child(data_dir, seed * 1000 + cycle, output(cycle))
        while cycle < MAX_CYCLES and (
            cycle < MIN_CYCLES or time.monotonic() - started < TIME_BUDGET_S
        ):
            with open(os.path.join(data_dir, STATE_FILE), "w") as file:
                json.dump(state, file)
            log_path = os.path.join(data_dir, LOG_FILE)
            if os.path.exists(log_path):
                os.unlink(log_path)
            run_s = rng.uniform(*RUN_SECONDS)
            read_only = cycle % 2 == 1
            try:
                go_and_kill(child, data_dir, run_s, output(cycle))
                # The next child imports while this cycle's store is checked; it
                # touches nothing before its "go".
                child = start_child(data_dir, seed * 1000 + cycle + 1, output(cycle + 1))
                expected = replay(state, read_log(log_path))
                check = functools.partial(check_store, read_only=read_only)
                state, stats = trio.run(check, data_dir, expected)
            except BaseException as exc:
                exc.add_note(f"seed {seed}, cycle {cycle}, checked read-only: {read_only}")
                raise
            print(
                f"cycle {cycle}: ran {run_s:.2f} s, {expected.acked} ops acked, "
                f"{len(stats.outcomes)} in flight ({stats.outcomes.count('after')} done), "
                f"replayed {stats.replayed_records} records, WAL at "
                f"{stats.wal_position / MiB:.1f} MiB, {stats.keys} keys, "
                f"{stats.segments} segments"
            )
            cycle += 1
        print(f"{cycle} cycles in {time.monotonic() - started:.1f} s")
        assert stats.wal_position > WAL_SIZE_BYTES, "the WAL never wrapped while children ran"
    finally:
        if child is not None:
            stop_child(child)  # the one started for a cycle that did not come
        if not os.environ.get("OBJFS_KEEP_DATA"):
            shutil.rmtree(data_dir, ignore_errors=True)
