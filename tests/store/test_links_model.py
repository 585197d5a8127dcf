"""Hard links against a model of inodes: random sequences, every name checked.

Goal: whatever the order of links, writes, truncates, deletes, puts, copies and
renames over a few keys, each key reads the bytes of the file it names and lists
exactly the keys that name the same file, as POSIX hard links would; and a WAL
replay gives back the same index.

Method: hypothesis draws a list of operations over a pool of five keys (writes
small enough to stay inline in the WAL record and large enough to be stored as
segments; links drawn mostly from keys present). Each example formats a fresh
in-memory device, opens a store, and applies every operation both to the store
and to a model: name -> inode, inode -> bytearray. After each step every key of
the pool is compared (bytes, size, links, or NoSuchKey), and the groups and
segment references are checked from the index (link_checks.py). An operation
the model refuses must fail in the store with the same error and leave the
index unchanged. At the end the power is cut, the store is reopened from its
WAL alone, checked again and fsck'd with data verification. 60 examples take a
few seconds.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import pytest
import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from link_checks import check_groups, check_references, index_state

from objfs.config import StoreConfig
from objfs.errors import KeyAlreadyExists, NoSuchKey, ObjfsError
from objfs.store import Store, open_store
from objfs.store.format import format_devices
from objfs.store.fsck import check_open_store
from objfs.store.testing import MemoryDevice
from objfs.store.types import KiB, MiB

BUCKET = "model"
POOL = ("a", "b", "c", "d", "e")
SEGMENT = 256 * KiB
DEVICES = 1  # the model is about links, not mirrors; each device costs 64 MiB per example

Op = (
    tuple[str, ...]
    | tuple[str, int, str]
    | tuple[str, str, int]
    | tuple[str, str, int, int]
    | tuple[str, str, int, int, int]
)

keys = st.sampled_from(POOL)
sizes = st.one_of(st.integers(0, 300), st.integers(4000, 12_000))  # inline, or segments
seeds = st.integers(0, 2**16)
operations = st.one_of(
    st.tuples(st.just("put"), keys, sizes, seeds),
    st.tuples(st.just("link"), keys, keys),  # often refused: no source, or the target exists
    # A link from the n-th key present (resolved when run), so most of these succeed.
    *[st.tuples(st.just("link-present"), st.integers(0, 4), keys) for _ in range(2)],
    st.tuples(st.just("write"), keys, st.integers(0, 15_000), st.integers(1, 9000), seeds),
    st.tuples(st.just("truncate"), keys, st.integers(0, 20_000)),
    st.tuples(st.just("delete"), keys),
    st.tuples(st.just("rename"), keys, keys),
    st.tuples(st.just("copy"), keys, keys),
)


def data_of(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Model:
    """POSIX hard links: names point at inodes, inodes hold bytes."""

    names: dict[str, int] = field(default_factory=dict)
    inodes: dict[int, bytearray] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def new(self, data: bytes) -> int:
        inode = next(self.counter)
        self.inodes[inode] = bytearray(data)
        return inode

    def file(self, key: str) -> bytearray:
        if key not in self.names:
            raise NoSuchKey(key)
        return self.inodes[self.names[key]]

    def links(self, key: str) -> tuple[str, ...]:
        group = sorted(name for name, inode in self.names.items() if inode == self.names[key])
        return tuple(group) if len(group) > 1 else ()

    def resolve(self, op: Op) -> Op:
        """("link-present", n, target): a link from the n-th key present, if any."""
        match op:
            case ("link-present", int(n), str(target)):
                present = sorted(self.names) or ["a"]
                return ("link", present[n % len(present)], target)
        return op

    def apply(self, op: Op) -> None:
        """Change the model as the store should; raise the error the store should."""
        match op:
            case ("put", str(key), int(size), int(seed)):
                self.names[key] = self.new(data_of(size, seed))
            case ("link", str(source), str(target)):
                self.file(source)
                if target in self.names:
                    raise KeyAlreadyExists(target)
                self.names[target] = self.names[source]
            case ("write", str(key), int(offset), int(size), int(seed)):
                data = self.file(key)
                if len(data) < offset:
                    data.extend(bytes(offset - len(data)))
                data[offset : offset + size] = data_of(size, seed)
            case ("truncate", str(key), int(size)):
                data = self.file(key)
                del data[size:]
                data.extend(bytes(size - len(data)))
            case ("delete", str(key)):
                self.names.pop(key, None)
            case ("rename", str(source), str(target)):
                self.file(source)
                if self.names[source] != self.names.get(target):  # same file: nothing
                    self.names[target] = self.names.pop(source)
            case ("copy", str(source), str(target)):
                self.names[target] = self.new(bytes(self.file(source)))
            case _:
                raise AssertionError(op)
        for inode in set(self.inodes) - set(self.names.values()):
            del self.inodes[inode]


async def run_op(store: Store, op: Op) -> None:
    match op:
        case ("put", str(key), int(size), int(seed)):
            await store.put_object(BUCKET, key, data_of(size, seed))
        case ("link", str(source), str(target)):
            await store.link_object(BUCKET, source, target)
        case ("write", str(key), int(offset), int(size), int(seed)):
            await store.write_at(BUCKET, key, offset, data_of(size, seed))
        case ("truncate", str(key), int(size)):
            await store.truncate(BUCKET, key, size)
        case ("delete", str(key)):
            await store.delete_object(BUCKET, key)
        case ("rename", str(source), str(target)):
            await store.rename_object(BUCKET, source, target)
        case ("copy", str(source), str(target)):
            await store.copy_object(BUCKET, source, BUCKET, target)
        case _:
            raise AssertionError(op)


async def compare(store: Store, model: Model, step: object) -> None:
    for key in POOL:
        if key not in model.names:
            with pytest.raises(NoSuchKey):
                store.head_object(BUCKET, key)
            continue
        expected = bytes(model.file(key))
        info = store.head_object(BUCKET, key)
        assert info.size_bytes == len(expected), (step, key)
        assert info.links == model.links(key), (step, key)
        assert await store.get_object(BUCKET, key) == expected, (step, key)
    check_groups(store, BUCKET)
    check_references(store)


async def run_example(ops: list[Op]) -> int:
    """Run `ops` on a fresh store and on the model; return the largest group seen."""
    devices = [MemoryDevice(16 * MiB, path=f"mem{i}") for i in range(DEVICES)]
    await format_devices(devices, wal_size_bytes=1 * MiB)
    config = StoreConfig(
        fragment_size_bytes=SEGMENT, checkpoint_interval_ms=3_600_000, ec_policy="1+0"
    )
    model = Model()
    largest = 0
    async with open_store(config, devices=devices) as store:
        await store.create_bucket(BUCKET)
        for step, drawn in enumerate(ops):
            op = model.resolve(drawn)
            try:
                model.apply(op)
            except ObjfsError as expected:
                before = index_state(store)
                with pytest.raises(type(expected)):
                    await run_op(store, op)
                assert index_state(store) == before, (step, op)
            else:
                await run_op(store, op)
            await compare(store, model, (step, op))
            largest = max([largest, *(len(model.links(key)) for key in model.names)])
        state = index_state(store)
        devices = [device.crash() for device in devices]
    async with open_store(config, devices=devices) as store:
        assert index_state(store) == state
        await compare(store, model, "after replay")
        report = await check_open_store(store, verify_data=True)
        assert report.clean, report.render()
    return largest


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(operations, min_size=3, max_size=30))
def test_links_behave_like_posix_hard_links(ops: list[Op]) -> None:
    prelude: list[Op] = [("put", "a", 100, 1), ("put", "b", 9000, 2)]  # something to link
    largest = trio.run(run_example, prelude + ops)
    event(f"largest group: {largest}")
