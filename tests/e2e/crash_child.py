"""The victim of test_crash_kill9.py: random object traffic on a real store, forever.

Run as `python crash_child.py DATA_DIR SEED`, then write `go` to its stdin (it
imports meanwhile). It opens the store in DATA_DIR, checks that the store holds
exactly the state the parent recorded in DATA_DIR/state.json (the state the
parent verified after the previous kill), then
runs `TASKS` concurrent trio tasks doing puts, overwrites, deletes and renames on
the keys `KEYS` of bucket `BUCKET` until it is killed.

Every operation is written to DATA_DIR/ack.log twice, with `os.write` (no fsync:
a SIGKILL does not lose what the kernel already holds): `begin ID OP ARGS` before
it is issued and `ack ID` after its await returned. Ops on one key never overlap:
a task holds a lock on every key its op touches from before `begin` until after
`ack`. So each key has one linear history in the log, and at the kill at most one
op per key is in flight (begun, not acknowledged).

Object bytes and user metadata are pure functions of a token `SEED.TASK.N` (see
`content` and `metadata`), so the parent can recompute what any key must hold. The
parent imports this module for them, the key names and the store configuration,
so both sides agree.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from contextlib import AsyncExitStack

import trio

from objfs.config import StoreConfig
from objfs.store import Store, open_store

KiB = 1024
MiB = 1024 * KiB

BUCKET = "crash"
KEYS = tuple(f"k{i:02d}" for i in range(48))
TASKS = 16
SEGMENT_SIZE_BYTES = 64 * KiB
CHECKPOINT_INTERVAL_MS = 300
INLINE_MAX_BYTES = 4 * KiB
MAX_OBJECT_BYTES = 600 * KiB
STATE_FILE = "state.json"  # {"key": "token", ...}: what the store holds at the start
LOG_FILE = "ack.log"
READY_LINE = "ready"
GO_LINE = "go"  # on stdin: the state file is written, start
EXIT_STATE_MISMATCH = 3
EXIT_NOT_STARTED = 4  # stdin closed without GO_LINE: a child the parent did not need


def store_config(
    data_dir: str,
    *,
    read_only: bool = False,
    checkpoint_interval_ms: int = CHECKPOINT_INTERVAL_MS,
) -> StoreConfig:
    """The configuration the child (and, with overrides, the parent's checker) opens."""
    return StoreConfig(
        data_dir=data_dir,
        fragment_size_bytes=SEGMENT_SIZE_BYTES,
        inline_max_bytes=INLINE_MAX_BYTES,
        checkpoint_interval_ms=checkpoint_interval_ms,
        read_only=read_only,
    )


def content_size(token: str) -> int:
    """Size for a token: empty, inline, exact segment multiples, or up to ~600 KB."""
    draw = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "little")
    kind, value = draw % 8, draw >> 3
    if kind == 0:
        return 0
    if kind in (1, 2):
        return 1 + value % INLINE_MAX_BYTES  # 1 .. 4096: stored inline in the WAL record
    if kind == 3:
        return SEGMENT_SIZE_BYTES * (1 + value % 9)  # exactly 1..9 whole segments
    return INLINE_MAX_BYTES + 1 + value % (MAX_OBJECT_BYTES - INLINE_MAX_BYTES)


def metadata(token: str) -> dict[str, str]:
    """User metadata of an object written with `token` (padded, so the WAL fills faster)."""
    pad = int.from_bytes(hashlib.sha256(b"meta" + token.encode()).digest()[:4], "little")
    return {"token": token, "pad": "m" * (pad % 1024)}


def content(token: str) -> bytes:
    """The bytes an object written with `token` holds (deterministic, ~2 ms for 600 KB)."""
    return hashlib.shake_256(token.encode()).digest(content_size(token))


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


async def check_start_state(store: Store, expected: dict[str, str]) -> list[str]:
    """Differences between the store and the recorded state (keys and ETags)."""
    found: dict[str, tuple[str | None, dict[str, str]]] = {}
    start_after = ""
    while True:
        page = store.list_objects(BUCKET, start_after=start_after)
        for info in page.objects:
            found[info.key] = (info.etag, dict(info.metadata))
        if not page.is_truncated:
            break
        assert page.next_start_after is not None
        start_after = page.next_start_after
    problems = []
    for key in sorted(set(found) | set(expected)):
        if key not in expected:
            problems.append(f"{key}: exists, but the parent recorded no such key")
        elif key not in found:
            problems.append(f"{key}: missing, the parent recorded token {expected[key]}")
        elif found[key] != (
            hashlib.md5(content(expected[key])).hexdigest(),
            metadata(expected[key]),
        ):
            problems.append(f"{key}: ETag or metadata {found[key]} not those of {expected[key]}")
    return problems


class Traffic:
    """The random operations, with a lock per key and a model of what each key holds."""

    def __init__(self, store: Store, model: dict[str, str], log_fd: int, seed: int) -> None:
        self.store = store
        self.model = model  # key -> token, for the keys that exist
        self.log_fd = log_fd
        self.seed = seed
        self.locks = {key: trio.Lock() for key in KEYS}
        self.next_op = 0

    def log(self, line: str) -> None:
        os.write(self.log_fd, (line + "\n").encode())

    async def run_task(self, task: int) -> None:
        rng = random.Random(f"{self.seed}/{task}")
        counter = 0
        while True:
            kind = rng.choices(("put", "del", "ren"), weights=(6, 2, 2))[0]
            keys = rng.sample(KEYS, 2) if kind == "ren" else [rng.choice(KEYS)]
            async with AsyncExitStack() as stack:
                for key in sorted(keys):
                    await stack.enter_async_context(self.locks[key])
                if kind != "put" and keys[0] not in self.model:
                    kind = "put"  # nothing to delete or rename: write it instead
                    keys = keys[:1]
                op, self.next_op = self.next_op, self.next_op + 1
                if kind == "put":
                    counter += 1
                    token = f"{self.seed}.{task}.{counter}"
                    data = content(token)
                    self.log(f"begin {op} put {keys[0]} {token}")
                    await self.store.put_object(BUCKET, keys[0], data, metadata=metadata(token))
                    self.log(f"ack {op}")
                    self.model[keys[0]] = token
                elif kind == "del":
                    self.log(f"begin {op} del {keys[0]}")
                    await self.store.delete_object(BUCKET, keys[0])
                    self.log(f"ack {op}")
                    del self.model[keys[0]]
                else:
                    source, target = keys
                    self.log(f"begin {op} ren {source} {target}")
                    await self.store.rename_object(BUCKET, source, target)
                    self.log(f"ack {op}")
                    self.model[target] = self.model.pop(source)


async def run(data_dir: str, seed: int, model: dict[str, str], log_fd: int) -> int:
    async with open_store(store_config(data_dir)) as store:
        problems = await check_start_state(store, model)
        if problems:
            print("the recovered store differs from the recorded state:", file=sys.stderr)
            print("\n".join(problems), file=sys.stderr)
            return EXIT_STATE_MISMATCH
        traffic = Traffic(store, model, log_fd, seed)
        traffic.log(READY_LINE)
        async with trio.open_nursery() as nursery:
            for task in range(TASKS):
                nursery.start_soon(traffic.run_task, task)
    return 0


def main(data_dir: str, seed: int) -> int:
    # The parent starts the next child while it still checks the store the last one
    # left, so that the imports overlap the check: "go" on stdin says it is done.
    if sys.stdin.readline().strip() != GO_LINE:
        return EXIT_NOT_STARTED
    with open(os.path.join(data_dir, STATE_FILE)) as file:
        model: dict[str, str] = json.load(file)
    log_path = os.path.join(data_dir, LOG_FILE)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    return trio.run(run, data_dir, seed, model, log_fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
