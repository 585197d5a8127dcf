"""Space churn: write, overwrite and delete 5 GiB of objects on one 1 GiB device file.

Goal: freed space really comes back. Overwritten and deleted objects return
their extents, fragmentation does not strand space, the store never runs out
while its live data stays well under its size, and once everything is deleted
the free space is what it was after format (up to the checkpoint bodies).

Method: one 1 GiB O_DIRECT device file (default 1 MiB segments, a checkpoint
every second). Four concurrent tasks (so both cores stay busy hashing MD5 for
the ETags, the bottleneck) each own 16 keys and stream objects of random sizes
1-32 MiB through `open_writer` in 1 MiB writes, overwriting their keys and
deleting them so that live bytes plus bytes being written stay under
`LIVE_LIMIT_BYTES` (~0.6 GB), until 5 GiB were written. Object bytes come from
two pre-generated 32 MiB random buffers, each 1 MiB chunk starting with a
16-byte stamp (object id, chunk number), so every segment's bytes are unique: a
segment pointer to the wrong place cannot pass a checksum or a comparison.
Then: every live key's size and ETag against MD5 of the expected bytes, a few
objects read back fully, `check_open_store` with data verification and the
free + referenced + checkpoint = total identity, offline `run_fsck`, and after
reopening and deleting everything, the free space.

Set OBJFS_CHURN_SEED to repeat a run's choices.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import trio

from objfs.config import StoreConfig
from objfs.store import Store, open_store
from objfs.store.format import create_data_dir
from objfs.store.fsck import check_open_store, run_fsck
from objfs.store.types import Extent

MiB = 1024 * 1024
GiB = 1024 * MiB
# A half-size model of 10 GiB through a 2 GiB device (same object count, same
# live share of the device, five times its size written): the bytes cost time
# (MD5, checksums, O_DIRECT writes), the behaviour is in the ratios.
DEVICE_SIZE_BYTES = 1 * GiB
TOTAL_WRITE_BYTES = 5 * GiB
LIVE_LIMIT_BYTES = 600_000_000
MIN_OBJECT_BYTES, MAX_OBJECT_BYTES = 1 * MiB, 32 * MiB
CHUNK_BYTES = 1 * MiB
STAMP_BYTES = 16
TASKS = 4
KEYS_PER_TASK = 16
FULL_READS = 4
BUCKET = "churn"


@dataclass(frozen=True)
class Spec:
    """What an object holds: chunks of base buffer `base`, each stamped with `object_id`."""

    object_id: int
    base: int
    size_bytes: int


def chunks(bases: list[bytes], spec: Spec) -> Iterator[bytes | memoryview]:
    """The object's bytes as pieces: a stamp, then the rest of its 1 MiB chunk."""
    view = memoryview(bases[spec.base])
    for start in range(0, spec.size_bytes, CHUNK_BYTES):
        length = min(CHUNK_BYTES, spec.size_bytes - start)
        stamp = f"{spec.object_id:08x}{start // CHUNK_BYTES:08x}".encode()
        yield stamp[:length]
        if length > STAMP_BYTES:
            yield view[start + STAMP_BYTES : start + length]


def expected_md5(bases: list[bytes], spec: Spec) -> str:
    digest = hashlib.md5()
    for piece in chunks(bases, spec):
        digest.update(piece)
    return digest.hexdigest()


def unique_bytes(extents: list[Extent]) -> int:
    return sum({(e.device_index, e.offset_bytes): e.length_bytes for e in extents}.values())


def checkpoint_bytes(store: Store) -> int:
    return unique_bytes([e for p in store.pointers.values() for e in p.extents()])


def assert_space_adds_up(store: Store) -> None:
    referenced = sum(
        fragment.extent.length_bytes
        for segment in store.index.referenced_segments()
        for fragment in segment.fragments
    )
    checkpoints, pending = checkpoint_bytes(store), unique_bytes(store.pending_extents())
    free, total = store.space.free_bytes, store.space.total_bytes
    assert free + referenced + checkpoints + pending == total, (
        f"free {free} + referenced {referenced} + checkpoints {checkpoints} + pending "
        f"{pending} != total {total}"
    )


class Churn:
    """The writer tasks, the model of what each key holds, and the live-bytes budget."""

    def __init__(self, store: Store, bases: list[bytes], seed: int) -> None:
        self.store = store
        self.bases = bases
        self.seed = seed
        self.model: dict[str, Spec] = {}
        self.live_bytes = 0  # committed objects plus objects being written
        self.written_bytes = 0
        self.next_id = 0
        self.puts = self.overwrites = self.deletes = 0
        self.changed = trio.Condition()
        self.md5s: dict[int, str] = {}  # object id -> expected ETag, computed once

    async def expected_etag(self, spec: Spec) -> str:
        if spec.object_id not in self.md5s:
            self.md5s[spec.object_id] = await trio.to_thread.run_sync(
                expected_md5, self.bases, spec
            )
        return self.md5s[spec.object_id]

    async def delete(self, key: str) -> None:
        await self.store.delete_object(BUCKET, key)
        self.live_bytes -= self.model.pop(key).size_bytes
        self.deletes += 1
        async with self.changed:
            self.changed.notify_all()

    async def put(self, key: str, spec: Spec) -> None:
        async with self.store.open_writer(BUCKET, key) as writer:
            for piece in chunks(self.bases, spec):
                await writer.write(piece)
            version = await writer.commit()
        assert version.size_bytes == spec.size_bytes
        old = self.model.get(key)
        if old is not None:
            self.live_bytes -= old.size_bytes
            self.overwrites += 1
        self.model[key] = spec
        self.puts += 1
        async with self.changed:
            self.changed.notify_all()

    async def run_task(self, task: int) -> None:
        rng = random.Random(f"{self.seed}/{task}")
        keys = [f"t{task}/k{i:02d}" for i in range(KEYS_PER_TASK)]
        while self.written_bytes < TOTAL_WRITE_BYTES:
            key = rng.choice(keys)
            size = rng.randint(MIN_OBJECT_BYTES, MAX_OBJECT_BYTES)
            self.written_bytes += size
            # The old version stays until the new one commits: budget both.
            while self.live_bytes + size > LIVE_LIMIT_BYTES:
                mine = [k for k in keys if k in self.model]
                if mine:
                    await self.delete(rng.choice(mine))
                else:
                    async with self.changed:
                        await self.changed.wait()
            if rng.random() < 0.1 and key in self.model:
                await self.delete(key)
            self.live_bytes += size
            spec = Spec(self.next_id, rng.randrange(len(self.bases)), size)
            self.next_id += 1
            await self.put(key, spec)


async def verify_live(store: Store, churn: Churn, rng: random.Random) -> None:
    """Listing, sizes and ETags of every live key; a few objects read back whole."""
    listed: dict[str, int] = {}
    start_after = ""
    while True:
        page = store.list_objects(BUCKET, start_after=start_after)
        listed.update({info.key: info.size_bytes for info in page.objects})
        if not page.is_truncated:
            break
        assert page.next_start_after is not None
        start_after = page.next_start_after
    assert listed == {key: spec.size_bytes for key, spec in churn.model.items()}
    for key, spec in sorted(churn.model.items()):
        etag = await churn.expected_etag(spec)
        assert store.head_object(BUCKET, key).etag == etag, f"{key}: ETag differs"
    for key in rng.sample(sorted(churn.model), min(FULL_READS, len(churn.model))):
        spec = churn.model[key]
        position = 0
        async with store.open_reader(BUCKET, key) as reader:
            for piece in chunks(churn.bases, spec):
                data = await reader.read(position, len(piece))
                assert data == piece, f"{key}: bytes at {position} differ"
                position += len(piece)
            assert await reader.read(position, 1) == b""


async def test_space_churn(disk_dir: str) -> None:
    seed = int(os.environ.get("OBJFS_CHURN_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    # Unique even if another pytest session shares disk_dir (it is named d0 in each).
    data_dir = tempfile.mkdtemp(prefix="churn-", dir=disk_dir)
    config = StoreConfig(data_dir=data_dir, checkpoint_interval_ms=1000)
    bases = [rng.randbytes(MAX_OBJECT_BYTES) for _ in range(2)]
    try:
        await create_data_dir(data_dir, device_count=1, device_size_bytes=DEVICE_SIZE_BYTES)
        async with open_store(config) as store:
            free_after_format = store.space.free_bytes
            assert free_after_format + checkpoint_bytes(store) == store.space.total_bytes
            await store.create_bucket(BUCKET)
            churn = Churn(store, bases, seed)
            started = time.monotonic()
            async with trio.open_nursery() as nursery:
                for task in range(TASKS):
                    nursery.start_soon(churn.run_task, task)
            write_s = time.monotonic() - started
            free_map = store.space.allocators[0].statistics()
            print(
                f"seed {seed}: wrote {churn.written_bytes / GiB:.2f} GiB in {write_s:.1f} s "
                f"({churn.written_bytes / MiB / write_s:.0f} MiB/s): {churn.puts} puts, "
                f"{churn.overwrites} overwrites, {churn.deletes} deletes, "
                f"{churn.live_bytes / MiB:.0f} MiB live, {store.checkpoints} checkpoints, "
                f"{free_map.free_extent_count} free extents (largest "
                f"{free_map.largest_free_bytes / MiB:.0f} MiB of {free_map.free_bytes / MiB:.0f})"
            )
            started = time.monotonic()
            await verify_live(store, churn, rng)
            report = await check_open_store(store, verify_data=True)
            assert report.clean, report.render()
            assert_space_adds_up(store)
            print(f"verified live objects and fsck in {time.monotonic() - started:.1f} s")
        started = time.monotonic()
        offline = await run_fsck(config, verify_data=True, repair=False)
        assert offline.clean, offline.render()
        print(f"offline fsck in {time.monotonic() - started:.1f} s")

        async with open_store(config) as store:
            churn.store = store
            await verify_live(store, churn, rng)
            for key in sorted(churn.model):
                await churn.delete(key)
            assert store.list_objects(BUCKET).objects == ()
            await store.checkpoint()
            report = await check_open_store(store)
            assert report.clean, report.render()
            assert_space_adds_up(store)
            free, body_bytes = store.space.free_bytes, checkpoint_bytes(store)
            assert not store.pending_extents()
            assert free + body_bytes == store.space.total_bytes
            assert 0 <= free_after_format - free <= body_bytes, (free_after_format, free)
        offline = await run_fsck(config, verify_data=True, repair=False)
        assert offline.clean, offline.render()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
