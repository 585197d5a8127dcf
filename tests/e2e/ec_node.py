"""Helpers shared by the erasure-coding e2e tests: a small 4+2 node on device files.

`make_node` formats six 64 MiB device files in a data directory (as `objfs
format` does, but in-process), writes a config file of 64 KiB fragments (so a
segment is 256 KiB and a few tens of MiB of objects make hundreds of segments)
and fills one bucket.
`inspect_node` opens the node read-only (nothing on disk changes) and reads every
object and every fragment back; `damage_fragments` overwrites fragments with
garbage behind the store's back. Object bytes are random but seeded, and kept by
the caller, so every comparison is byte for byte.
"""

from __future__ import annotations

import functools
import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass, field

import crc32c
import trio

from objfs.config import StoreConfig
from objfs.store import open_store
from objfs.store.format import create_data_dir
from objfs.store.fsck import run_fsck
from objfs.store.superblock import (
    SUPERBLOCK_A_OFFSET_BYTES,
    SUPERBLOCK_B_OFFSET_BYTES,
    NotASuperblock,
    Superblock,
    decode_superblock,
)
from objfs.store.types import Fragment

KiB = 1024
MiB = 1024 * KiB
BUCKET = "healing"
DEVICE_COUNT = 6
DEVICE_SIZE_BYTES = 64 * MiB
FRAGMENT_SIZE_BYTES = 64 * KiB
SEGMENT_SIZE_BYTES = 4 * FRAGMENT_SIZE_BYTES  # 4+2: four data fragments per segment
INLINE_MAX_BYTES = 4 * KiB  # the default: smaller objects live in their WAL record
CONFIG_TEXT = f"[store]\nfragment_size_bytes = {FRAGMENT_SIZE_BYTES}\n"
METADATA_DEVICES = (0, 1, 2)  # a 6-device node keeps WAL and checkpoints on three
DATA_ONLY_DEVICES = (3, 4, 5)

Objects = dict[str, bytes]


@dataclass(frozen=True)
class Node:
    data_dir: str
    config_path: str

    def device_path(self, index: int) -> str:
        return os.path.join(self.data_dir, "devices", f"dev{index}.img")

    def store_config(self, *, read_only: bool = False) -> StoreConfig:
        return StoreConfig(
            data_dir=self.data_dir, fragment_size_bytes=FRAGMENT_SIZE_BYTES, read_only=read_only
        )


def objfs(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the `objfs` command as a user would, without a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "objfs", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def node_args(node: Node) -> list[str]:
    return ["--config", node.config_path, "--data", node.data_dir]


def make_objects(seed: int, count: int) -> Objects:
    """`count` objects of random bytes: empty, inline, whole segments, and up to ~1.2 MB."""
    rng = random.Random(seed)
    objects: Objects = {}
    for number in range(count):
        kind = number % 8
        if kind == 0:
            size = 0 if number == 0 else rng.randint(1, INLINE_MAX_BYTES)
        elif kind == 1:
            size = SEGMENT_SIZE_BYTES * rng.randint(1, 4)
        else:
            size = rng.randint(INLINE_MAX_BYTES + 1, 1_200_000)
        objects[f"obj-{number:04d}"] = rng.randbytes(size)
    return objects


async def _fill(config: StoreConfig, objects: Objects) -> None:
    async with open_store(config) as store:
        await store.create_bucket(BUCKET)
        keys = sorted(objects)

        async def put_some(start: int) -> None:
            for key in keys[start::4]:
                await store.put_object(BUCKET, key, objects[key])

        async with trio.open_nursery() as nursery:
            for start in range(4):
                nursery.start_soon(put_some, start)


def make_node(directory: str, objects: Objects) -> Node:
    """Format a 4+2 node on six 64 MiB device files in `directory`/data, and put `objects`."""
    config_path = os.path.join(directory, "objfs.toml")
    with open(config_path, "w") as file:
        file.write(CONFIG_TEXT)
    node = Node(os.path.join(directory, "data"), config_path)
    # What `objfs --config C --data D format --device-size 64M` does (format takes
    # nothing from C), in this process: starting `objfs` costs a second of imports,
    # and these tests run `objfs` on the node, not its format (test_cli.py does).
    superblocks = trio.run(
        functools.partial(
            create_data_dir,
            node.data_dir,
            device_count=DEVICE_COUNT,
            device_size_bytes=DEVICE_SIZE_BYTES,
        )
    )
    assert len(superblocks) == DEVICE_COUNT
    trio.run(_fill, node.store_config(), objects)
    return node


@dataclass
class NodeState:
    """What a read-only open saw."""

    down: tuple[int, ...]
    owed: tuple[int, ...]
    segments: int = 0
    # device index -> fragments on it that fail their checksum (devices present only)
    damaged: dict[int, int] = field(default_factory=dict)

    @property
    def damaged_total(self) -> int:
        return sum(self.damaged.values())


async def _inspect(config: StoreConfig, objects: Objects) -> NodeState:
    async with open_store(config) as store:
        listed: list[str] = []
        start_after = ""
        while True:
            page = store.list_objects(BUCKET, start_after=start_after)
            listed.extend(info.key for info in page.objects)
            if not page.is_truncated:
                break
            assert page.next_start_after is not None
            start_after = page.next_start_after
        assert listed == sorted(objects), (
            f"keys differ: missing {sorted(set(objects) - set(listed))[:5]}, "
            f"extra {sorted(set(listed) - set(objects))[:5]}"
        )
        for key in listed:
            data = await store.get_object(BUCKET, key)
            assert data == objects[key], f"{key}: {len(data)} bytes read back differ"
        health = store.health.statistics()
        state = NodeState(down=health.down_devices, owed=health.owed_devices)
        by_device: dict[int, list[Fragment]] = {index: [] for index in store.devices}
        for segment in store.index.referenced_segments():
            state.segments += 1
            for fragment in segment.fragments:
                if fragment.extent.device_index in by_device:
                    by_device[fragment.extent.device_index].append(fragment)

        async def count_damaged(device_index: int, fragments: list[Fragment]) -> None:
            datas = await store.devices[device_index].read_many(
                [(f.extent.offset_bytes, f.size_bytes) for f in fragments]
            )
            state.damaged[device_index] = sum(
                crc32c.crc32c(data) != f.crc32c for f, data in zip(fragments, datas, strict=True)
            )

        async with trio.open_nursery() as nursery:
            for device_index, fragments in by_device.items():
                nursery.start_soon(count_damaged, device_index, fragments)
        state.damaged = dict(sorted(state.damaged.items()))
    return state


def inspect_node(node: Node, objects: Objects) -> NodeState:
    """Open the node read-only; assert it lists exactly `objects` and each reads back
    byte-identical; count the fragments that fail their checksum, per device."""
    return trio.run(_inspect, node.store_config(read_only=True), objects)


async def _fragments_on(config: StoreConfig, devices: set[int]) -> list[tuple[int, int, int]]:
    async with open_store(config) as store:
        return [
            (f.extent.device_index, f.extent.offset_bytes, f.size_bytes)
            for segment in store.index.referenced_segments()
            for f in segment.fragments
            if f.extent.device_index in devices
        ]


def damage_fragments(
    node: Node, devices: set[int], rng: random.Random, share: float
) -> dict[tuple[int, int], bytes]:
    """Overwrite a random `share` of the fragments on `devices` with garbage (the node
    is stopped). Returns (device, offset) -> the fragment's original bytes."""
    fragments = trio.run(_fragments_on, node.store_config(read_only=True), devices)
    chosen = rng.sample(fragments, max(1, int(len(fragments) * share)))
    originals = {}
    for device_index, offset_bytes, size_bytes in chosen:
        fd = os.open(node.device_path(device_index), os.O_RDWR)
        try:
            originals[(device_index, offset_bytes)] = os.pread(fd, size_bytes, offset_bytes)
            os.pwrite(fd, rng.randbytes(size_bytes), offset_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
    return originals


def read_fragment(node: Node, device_index: int, offset_bytes: int, size_bytes: int) -> bytes:
    with open(node.device_path(device_index), "rb") as file:
        file.seek(offset_bytes)
        return file.read(size_bytes)


_OWED = re.compile(r"owed: (?:devices \[([0-9, ]*)\] may lack|no device owes)")


def fsck_owed(node: Node) -> tuple[int, ...]:
    """The devices `objfs fsck` (offline, metadata only) says are owed fragments: the
    report it prints, made in this process (a second less than starting `objfs`, after
    every kill of test_heal_kill9.py; its end still runs the command)."""
    report = trio.run(
        functools.partial(run_fsck, node.store_config(), verify_data=False, repair=False)
    )
    rendered = report.render()
    match = _OWED.search(rendered)
    assert match is not None, rendered
    if match.group(1) is None:
        return ()
    return tuple(int(i) for i in match.group(1).split(","))


def superblock_copies(node: Node) -> dict[int, tuple[Superblock | None, Superblock | None]]:
    """Copies A and B of each device file's superblock (None: not a valid copy)."""
    copies = {}
    for index in range(DEVICE_COUNT):
        path = node.device_path(index)
        if not os.path.exists(path):
            continue
        pair: list[Superblock | None] = []
        for offset in (SUPERBLOCK_A_OFFSET_BYTES, SUPERBLOCK_B_OFFSET_BYTES):
            with open(path, "rb") as file:
                file.seek(offset)
                block = file.read(4096)
            try:
                pair.append(decode_superblock(block, path=path))
            except NotASuperblock:
                pair.append(None)
        copies[index] = (pair[0], pair[1])
    return copies
