"""The Store API keeps its promises about objects, buckets, space and versions.

Goal: every public operation of `Store` does what its docstring says, byte for
byte, and accounts for device space exactly: new bytes take space, bytes nothing
references any more give it back (at once, or when the last reader closes).

Method: drive the Store API on three small in-memory devices (16 MiB, 2 MiB WAL,
256 KiB segments, so the WAL never asks for a checkpoint and free space moves
only with data). Space is read from `store.space.free_bytes` and compared with
what the stored bytes should take (whole 4 KiB blocks; objects up to 4096 bytes
live inline in their WAL record and take none). Tests that change durable state
close the store, cut the power (`MemoryDevice.crash()` keeps only flushed
writes), reopen, and assert the same state. Every store is fsck-checked (space
map, pieces, data checksums) when it closes.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from objfs.config import StoreConfig
from objfs.errors import (
    BucketAlreadyExists,
    BucketNotEmpty,
    InvalidArgument,
    KeyAlreadyExists,
    NoSpace,
    NoSuchBucket,
    NoSuchKey,
    NoSuchVersion,
    PreconditionFailed,
)
from objfs.store import PosixAttrs, Store, Versioning, open_store
from objfs.store.device import DeviceStatistics, WriteData
from objfs.store.format import format_devices
from objfs.store.fsck import check_open_store
from objfs.store.testing import MemoryDevice
from objfs.store.types import NULL_VERSION, BucketName, KiB, MiB, ObjectKey

SEGMENT = 256 * KiB
INLINE_MAX = 4096
BLOCK = 4096
BUCKET = "bkt"
START_NS = 1_700_000_000_123_456_789


def blocks(size: int) -> int:
    """Bytes of whole blocks that `size` bytes occupy on a device."""
    return -(-size // BLOCK) * BLOCK


def stored_bytes(size: int, *, inline: bool = True) -> int:
    """Device bytes one write of `size` bytes takes: nothing inline, else per segment."""
    if inline and size <= INLINE_MAX:
        return 0
    return sum(blocks(min(SEGMENT, size - start)) for start in range(0, size, SEGMENT))


def data_free_bytes(store: Store) -> int:
    """Free space as object data sees it: checkpoint bodies (which a close adds) count as
    free, so the figure compares across a reopen. Use only when no reader is open."""
    bodies = [extent for pointer in store.pointers.values() for extent in pointer.extents()]
    held = bodies + store.pending_extents()
    return store.space.free_bytes + sum(extent.length_bytes for extent in held)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sole(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-member exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class FakeClock:
    """A clock that says whatever the test sets; the store stamps mtimes from it."""

    def __init__(self) -> None:
        self.now_ns = START_NS

    def __call__(self) -> int:
        return self.now_ns


class Node:
    """Three formatted memory devices that survive closing, reopening and power cuts."""

    def __init__(self) -> None:
        # Object semantics, with whole segments: the space each put takes is easy to
        # state (erasure coding has its own tests in test_erasure.py).
        self.config = StoreConfig(
            fragment_size_bytes=SEGMENT, checkpoint_interval_ms=3_600_000, ec_policy="1+0"
        )
        self.devices = [MemoryDevice(16 * MiB, path=f"mem{i}") for i in range(3)]
        self.clock = FakeClock()

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Store]:
        """A recovered store on the current devices; fsck must be clean when it closes."""
        async with open_store(self.config, devices=self.devices, clock=self.clock) as store:
            yield store
            report = await check_open_store(store, verify_data=True)
            assert report.clean, report.render()

    def power_cut(self) -> None:
        """Replace the devices by what a power cut now leaves (flushed writes only)."""
        self.devices = [device.crash() for device in self.devices]


@pytest.fixture
async def node() -> Node:
    made = Node()
    await format_devices(made.devices, wal_size_bytes=2 * MiB)
    return made


@pytest.fixture
async def store(node: Node) -> AsyncIterator[Store]:
    """An open store with bucket BUCKET on the `node` devices (overrides conftest's)."""
    async with node.open() as opened:
        await opened.create_bucket(BUCKET)
        yield opened


def keys(
    store: Store, bucket: str = BUCKET, *, prefix: str = "", start_after: str = ""
) -> list[str]:
    page = store.list_objects(bucket, prefix=prefix, start_after=start_after, limit=10_000)
    assert not page.is_truncated
    return [info.key for info in page.objects]


async def read_all(store: Store, key: str, *, version_id: str | None = None) -> bytes:
    async with store.open_reader(BUCKET, key, version_id=version_id) as reader:
        return await reader.read(0, reader.size_bytes + 1)


# -- put and get ------------------------------------------------------------------------

SIZES = {
    "empty": 0,
    "one-byte": 1,
    "inline-max-minus-1": INLINE_MAX - 1,
    "inline-max": INLINE_MAX,
    "just-past-inline": INLINE_MAX + 1,
    "unaligned-small": 10_007,
    "one-segment-minus-1": SEGMENT - 1,
    "one-segment": SEGMENT,
    "one-segment-plus-1": SEGMENT + 1,
    "three-segments": 3 * SEGMENT,
    "one-mb": 1_000_000,
    "one-mb-unaligned": 1_000_003,
}


async def test_objects_of_every_size_read_back_before_and_after_reopen(node: Node) -> None:
    payloads = {name: os.urandom(size) for name, size in SIZES.items()}
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        for name, data in payloads.items():
            free = data_free_bytes(store)
            info = await store.put_object(BUCKET, name, data)
            assert free - data_free_bytes(store) == stored_bytes(len(data)), name
            assert info.size_bytes == len(data)
            assert info.etag == md5(data)
        for name, data in payloads.items():
            assert await store.get_object(BUCKET, name) == data, name
        infos = {name: store.head_object(BUCKET, name) for name in payloads}
        free = data_free_bytes(store)
    node.power_cut()
    async with node.open() as store:
        assert data_free_bytes(store) == free
        assert sorted(keys(store)) == sorted(payloads)
        for name, data in payloads.items():
            assert await store.get_object(BUCKET, name) == data, name
            assert store.head_object(BUCKET, name) == infos[name]


async def test_ranged_reads_return_exact_slices_across_segment_boundaries(store: Store) -> None:
    data = os.urandom(1_000_003)
    size = len(data)
    await store.put_object(BUCKET, "big", data)
    ranges = [
        (0, 10),
        (SEGMENT - 5, 10),  # straddles the first segment boundary
        (SEGMENT, SEGMENT),  # exactly the second segment
        (SEGMENT - 1, 2 * SEGMENT + 2),  # touches four segments
        (123_457, 654_321),
        (size - 3, 10),  # runs off the end: only 3 bytes
        (0, size),
        (0, size * 2),
    ]
    async with store.open_reader(BUCKET, "big") as reader:
        assert reader.size_bytes == size
        for offset, length in ranges:
            assert await reader.read(offset, length) == data[offset : offset + length], (
                offset,
                length,
            )
        assert await reader.read(size, 10) == b""
        assert await reader.read(size + 4096, 1) == b""
        assert await reader.read(100, 0) == b""
        # Backwards and repeated reads are served correctly too (the reader caches).
        assert await reader.read(SEGMENT * 3 + 7, 100) == data[SEGMENT * 3 + 7 : SEGMENT * 3 + 107]
        assert await reader.read(5, 5) == data[5:10]
    part = await store.get_object(BUCKET, "big", offset_bytes=SEGMENT - 2, size_bytes=4)
    assert part == data[SEGMENT - 2 : SEGMENT + 2]


async def test_ranged_reads_of_inline_and_empty_objects(store: Store) -> None:
    await store.put_object(BUCKET, "small", b"0123456789")
    await store.put_object(BUCKET, "empty", b"")
    async with store.open_reader(BUCKET, "small") as reader:
        assert await reader.read(3, 4) == b"3456"
        assert await reader.read(8, 100) == b"89"
        assert await reader.read(10, 1) == b""
    async with store.open_reader(BUCKET, "empty") as reader:
        assert reader.size_bytes == 0
        assert await reader.read(0, 100) == b""
    assert await store.get_object(BUCKET, "empty") == b""


async def test_overwrite_frees_the_old_objects_space(node: Node) -> None:
    first, second = os.urandom(1_000_000), os.urandom(300_001)
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        empty = data_free_bytes(store)
        await store.put_object(BUCKET, "k", first)
        assert data_free_bytes(store) == empty - stored_bytes(len(first))
        await store.put_object(BUCKET, "k", second)
        assert data_free_bytes(store) == empty - stored_bytes(len(second))
        assert await store.get_object(BUCKET, "k") == second
        await store.put_object(BUCKET, "k", b"tiny")  # inline: takes no data space
        assert data_free_bytes(store) == empty
    node.power_cut()
    async with node.open() as store:
        assert data_free_bytes(store) == empty
        assert await store.get_object(BUCKET, "k") == b"tiny"


# -- streaming writers ------------------------------------------------------------------


async def test_streaming_writer_with_many_small_writes_equals_one_put(store: Store) -> None:
    data = os.urandom(3 * SEGMENT + 12_345)
    sizes = [1, 7, 4096, 65_537, 1000, SEGMENT, 3, SEGMENT - 1]
    async with store.open_writer(BUCKET, "streamed") as writer:
        position, turn = 0, 0
        while position < len(data):
            chunk = data[position : position + sizes[turn % len(sizes)]]
            await writer.write(chunk)
            position += len(chunk)
            turn += 1
        assert writer.size_bytes == len(data)
        version = await writer.commit()
    whole = await store.put_object(BUCKET, "whole", data)
    streamed = store.head_object(BUCKET, "streamed")
    assert await store.get_object(BUCKET, "streamed") == data
    assert version.size_bytes == streamed.size_bytes == whole.size_bytes == len(data)
    assert streamed.etag == whole.etag == md5(data)


async def test_writer_left_without_commit_stores_nothing_and_frees_space(store: Store) -> None:
    await store.put_object(BUCKET, "kept", b"old bytes")
    free = store.space.free_bytes
    async with store.open_writer(BUCKET, "never") as writer:
        await writer.write(os.urandom(1_000_000))
    async with store.open_writer(BUCKET, "kept") as writer:
        await writer.write(os.urandom(700_000))
    assert store.space.free_bytes == free
    assert keys(store) == ["kept"]
    with pytest.raises(NoSuchKey):
        store.head_object(BUCKET, "never")
    assert await store.get_object(BUCKET, "kept") == b"old bytes"


async def test_segments_split_over_fragmented_space_read_back(store: Store) -> None:
    """Free space in holes of 64 KiB: streamed segments of 256 KiB are stored as
    several shorter ones, each with the checksum of its own bytes."""
    hole = 64 * KiB
    filled = 0
    with pytest.raises(NoSpace):
        while True:
            await store.put_object(BUCKET, f"fill{filled:05d}", payload_of(filled, hole))
            filled += 1
    for number in range(0, filled, 2):
        await store.delete_object(BUCKET, f"fill{number:05d}")
    written: dict[str, bytes] = {}
    with pytest.raises(NoSpace):
        while True:
            key, data = f"split{len(written)}", os.urandom(SEGMENT)
            async with store.open_writer(BUCKET, key) as writer:
                await writer.write(data)
                await writer.commit()
            written[key] = data
    split = [
        key
        for key in written
        if len(store.index.current(BucketName(BUCKET), ObjectKey(key)).pieces) > 1
    ]
    assert split  # the space really was too fragmented for whole segments
    for key, data in written.items():
        assert await read_all(store, key) == data
    for number in range(1, filled, 2):
        assert await store.get_object(BUCKET, f"fill{number:05d}") == payload_of(number, hole)


def payload_of(number: int, size: int) -> bytes:
    return number.to_bytes(4, "big") * (size // 4)


async def test_exception_inside_writer_reaches_the_caller_unwrapped(store: Store) -> None:
    with pytest.raises(ValueError, match="client went away"):
        async with store.open_writer(BUCKET, "k") as writer:
            await writer.write(os.urandom(600_000))
            raise ValueError("client went away")


async def test_writer_abandoned_by_exception_stores_nothing_and_frees_space(store: Store) -> None:
    free = store.space.free_bytes
    with pytest.raises((ValueError, BaseExceptionGroup)) as caught:
        async with store.open_writer(BUCKET, "k") as writer:
            await writer.write(os.urandom(1_000_000))
            raise ValueError("client went away")
    assert isinstance(sole(caught.value), ValueError)
    assert keys(store) == []
    with pytest.raises(NoSuchKey):
        store.head_object(BUCKET, "k")
    assert store.space.free_bytes == free


async def test_put_if_none_match_refuses_an_existing_key_with_key_already_exists(
    store: Store,
) -> None:
    await store.put_object(BUCKET, "k", b"first")
    with pytest.raises(KeyAlreadyExists):
        await store.put_object(BUCKET, "k", b"second", if_none_match=True)
    assert await store.get_object(BUCKET, "k") == b"first"
    await store.put_object(BUCKET, "new", b"fresh", if_none_match=True)
    assert await store.get_object(BUCKET, "new") == b"fresh"


async def test_refused_conditional_put_frees_the_bytes_it_stored(store: Store) -> None:
    original = os.urandom(300_000)
    await store.put_object(BUCKET, "k", original)
    free = store.space.free_bytes
    with pytest.raises((KeyAlreadyExists, BaseExceptionGroup)) as caught:
        await store.put_object(BUCKET, "k", os.urandom(1_000_000), if_none_match=True)
    assert isinstance(sole(caught.value), KeyAlreadyExists)
    assert await store.get_object(BUCKET, "k") == original
    assert store.space.free_bytes == free


async def test_put_if_match_is_checked_when_the_version_lands(store: Store) -> None:
    first = await store.put_object(BUCKET, "k", b"first")
    assert first.etag is not None
    with pytest.raises(NoSuchKey):
        await store.put_object(BUCKET, "absent", b"x", if_match=["*"])
    with pytest.raises(PreconditionFailed):
        await store.put_object(BUCKET, "k", b"x", if_match=["0" * 32])
    second = await store.put_object(BUCKET, "k", b"second", if_match=["0" * 32, first.etag])
    assert second.etag is not None
    # A streaming writer that started while `second` was current loses to a put
    # that lands before its commit, and frees what it stored.
    free = store.space.free_bytes
    with pytest.raises((PreconditionFailed, BaseExceptionGroup)) as caught:
        async with store.open_writer(BUCKET, "k", if_match=[second.etag]) as writer:
            await writer.write(os.urandom(1_000_000))
            await store.put_object(BUCKET, "k", b"third")
            await writer.commit()
    assert isinstance(sole(caught.value), PreconditionFailed)
    assert await store.get_object(BUCKET, "k") == b"third"
    assert store.space.free_bytes == free
    await store.put_object(BUCKET, "k", b"fourth", if_match=["*"])
    assert await store.get_object(BUCKET, "k") == b"fourth"


# -- head and delete --------------------------------------------------------------------


async def test_head_object_reports_size_etag_type_metadata_and_clock_mtime(node: Node) -> None:
    data = os.urandom(SEGMENT + 99)
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        node.clock.now_ns = START_NS + 42
        await store.put_object(
            BUCKET,
            "photo.jpg",
            data,
            content_type="image/jpeg",
            metadata={"zeta": "last", "alpha": "first"},
        )
        node.clock.now_ns = START_NS + 43
        info = store.head_object(BUCKET, "photo.jpg")
        assert info.bucket == BUCKET
        assert info.key == "photo.jpg"
        assert info.size_bytes == len(data)
        assert info.etag == md5(data)
        assert info.content_type == "image/jpeg"
        assert info.metadata == (("alpha", "first"), ("zeta", "last"))
        assert info.mtime_ns == START_NS + 42
        assert info.version_id == NULL_VERSION
        assert info.is_latest and not info.delete_marker
        assert info.posix is None
        plain = await store.put_object(BUCKET, "plain", b"x")
        assert plain.content_type == "application/octet-stream"
        assert plain.metadata == ()
    node.power_cut()
    async with node.open() as store:
        assert store.head_object(BUCKET, "photo.jpg") == info


async def test_delete_removes_the_object_and_frees_its_space(store: Store) -> None:
    free = store.space.free_bytes
    await store.put_object(BUCKET, "big", os.urandom(1_000_000))
    await store.put_object(BUCKET, "small", b"abc")
    result = await store.delete_object(BUCKET, "big")
    assert not result.delete_marker
    assert store.space.free_bytes == free
    assert keys(store) == ["small"]
    with pytest.raises(NoSuchKey):
        store.head_object(BUCKET, "big")
    with pytest.raises(NoSuchKey):
        await store.get_object(BUCKET, "big")


async def test_deleting_a_missing_key_is_not_an_error(store: Store) -> None:
    await store.put_object(BUCKET, "other", b"stays")
    result = await store.delete_object(BUCKET, "never-existed")
    assert result.version_id is None and not result.delete_marker
    assert keys(store) == ["other"]
    with pytest.raises(NoSuchBucket):
        await store.delete_object("no-such-bucket", "k")


# -- listing ----------------------------------------------------------------------------

LIST_KEYS = [
    "a",
    "a-b",
    "a.b",
    "a/",
    "a/b",
    "a/b/c",
    "a/c",
    "a/\u00e9",
    "a0",
    "b/x",
    "b/y/z",
    "c",
    "dir/one",
    "dir/two/four",
    "dir/two/three",
    "dir/zz",
    "\u00fc/x",
    "z",
]


def expected_listing(
    all_keys: Iterable[str], prefix: str, delimiter: str | None
) -> tuple[list[str], list[str]]:
    """The S3 listing rules, written plainly: (keys, common prefixes), each in order."""
    objects: list[str] = []
    prefixes: list[str] = []
    for key in sorted(all_keys):
        if not key.startswith(prefix):
            continue
        if delimiter:
            found = key.find(delimiter, len(prefix))
            if found >= 0:
                common = key[: found + len(delimiter)]
                if common not in prefixes:
                    prefixes.append(common)
                continue
        objects.append(key)
    return objects, prefixes


def list_every_page(
    store: Store, bucket: str, *, prefix: str, delimiter: str | None, limit: int
) -> tuple[list[str], list[str], int]:
    """Page through a listing until it is not truncated: (keys, common prefixes, pages)."""
    objects: list[str] = []
    prefixes: list[str] = []
    start_after, pages = "", 0
    while True:
        page = store.list_objects(
            bucket, prefix=prefix, delimiter=delimiter, start_after=start_after, limit=limit
        )
        pages += 1
        assert len(page.objects) + len(page.common_prefixes) <= limit
        objects += [info.key for info in page.objects]
        prefixes += page.common_prefixes
        if not page.is_truncated:
            assert page.next_start_after is None
            return objects, prefixes, pages
        assert page.next_start_after is not None
        assert page.next_start_after > start_after, "paging must move forward"
        start_after = page.next_start_after
        assert pages <= 2 * len(LIST_KEYS) + 2, "paging does not end"


async def test_paging_lists_every_key_and_common_prefix_exactly_once(store: Store) -> None:
    for key in LIST_KEYS:
        await store.put_object(BUCKET, key, key.encode())
    for prefix in ("", "a", "a/", "dir/", "dir/two/", "nothing/"):
        for delimiter in (None, "/"):
            want_objects, want_prefixes = expected_listing(LIST_KEYS, prefix, delimiter)
            entries = len(want_objects) + len(want_prefixes)
            for limit in (1, 2, 5, 1000):
                case = f"prefix={prefix!r} delimiter={delimiter!r} limit={limit}"
                objects, prefixes, pages = list_every_page(
                    store, BUCKET, prefix=prefix, delimiter=delimiter, limit=limit
                )
                assert objects == want_objects, case
                assert prefixes == want_prefixes, case
                assert pages <= max(1, math.ceil(entries / limit)) + 1, case


async def test_list_filters_by_prefix_delimiter_and_start_after(store: Store) -> None:
    for key in LIST_KEYS:
        await store.put_object(BUCKET, key, b"x")
    assert keys(store, prefix="dir/") == ["dir/one", "dir/two/four", "dir/two/three", "dir/zz"]
    assert keys(store, start_after="dir/two/four") == ["dir/two/three", "dir/zz", "z", "\u00fc/x"]
    assert keys(store, prefix="dir/", start_after="dir/two") == [
        "dir/two/four",
        "dir/two/three",
        "dir/zz",
    ]
    assert keys(store, start_after="\u00fc/x") == []
    page = store.list_objects(BUCKET, delimiter="/")
    assert [info.key for info in page.objects] == ["a", "a-b", "a.b", "a0", "c", "z"]
    assert page.common_prefixes == ("a/", "b/", "dir/", "\u00fc/")
    assert not page.is_truncated and page.next_start_after is None
    page = store.list_objects(BUCKET, prefix="a/", delimiter="/")
    assert [info.key for info in page.objects] == ["a/", "a/b", "a/c", "a/\u00e9"]
    assert page.common_prefixes == ("a/b/",)
    info = store.list_objects(BUCKET, prefix="dir/one").objects[0]
    assert info == store.head_object(BUCKET, "dir/one")


async def test_listing_never_includes_keys_of_another_bucket(store: Store) -> None:
    for bucket in ("abc", "abcd", "abd"):
        await store.create_bucket(bucket)
        for key in ("a", "abc/x", "zzz"):
            await store.put_object(bucket, f"{key}-{bucket}", bucket.encode())
    for bucket in ("abc", "abcd", "abd"):
        listed = keys(store, bucket)
        assert listed == [f"a-{bucket}", f"abc/x-{bucket}", f"zzz-{bucket}"]
        objects, prefixes, _ = list_every_page(store, bucket, prefix="", delimiter="/", limit=1)
        assert objects == [f"a-{bucket}", f"zzz-{bucket}"] and prefixes == ["abc/"]
        assert all(info.bucket == bucket for info in store.list_objects(bucket).objects)
    assert keys(store) == []
    assert keys(store, "abc", start_after="zzz-abc") == []
    with pytest.raises(NoSuchBucket):
        store.list_objects("no-such-bucket")


# -- buckets ----------------------------------------------------------------------------


async def test_bucket_lifecycle_and_its_errors(node: Node) -> None:
    async with node.open() as store:
        node.clock.now_ns = START_NS + 7
        info = await store.create_bucket("photos", owner="alice")
        assert (info.name, info.owner, info.created_ns) == ("photos", "alice", START_NS + 7)
        assert info.versioning is Versioning.DISABLED
        await store.create_bucket("logs")
        with pytest.raises(BucketAlreadyExists):
            await store.create_bucket("photos")
        assert [b.name for b in store.list_buckets()] == ["logs", "photos"]
        assert store.head_bucket("photos") == info
        await store.put_object("photos", "cat.jpg", b"meow")
        with pytest.raises(BucketNotEmpty):
            await store.delete_bucket("photos")
        with pytest.raises(NoSuchBucket):
            await store.delete_bucket("nope")
        with pytest.raises(NoSuchBucket):
            await store.put_object("nope", "k", b"x")
        with pytest.raises(NoSuchBucket):
            store.head_bucket("nope")
        await store.delete_bucket("logs")
        with pytest.raises(NoSuchBucket):
            store.head_bucket("logs")
    node.power_cut()
    async with node.open() as store:
        assert [b.name for b in store.list_buckets()] == ["photos"]
        assert store.head_bucket("photos") == info
        await store.delete_object("photos", "cat.jpg")
        await store.delete_bucket("photos")
        await store.create_bucket("logs")  # a deleted name can be used again
        assert [b.name for b in store.list_buckets()] == ["logs"]


# -- copy -------------------------------------------------------------------------------


async def test_copy_shares_segments_and_survives_deleting_the_source(node: Node) -> None:
    data = os.urandom(1_000_000)
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        await store.create_bucket("other")
        empty = data_free_bytes(store)
        await store.put_object(BUCKET, "src", data, metadata={"a": "1"}, content_type="x/y")
        stored = data_free_bytes(store)
        copied = await store.copy_object(BUCKET, "src", "other", "dst")
        renamed = await store.copy_object(
            BUCKET, "src", BUCKET, "dst2", metadata={"b": "2"}, content_type="text/plain"
        )
        assert data_free_bytes(store) == stored, "a copy stores no new bytes"
        assert copied.etag == md5(data) and copied.size_bytes == len(data)
        assert copied.metadata == (("a", "1"),) and copied.content_type == "x/y"
        assert renamed.metadata == (("b", "2"),) and renamed.content_type == "text/plain"
        await store.delete_object(BUCKET, "src")
        assert data_free_bytes(store) == stored, "the copies still hold the segments"
        assert await store.get_object("other", "dst") == data
    node.power_cut()
    async with node.open() as store:
        assert data_free_bytes(store) == stored
        assert await store.get_object("other", "dst") == data
        assert await store.get_object(BUCKET, "dst2") == data
        await store.delete_object("other", "dst")
        assert data_free_bytes(store) == stored
        await store.delete_object(BUCKET, "dst2")
        assert data_free_bytes(store) == empty


async def test_copy_of_an_inline_object_and_of_a_missing_one(store: Store) -> None:
    await store.put_object(BUCKET, "small", b"little")
    await store.copy_object(BUCKET, "small", BUCKET, "copy")
    await store.put_object(BUCKET, "small", b"changed")
    assert await store.get_object(BUCKET, "copy") == b"little"
    with pytest.raises(NoSuchKey):
        await store.copy_object(BUCKET, "missing", BUCKET, "copy2")
    assert keys(store) == ["copy", "small"]


class GatedDevice:
    """A MemoryDevice whose batched writes (the WAL's) wait while its gate is shut."""

    def __init__(self, inner: MemoryDevice) -> None:
        self.inner = inner
        self.path = inner.path
        self.size_bytes = inner.size_bytes
        self.gate: trio.Event | None = None

    async def read(self, offset_bytes: int, length_bytes: int) -> bytes:
        return await self.inner.read(offset_bytes, length_bytes)

    async def read_many(self, requests: Sequence[tuple[int, int]]) -> list[bytes]:
        return await self.inner.read_many(requests)

    async def write(self, offset_bytes: int, data: WriteData) -> None:
        await self.inner.write(offset_bytes, data)

    async def write_many(
        self, writes: Sequence[tuple[int, WriteData]], *, flush: bool = False
    ) -> None:
        if self.gate is not None:
            await self.gate.wait()
        await self.inner.write_many(writes, flush=flush)

    async def flush(self) -> None:
        await self.inner.flush()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def statistics(self) -> DeviceStatistics:
        return self.inner.statistics()


async def test_copy_racing_a_delete_of_its_source_never_frees_the_copys_bytes(
    node: Node,
) -> None:
    """A copy that read its source while the source's delete was still being committed
    either succeeds and keeps the segments allocated (they are the copy's bytes now) or
    fails with NoSuchKey and stores nothing; it never points at freed space."""
    gated = [GatedDevice(device) for device in node.devices]
    data = os.urandom(600_000)
    async with open_store(node.config, devices=gated) as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "src", data)
        free = store.space.free_bytes
        copy_refused: list[NoSuchKey] = []

        async def copy() -> None:
            try:
                await store.copy_object(BUCKET, "src", BUCKET, "dst")
            except NoSuchKey as exc:
                copy_refused.append(exc)

        gate = trio.Event()
        for device in gated:
            device.gate = gate
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.delete_object, BUCKET, "src")
            await trio.testing.wait_all_tasks_blocked()  # the delete waits in the WAL
            nursery.start_soon(copy)
            await trio.testing.wait_all_tasks_blocked()  # the copy read the source, waits too
            gate.set()
        for device in gated:
            device.gate = None
        if copy_refused:
            assert keys(store) == []
            expected_free = free + stored_bytes(len(data))
        else:
            assert keys(store) == ["dst"]
            expected_free = free
        assert store.space.free_bytes == expected_free
        # New objects must not land on the copy's blocks.
        await store.put_object(BUCKET, "filler1", os.urandom(600_000))
        await store.put_object(BUCKET, "filler2", os.urandom(600_000))
        if not copy_refused:
            assert await store.get_object(BUCKET, "dst") == data
        report = await check_open_store(store, verify_data=True)
        assert report.clean, report.render()


# -- writing in place -------------------------------------------------------------------


async def test_write_at_stores_only_the_new_bytes(node: Node) -> None:
    data = bytearray(os.urandom(1_000_000))
    patch = os.urandom(10_000)
    offset = SEGMENT - 3_000  # straddles a segment boundary
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "k", bytes(data))
        free = store.space.free_bytes
        info = await store.write_at(BUCKET, "k", offset, patch)
        data[offset : offset + len(patch)] = patch
        taken = free - store.space.free_bytes
        assert len(patch) <= taken <= blocks(len(patch)), taken
        assert info.size_bytes == len(data)
        assert info.etag is None
        assert await store.get_object(BUCKET, "k") == bytes(data)
        # Overwriting every byte drops every old segment: the old space comes back.
        fresh = os.urandom(len(data))
        free = store.space.free_bytes
        await store.write_at(BUCKET, "k", 0, fresh)
        assert store.space.free_bytes == free + taken
        assert await store.get_object(BUCKET, "k") == fresh
        await store.write_at(BUCKET, "k", 500_000, patch)
        expected = fresh[:500_000] + patch + fresh[510_000:]
        assert await store.get_object(BUCKET, "k") == expected
    node.power_cut()
    async with node.open() as store:
        assert await store.get_object(BUCKET, "k") == expected
        assert store.head_object(BUCKET, "k").etag is None


async def test_write_at_past_the_end_leaves_a_gap_of_zeros(node: Node) -> None:
    data = os.urandom(300_000)
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "k", data)
        info = await store.write_at(BUCKET, "k", 1_000_000, b"tail")
        assert info.size_bytes == 1_000_004
        expected = data + bytes(700_000) + b"tail"
        assert await store.get_object(BUCKET, "k") == expected
        await store.put_object(BUCKET, "small", b"abc")
        await store.write_at(BUCKET, "small", 1, b"X")
        await store.write_at(BUCKET, "small", 10, b"end")
        assert await store.get_object(BUCKET, "small") == b"aXc" + bytes(7) + b"end"
        await store.write_at(BUCKET, "small", 5000, b"!")  # grows past the inline size
        small = b"aXc" + bytes(7) + b"end" + bytes(5000 - 13) + b"!"
        assert await store.get_object(BUCKET, "small") == small
        unchanged = await store.write_at(BUCKET, "small", 3, b"")
        assert unchanged.size_bytes == len(small)
        with pytest.raises(NoSuchKey):
            await store.write_at(BUCKET, "missing", 0, b"x")
    node.power_cut()
    async with node.open() as store:
        assert await store.get_object(BUCKET, "k") == expected
        assert await store.get_object(BUCKET, "small") == small


async def test_truncate_shortens_and_extends_with_zeros(node: Node) -> None:
    data = os.urandom(1_000_000)
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "k", data)
        same = await store.truncate(BUCKET, "k", len(data))
        assert same.etag == md5(data), "truncating to the same size changes nothing"
        free = store.space.free_bytes
        info = await store.truncate(BUCKET, "k", 300_000)
        assert info.size_bytes == 300_000 and info.etag is None
        # Segments wholly past the cut (the 3rd and 4th) are freed.
        assert store.space.free_bytes - free == stored_bytes(len(data)) - 2 * SEGMENT
        assert await store.get_object(BUCKET, "k") == data[:300_000]
        await store.truncate(BUCKET, "k", 700_000)
        expected = data[:300_000] + bytes(400_000)
        assert await store.get_object(BUCKET, "k") == expected
        await store.put_object(BUCKET, "small", b"0123456789")
        await store.truncate(BUCKET, "small", 4)
        await store.truncate(BUCKET, "small", 6)
        assert await store.get_object(BUCKET, "small") == b"0123\0\0"
        await store.put_object(BUCKET, "zero", b"abc")
        await store.truncate(BUCKET, "zero", 0)
        assert await store.get_object(BUCKET, "zero") == b""
    node.power_cut()
    async with node.open() as store:
        assert await store.get_object(BUCKET, "k") == expected
        assert await store.get_object(BUCKET, "small") == b"0123\0\0"
        assert store.head_object(BUCKET, "zero").size_bytes == 0


async def test_set_attributes_changes_only_what_is_given(node: Node) -> None:
    posix = PosixAttrs(mode=0o100640, uid=1000, gid=100, atime_ns=5, ctime_ns=6)
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "k", b"data", content_type="text/plain", metadata={"a": "1"})
        info = await store.set_attributes(BUCKET, "k", posix=posix)
        assert info.posix == posix
        assert info.metadata == (("a", "1"),) and info.content_type == "text/plain"
        assert info.etag == md5(b"data")
        await store.write_at(BUCKET, "k", 0, b"D")
        assert store.head_object(BUCKET, "k").etag is None
        info = await store.set_attributes(
            BUCKET, "k", metadata={"b": "2", "a": "3"}, etag=md5(b"Data"), mtime_ns=123
        )
        assert info.metadata == (("a", "3"), ("b", "2"))
        assert info.etag == md5(b"Data")
        assert info.mtime_ns == 123
        assert info.posix == posix and info.content_type == "text/plain"
        info = await store.set_attributes(BUCKET, "k", content_type="application/json")
        assert info.content_type == "application/json"
        assert await store.get_object(BUCKET, "k") == b"Data"
        with pytest.raises(NoSuchKey):
            await store.set_attributes(BUCKET, "missing", etag="x")
    node.power_cut()
    async with node.open() as store:
        assert store.head_object(BUCKET, "k") == info


# -- renames ----------------------------------------------------------------------------


async def test_rename_object_moves_and_replaces_the_target(node: Node) -> None:
    data, old_target = os.urandom(700_000), os.urandom(400_000)
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        empty = data_free_bytes(store)
        await store.put_object(BUCKET, "src", data, metadata={"m": "v"})
        await store.put_object(BUCKET, "dst", old_target)
        info = await store.rename_object(BUCKET, "src", "dst")
        assert info.key == "dst" and info.metadata == (("m", "v"),)
        assert data_free_bytes(store) == empty - stored_bytes(len(data)), "old target freed"
        assert keys(store) == ["dst"]
        with pytest.raises(NoSuchKey):
            store.head_object(BUCKET, "src")
        assert await store.get_object(BUCKET, "dst") == data
        with pytest.raises(NoSuchKey):
            await store.rename_object(BUCKET, "src", "elsewhere")
    node.power_cut()
    async with node.open() as store:
        assert keys(store) == ["dst"]
        assert await store.get_object(BUCKET, "dst") == data
        assert data_free_bytes(store) == empty - stored_bytes(len(data))


async def test_rename_object_no_replace_refuses_an_existing_target(store: Store) -> None:
    await store.put_object(BUCKET, "src", b"source")
    await store.put_object(BUCKET, "dst", b"target")
    with pytest.raises(KeyAlreadyExists):
        await store.rename_object(BUCKET, "src", "dst", no_replace=True)
    assert await store.get_object(BUCKET, "src") == b"source"
    assert await store.get_object(BUCKET, "dst") == b"target"
    await store.rename_object(BUCKET, "src", "fresh", no_replace=True)
    assert keys(store) == ["dst", "fresh"]


TREE = {
    "dir/": b"marker",
    "dir/a": b"a" * 5000,
    "dir/b/c": b"c",
    "dir/b/d/e": b"e" * 300_000,
}
BYSTANDERS = {"dir": b"file named dir", "dirx/y": b"y", "dir2/z": b"z", "e": b"e"}


async def test_rename_prefix_moves_a_whole_tree_in_one_call(node: Node) -> None:
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        for key, data in {**TREE, **BYSTANDERS}.items():
            await store.put_object(BUCKET, key, data)
        free = store.space.free_bytes
        lsn = store.wal.applied_lsn
        await store.rename_prefix(BUCKET, "dir/", "new/")
        assert store.wal.applied_lsn == lsn + 1, "one record moves the whole tree"
        moved = {"new/" + key[len("dir/") :]: data for key, data in TREE.items()}
        assert sorted(keys(store)) == sorted([*moved, *BYSTANDERS])
        assert store.space.free_bytes == free
        for key, data in {**moved, **BYSTANDERS}.items():
            assert await store.get_object(BUCKET, key) == data, key
        with pytest.raises(NoSuchKey):
            await store.rename_prefix(BUCKET, "dir/", "other/")
    node.power_cut()
    async with node.open() as store:
        assert sorted(keys(store)) == sorted([*moved, *BYSTANDERS])
        for key, data in moved.items():
            assert await store.get_object(BUCKET, key) == data, key


async def test_rename_prefix_refuses_a_non_empty_target(store: Store) -> None:
    for key, data in TREE.items():
        await store.put_object(BUCKET, key, data)
    await store.put_object(BUCKET, "dst/", b"")
    await store.put_object(BUCKET, "dst/occupied", b"here")
    with pytest.raises(BucketNotEmpty):
        await store.rename_prefix(BUCKET, "dir/", "dst/")
    assert sorted(keys(store)) == sorted([*TREE, "dst/", "dst/occupied"])


async def test_rename_prefix_refuses_moving_a_directory_into_itself(store: Store) -> None:
    for key, data in TREE.items():
        await store.put_object(BUCKET, key, data)
    with pytest.raises(InvalidArgument):
        await store.rename_prefix(BUCKET, "dir/", "dir/b/inside/")
    with pytest.raises(InvalidArgument):
        await store.rename_prefix(BUCKET, "dir/b/", "dir/")
    with pytest.raises(InvalidArgument):
        await store.rename_prefix(BUCKET, "dir/", "dir/")
    assert sorted(keys(store)) == sorted(TREE)


async def test_rename_prefix_replaces_an_empty_target_marker(store: Store) -> None:
    for key, data in TREE.items():
        await store.put_object(BUCKET, key, data)
    await store.put_object(BUCKET, "dst/", b"empty dir marker")
    await store.rename_prefix(BUCKET, "dir/", "dst/")
    assert await store.get_object(BUCKET, "dst/") == b"marker"
    assert sorted(keys(store)) == sorted("dst/" + key[len("dir/") :] for key in TREE)
    # Without a marker of its own, the source replaces the target marker with nothing.
    await store.put_object(BUCKET, "x/", b"x marker")
    await store.rename_prefix(BUCKET, "dst/b/", "x/")
    assert keys(store, prefix="x/") == ["x/c", "x/d/e"]


# -- readers pin what they read ---------------------------------------------------------


async def test_reader_keeps_reading_old_bytes_after_overwrite_and_delete(store: Store) -> None:
    old, new = os.urandom(1_000_000), os.urandom(500_000)
    empty = store.space.free_bytes
    await store.put_object(BUCKET, "k", old)
    async with store.open_reader(BUCKET, "k") as reader:
        assert await reader.read(0, 10) == old[:10]
        await store.put_object(BUCKET, "k", new)
        assert await store.get_object(BUCKET, "k") == new
        # The old segments stay allocated while the reader is open.
        assert store.space.free_bytes == empty - stored_bytes(len(old)) - stored_bytes(len(new))
        assert await reader.read(0, len(old)) == old
        report = await check_open_store(store)
        assert report.clean, report.render()
    assert store.space.free_bytes == empty - stored_bytes(len(new))
    async with store.open_reader(BUCKET, "k") as reader:
        await store.delete_object(BUCKET, "k")
        with pytest.raises(NoSuchKey):
            store.head_object(BUCKET, "k")
        assert store.space.free_bytes == empty - stored_bytes(len(new))
        assert await reader.read(SEGMENT - 10, 20) == new[SEGMENT - 10 : SEGMENT + 10]
        assert await reader.read(0, len(new)) == new
    assert store.space.free_bytes == empty
    with pytest.raises(NoSuchKey):
        async with store.open_reader(BUCKET, "k"):
            pass


async def test_two_readers_pin_until_the_last_one_closes(store: Store) -> None:
    data = os.urandom(600_000)
    empty = store.space.free_bytes
    await store.put_object(BUCKET, "k", data)
    async with store.open_reader(BUCKET, "k") as first:
        async with store.open_reader(BUCKET, "k") as second:
            await store.delete_object(BUCKET, "k")
            assert await second.read(0, len(data)) == data
        assert store.space.free_bytes == empty - stored_bytes(len(data))
        assert await first.read(0, len(data)) == data
    assert store.space.free_bytes == empty


# -- versioning -------------------------------------------------------------------------


async def test_versioned_bucket_keeps_every_version_and_delete_adds_a_marker(node: Node) -> None:
    first, second = os.urandom(300_000), os.urandom(200_000)
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        info = await store.set_bucket_versioning(BUCKET, Versioning.ENABLED)
        assert info.versioning is Versioning.ENABLED
        empty = data_free_bytes(store)
        v1 = (await store.put_object(BUCKET, "k", first)).version_id
        v2 = (await store.put_object(BUCKET, "k", second)).version_id
        assert len({v1, v2, NULL_VERSION}) == 3
        assert data_free_bytes(store) == empty - stored_bytes(len(first)) - stored_bytes(
            len(second)
        )
        assert store.head_object(BUCKET, "k").version_id == v2
        assert store.head_object(BUCKET, "k", version_id=v1).size_bytes == len(first)
        assert not store.head_object(BUCKET, "k", version_id=v1).is_latest
        assert store.head_object(BUCKET, "k", version_id=v2).is_latest
        assert await read_all(store, "k", version_id=v1) == first
        assert await read_all(store, "k", version_id=v2) == second
        deleted = await store.delete_object(BUCKET, "k")
        assert deleted.delete_marker and deleted.version_id not in (None, v1, v2)
        with pytest.raises(NoSuchKey):
            store.head_object(BUCKET, "k")
        with pytest.raises(NoSuchKey):
            await store.get_object(BUCKET, "k")
        assert keys(store) == []
        assert await read_all(store, "k", version_id=v1) == first
        assert data_free_bytes(store) == empty - stored_bytes(len(first)) - stored_bytes(
            len(second)
        )
        with pytest.raises(NoSuchVersion):
            store.head_object(BUCKET, "k", version_id="no-such-version")
        with pytest.raises(BucketNotEmpty):
            await store.delete_bucket(BUCKET)
    node.power_cut()
    async with node.open() as store:
        assert store.head_bucket(BUCKET).versioning is Versioning.ENABLED
        with pytest.raises(NoSuchKey):
            store.head_object(BUCKET, "k")
        assert await read_all(store, "k", version_id=v1) == first
        assert await read_all(store, "k", version_id=v2) == second
        # Deleting one version by id removes it for good and frees its bytes.
        removed = await store.delete_object(BUCKET, "k", version_id=v1)
        assert removed.version_id == v1 and not removed.delete_marker
        with pytest.raises(NoSuchVersion):
            store.head_object(BUCKET, "k", version_id=v1)
        assert data_free_bytes(store) == empty - stored_bytes(len(second))
        # Removing the marker makes the older version current again.
        assert deleted.version_id is not None
        await store.delete_object(BUCKET, "k", version_id=deleted.version_id)
        assert await store.get_object(BUCKET, "k") == second
        assert keys(store) == ["k"]


async def test_deleting_a_key_that_never_existed_in_a_versioned_bucket_adds_a_marker(
    node: Node,
) -> None:
    # S3 does this (DeleteObjects of names that are not there, say); the record
    # once crashed its apply, and then every replay of it: the node never opened.
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        await store.set_bucket_versioning(BUCKET, Versioning.ENABLED)
        deleted = await store.delete_object(BUCKET, "never-was")
        assert deleted.delete_marker and deleted.version_id is not None
        await store.put_object(BUCKET, "k", b"data")
        with pytest.raises(NoSuchKey):
            store.head_object(BUCKET, "never-was")
        assert keys(store) == ["k"]
    node.power_cut()
    async with node.open() as store:
        markers = [v for v in store.list_object_versions(BUCKET).entries if v.delete_marker]
        assert [(v.key, v.version_id) for v in markers] == [("never-was", deleted.version_id)]
        await store.delete_object(BUCKET, "never-was", version_id=deleted.version_id)
        assert [v.key for v in store.list_object_versions(BUCKET).entries] == ["k"]
        assert await store.get_object(BUCKET, "k") == b"data"


async def test_copy_of_an_older_version_reads_that_versions_bytes(store: Store) -> None:
    await store.set_bucket_versioning(BUCKET, Versioning.ENABLED)
    old = os.urandom(300_000)
    v1 = (await store.put_object(BUCKET, "k", old)).version_id
    await store.put_object(BUCKET, "k", b"newer")
    free = store.space.free_bytes
    copied = await store.copy_object(BUCKET, "k", BUCKET, "restored", version_id=v1)
    assert copied.etag == md5(old)
    assert await store.get_object(BUCKET, "restored") == old
    assert store.space.free_bytes == free


async def test_directory_whose_keys_all_have_delete_markers_is_not_a_common_prefix(
    store: Store,
) -> None:
    await store.set_bucket_versioning(BUCKET, Versioning.ENABLED)
    for key in ("gone/x", "gone/y/z", "kept/x", "top"):
        await store.put_object(BUCKET, key, b"x")
    await store.delete_object(BUCKET, "gone/x")
    await store.delete_object(BUCKET, "gone/y/z")
    assert keys(store) == ["kept/x", "top"]
    page = store.list_objects(BUCKET, delimiter="/")
    assert [info.key for info in page.objects] == ["top"]
    assert page.common_prefixes == ("kept/",), "no current key lies under gone/"
    objects, prefixes, _ = list_every_page(store, BUCKET, prefix="", delimiter="/", limit=1)
    assert (objects, prefixes) == (["top"], ["kept/"])


async def test_suspended_versioning_replaces_only_the_null_version(node: Node) -> None:
    unversioned, enabled = os.urandom(100_000), os.urandom(200_000)
    suspended1, suspended2 = os.urandom(300_000), os.urandom(50_000)
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        empty = data_free_bytes(store)
        assert (await store.put_object(BUCKET, "k", unversioned)).version_id == NULL_VERSION
        await store.set_bucket_versioning(BUCKET, Versioning.ENABLED)
        v1 = (await store.put_object(BUCKET, "k", enabled)).version_id
        assert v1 != NULL_VERSION
        await store.set_bucket_versioning(BUCKET, Versioning.SUSPENDED)
        assert (await store.put_object(BUCKET, "k", suspended1)).version_id == NULL_VERSION
        # The first null version (written before versioning) was replaced and freed.
        assert data_free_bytes(store) == empty - stored_bytes(len(enabled)) - stored_bytes(
            len(suspended1)
        )
        await store.put_object(BUCKET, "k", suspended2)
        assert data_free_bytes(store) == empty - stored_bytes(len(enabled)) - stored_bytes(
            len(suspended2)
        )
        assert await read_all(store, "k", version_id=NULL_VERSION) == suspended2
        assert await read_all(store, "k", version_id=v1) == enabled
        assert await store.get_object(BUCKET, "k") == suspended2
    node.power_cut()
    async with node.open() as store:
        assert store.head_bucket(BUCKET).versioning is Versioning.SUSPENDED
        assert await store.get_object(BUCKET, "k") == suspended2
        assert await read_all(store, "k", version_id=v1) == enabled
        # A delete while suspended puts a null marker in place of the null version.
        marker = await store.delete_object(BUCKET, "k")
        assert marker.delete_marker and marker.version_id == NULL_VERSION
        with pytest.raises(NoSuchKey):
            store.head_object(BUCKET, "k")
        assert await read_all(store, "k", version_id=v1) == enabled
        assert data_free_bytes(store) == empty - stored_bytes(len(enabled))


# -- durability without a clean close ---------------------------------------------------


async def test_every_committed_change_survives_a_power_cut_without_close(node: Node) -> None:
    big, patch = os.urandom(900_000), os.urandom(5_000)
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "big", big)
        await store.put_object(BUCKET, "gone", b"deleted soon")
        await store.copy_object(BUCKET, "big", BUCKET, "copy")
        await store.write_at(BUCKET, "copy", 1000, patch)
        await store.rename_object(BUCKET, "copy", "dir/renamed")
        await store.rename_prefix(BUCKET, "dir/", "moved/")
        await store.truncate(BUCKET, "big", 400_000)
        await store.delete_object(BUCKET, "gone")
        free = data_free_bytes(store)
        node.power_cut()  # while open: no final checkpoint, the WAL must replay it all
    async with node.open() as store:
        assert store.replayed_records > 0
        assert keys(store) == ["big", "moved/renamed"]
        assert await store.get_object(BUCKET, "big") == big[:400_000]
        patched = big[:1000] + patch + big[6000:]
        assert await store.get_object(BUCKET, "moved/renamed") == patched
        assert data_free_bytes(store) == free


async def test_a_flush_before_a_commit_waits_for_one_already_under_way(store: Store) -> None:
    # In a cluster every record proposed flushes the data devices first, several
    # at once. The first took the devices out of the to-flush set and flushed
    # them; a second writer whose fragment was on one of them found the set empty
    # and committed before that flush had finished (lost on a power cut).
    datapath = store.datapath
    device_index = next(iter(datapath.devices))
    device = datapath.devices[device_index]
    released = trio.Event()
    real_flush = device.flush

    async def slow_flush() -> None:
        await released.wait()
        await real_flush()

    device.flush = slow_flush  # type: ignore[method-assign]
    datapath._dirty.add(device_index)  # as a fragment write leaves it
    second_done = trio.Event()

    async def second() -> None:
        await datapath.flush_dirty()
        second_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(datapath.flush_dirty)
        await trio.sleep(0.05)
        nursery.start_soon(second)
        await trio.sleep(0.2)
        assert not second_done.is_set(), "the second flush returned before the first's was done"
        released.set()
    assert second_done.is_set()
