"""Hard links in the core: several keys that are one file (store/links.py).

Goal: `Store.link_object` makes one more name of an object, and from then on the
names are one file: a write, truncate or attribute change through any name is
seen through every name, byte for byte; a delete, an overwrite (S3 PUT or copy)
or a rename of one name takes it out of (or renames it in) the group and leaves
the others whole; a copy of a member is an ordinary, unlinked object. Stored
segments are shared by the group and freed only when the last name lets go, and
the groups come back the same after a WAL replay and after a checkpoint.

Method: drive the Store API on three small in-memory devices with one data
fragment per segment (ec 1+0, 256 KiB segments, objects up to 4096 bytes inline),
as test_objects.py does, with a settable clock. After each step, assert the bytes
and heads of every name, and check the groups from the index itself
(link_checks.check_groups: every member names the same sorted group and is the
same version but for its id; no older version or delete marker is linked) and
the segment reference counts (link_checks.check_references). Durable state is
checked again after a power cut (`MemoryDevice.crash()` keeps flushed writes)
and a reopen; every store is fsck-checked with data verification when it closes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
from link_checks import check_groups, check_references, index_state, links_entry

from objfs.config import StoreConfig
from objfs.errors import (
    InvalidKey,
    KeyAlreadyExists,
    NoSuchBucket,
    NoSuchKey,
    PreconditionFailed,
)
from objfs.store import ObjectInfo, PosixAttrs, Store, Versioning, open_store
from objfs.store.format import create_data_dir, format_devices
from objfs.store.fsck import check_open_store, run_fsck
from objfs.store.testing import MemoryDevice
from objfs.store.types import KiB, MiB

SEGMENT = 256 * KiB
BLOCK = 4096
BUCKET = "bkt"
VERSIONED = "ver"
START_NS = 1_700_000_000_123_456_789
BIG = 3 * SEGMENT + 1234  # four segments, the last one partial
POSIX = PosixAttrs(mode=0o100644, uid=1000, gid=100, atime_ns=11, ctime_ns=12)


def but_ctime(posix: PosixAttrs | None) -> PosixAttrs | None:
    """POSIX attributes but the ctime, which a link, unlink or rename moves."""
    return None if posix is None else replace(posix, ctime_ns=0)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def blocks(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def user_metadata(info: ObjectInfo) -> tuple[tuple[str, str], ...]:
    """Metadata without the group's own entry."""
    return tuple((name, value) for name, value in info.metadata if name != "l:links")


class FakeClock:
    def __init__(self) -> None:
        self.now_ns = START_NS

    def __call__(self) -> int:
        return self.now_ns


class Node:
    """Three formatted memory devices that survive closing, reopening and power cuts."""

    def __init__(self) -> None:
        self.config = StoreConfig(
            fragment_size_bytes=SEGMENT, checkpoint_interval_ms=3_600_000, ec_policy="1+0"
        )
        self.devices = [MemoryDevice(16 * MiB, path=f"mem{i}") for i in range(3)]
        self.clock = FakeClock()

    @asynccontextmanager
    async def open(self, *, check_links: bool = True) -> AsyncIterator[Store]:
        """A recovered store on the current devices; fsck and (unless told not to) the
        link checks must be clean when it closes."""
        async with open_store(self.config, devices=self.devices, clock=self.clock) as store:
            yield store
            if check_links:
                for bucket in store.list_buckets():
                    check_groups(store, bucket.name)
                check_references(store)
            report = await check_open_store(store, verify_data=True)
            assert report.clean, report.render()

    def power_cut(self) -> None:
        self.devices = [device.crash() for device in self.devices]


@pytest.fixture
async def node() -> Node:
    made = Node()
    await format_devices(made.devices, wal_size_bytes=2 * MiB)
    return made


@pytest.fixture
async def store(node: Node) -> AsyncIterator[Store]:
    """An open store with bucket BUCKET (overrides conftest's)."""
    async with node.open() as opened:
        await opened.create_bucket(BUCKET)
        yield opened


def data_free_bytes(store: Store) -> int:
    """Free space as object data sees it (checkpoint bodies and pinned extents count
    as free), comparable across a reopen."""
    bodies = [extent for pointer in store.pointers.values() for extent in pointer.extents()]
    held = bodies + store.pending_extents()
    return store.space.free_bytes + sum(extent.length_bytes for extent in held)


def links(store: Store, key: str, bucket: str = BUCKET) -> tuple[str, ...]:
    return store.head_object(bucket, key).links


def keys(store: Store, bucket: str = BUCKET) -> list[str]:
    page = store.list_objects(bucket, limit=10_000)
    assert not page.is_truncated
    return [info.key for info in page.objects]


async def assert_file(
    store: Store, names: list[str], data: bytes, *, bucket: str = BUCKET
) -> list[ObjectInfo]:
    """Each name reads `data` and heads the same file, and the group is `names`
    (or no group, for one name); returns the heads."""
    group = tuple(sorted(names)) if len(names) > 1 else ()
    heads = [store.head_object(bucket, name) for name in names]
    for name, info in zip(names, heads, strict=True):
        assert await store.get_object(bucket, name) == data, name
        assert info.size_bytes == len(data), name
        assert info.links == group, name
        assert len(links_entry(info.metadata)) == (1 if group else 0), name
        first = heads[0]
        assert (info.etag, info.mtime_ns, info.posix) == (first.etag, first.mtime_ns, first.posix)
        assert (info.metadata, info.content_type, info.checksums) == (
            first.metadata,
            first.content_type,
            first.checksums,
        )
    check_groups(store, bucket)
    check_references(store)
    return heads


# -- making links -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 100, 4096, 4097, BIG], ids=lambda size: f"{size}B")
async def test_link_makes_another_name_of_the_same_bytes(node: Node, size: int) -> None:
    data = os.urandom(size)
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        put = await store.put_object(
            BUCKET, "a", data, metadata={"m": "1"}, content_type="x/y", posix=POSIX
        )
        free = data_free_bytes(store)
        info = await store.link_object(BUCKET, "a", "b")
        assert data_free_bytes(store) == free, "a link stores no bytes"
        assert info.key == "b" and info.links == ("a", "b")
        assert info.etag == md5(data) == put.etag
        assert (info.size_bytes, info.mtime_ns) == (size, START_NS)
        assert but_ctime(info.posix) == but_ctime(POSIX)
        assert info.posix is not None and info.posix.ctime_ns == START_NS  # the link's time
        assert info.content_type == "x/y" and user_metadata(info) == (("m", "1"),)
        await assert_file(store, ["a", "b"], data)
        third = await store.link_object(BUCKET, "b", "c")  # from a name that is a link
        assert third.links == ("a", "b", "c")
        await assert_file(store, ["a", "b", "c"], data)
        listed = store.list_objects(BUCKET).objects
        assert [(o.key, o.links) for o in listed] == [(k, ("a", "b", "c")) for k in "abc"]
        assert data_free_bytes(store) == free
        heads = [store.head_object(BUCKET, k) for k in "abc"]
    node.power_cut()
    async with node.open() as store:
        assert [store.head_object(BUCKET, k) for k in "abc"] == heads
        await assert_file(store, ["a", "b", "c"], data)
        assert data_free_bytes(store) == free


async def test_link_refuses_an_existing_target_and_a_missing_source(node: Node) -> None:
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "a", b"first")
        await store.put_object(BUCKET, "b", b"second")
        await store.put_object(BUCKET, "gone", b"soon")
        await store.delete_object(BUCKET, "gone")
        await store.link_object(BUCKET, "a", "l")
        before = index_state(store)
        with pytest.raises(KeyAlreadyExists):
            await store.link_object(BUCKET, "a", "b")  # an unlinked target
        with pytest.raises(KeyAlreadyExists):
            await store.link_object(BUCKET, "b", "l")  # a target that is a link itself
        with pytest.raises(KeyAlreadyExists):
            await store.link_object(BUCKET, "a", "a")
        with pytest.raises(KeyAlreadyExists):
            await store.link_object(BUCKET, "l", "a")  # two names of one file already
        with pytest.raises(NoSuchKey):
            await store.link_object(BUCKET, "missing", "x")
        with pytest.raises(NoSuchKey):
            await store.link_object(BUCKET, "gone", "x")
        with pytest.raises(NoSuchBucket):
            await store.link_object("nobucket", "a", "x")
        with pytest.raises(InvalidKey):
            await store.link_object(BUCKET, "a", "")
        assert index_state(store) == before, "a refused link changed the index"
        assert keys(store) == ["a", "b", "l"]
        await assert_file(store, ["a", "l"], b"first")
        await assert_file(store, ["b"], b"second")
        with pytest.raises(NoSuchKey):
            store.head_object(BUCKET, "x")
        node.power_cut()  # the refused records are in the WAL: replay refuses them again
    async with node.open() as store:
        assert store.replayed_records > 0
        assert index_state(store) == before
        await assert_file(store, ["a", "l"], b"first")


async def test_any_key_can_be_a_link_name(node: Node) -> None:
    names = sorted(
        [
            "plain",
            'quote"d',
            "back\\slash",
            "comma, and ] bracket",
            "ünïcödé/日本語",
            "emoji 😀",
            "l:links",
            "k" * 1024,  # the longest key
        ]
    )
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, names[0], b"one file")
        for name in names[1:]:
            await store.link_object(BUCKET, names[0], name)
        await assert_file(store, names, b"one file")
        assert store.head_object(BUCKET, "emoji 😀").links == tuple(names)
    node.power_cut()
    async with node.open() as store:
        await assert_file(store, names, b"one file")
        await store.delete_object(BUCKET, 'quote"d')
        await assert_file(store, [n for n in names if n != 'quote"d'], b"one file")


# -- one file through every name ------------------------------------------------------------


async def test_writes_truncates_and_attributes_through_one_name_show_through_all(
    node: Node,
) -> None:
    data = bytearray(os.urandom(BIG))
    names = ["a", "b", "c"]
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "a", bytes(data), metadata={"m": "1"}, posix=POSIX)
        await store.link_object(BUCKET, "a", "b")
        await store.link_object(BUCKET, "a", "c")

        node.clock.now_ns = START_NS + 1
        patch = os.urandom(5000)
        info = await store.write_at(BUCKET, "b", SEGMENT - 10, patch)  # across a boundary
        data[SEGMENT - 10 : SEGMENT - 10 + len(patch)] = patch
        assert info.etag is None and info.mtime_ns == START_NS + 1
        heads = await assert_file(store, names, bytes(data))
        assert all(h.etag is None and h.mtime_ns == START_NS + 1 for h in heads)
        assert all(but_ctime(h.posix) == but_ctime(POSIX) for h in heads)
        assert all(user_metadata(h) == (("m", "1"),) for h in heads)

        node.clock.now_ns = START_NS + 2
        await store.write_at(BUCKET, "c", len(data) + 100, b"tail")  # grows, gap of zeros
        data += bytes(100) + b"tail"
        heads = await assert_file(store, names, bytes(data))
        assert all(h.mtime_ns == START_NS + 2 for h in heads)

        node.clock.now_ns = START_NS + 3
        await store.truncate(BUCKET, "a", 300_000)
        del data[300_000:]
        heads = await assert_file(store, names, bytes(data))
        assert all(h.size_bytes == 300_000 and h.mtime_ns == START_NS + 3 for h in heads)
        await store.truncate(BUCKET, "b", 400_000)  # extends with zeros
        data += bytes(100_000)
        await assert_file(store, names, bytes(data))

        posix = PosixAttrs(mode=0o100600, uid=7, gid=8, atime_ns=21, ctime_ns=22)
        await store.set_attributes(
            BUCKET,
            "c",
            posix=posix,
            metadata={"u": "v", "w": "x"},  # no l:links entry: the group stays
            mtime_ns=123,
            etag=md5(bytes(data)),
            content_type="text/plain",
        )
        heads = await assert_file(store, names, bytes(data))
        for head in heads:
            assert head.posix == posix and head.mtime_ns == 123
            assert head.etag == md5(bytes(data)) and head.content_type == "text/plain"
            assert user_metadata(head) == (("u", "v"), ("w", "x"))
        await store.truncate(BUCKET, "a", len(data))  # the same size keeps the ETag
        heads = await assert_file(store, names, bytes(data))
        assert all(h.etag == md5(bytes(data)) for h in heads)

        # A face cannot set the group through metadata: a forged entry is dropped.
        await store.set_attributes(BUCKET, "a", metadata={"l:links": '["a"]', "k": "1"})
        heads = await assert_file(store, names, bytes(data))
        assert all(user_metadata(h) == (("k", "1"),) for h in heads)

        # A conditional change that fails changes no name.
        before = index_state(store)
        with pytest.raises(PreconditionFailed):
            await store.set_attributes(BUCKET, "b", mtime_ns=5, if_mtime_ns=999)
        assert index_state(store) == before
        mtime = store.head_object(BUCKET, "c").mtime_ns  # the truncate stamped it
        await store.set_attributes(BUCKET, "b", mtime_ns=5, if_mtime_ns=mtime)
        heads = await assert_file(store, names, bytes(data))
        assert all(h.mtime_ns == 5 for h in heads)
    node.power_cut()
    async with node.open() as store:
        assert [store.head_object(BUCKET, k) for k in names] == heads
        await assert_file(store, names, bytes(data))


async def test_small_files_written_through_a_link_grow_past_the_inline_size(store: Store) -> None:
    await store.put_object(BUCKET, "a", b"tiny")
    await store.link_object(BUCKET, "a", "b")
    await store.write_at(BUCKET, "b", 2, b"XY")
    await assert_file(store, ["a", "b"], b"tiXY")
    await store.write_at(BUCKET, "a", 6000, b"!")  # stored as a segment now
    expected = b"tiXY" + bytes(6000 - 4) + b"!"
    await assert_file(store, ["a", "b"], expected)
    await store.truncate(BUCKET, "b", 0)
    await assert_file(store, ["a", "b"], b"")


async def test_a_write_through_any_name_drops_the_checksums_of_the_old_bytes(
    store: Store,
) -> None:
    await store.put_object(BUCKET, "a", b"hello", checksums={"crc32": "NhCmhg=="})
    await store.link_object(BUCKET, "a", "b")
    await store.write_at(BUCKET, "b", 0, b"J")
    assert [store.head_object(BUCKET, k).checksums for k in "ab"] == [(), ()]
    await store.set_attributes(BUCKET, "a", etag=md5(b"Jello"))
    await store.put_object(BUCKET, "c", b"hello", checksums={"crc32": "NhCmhg=="})
    await store.truncate(BUCKET, "c", 2)
    assert store.head_object(BUCKET, "c").checksums == ()


# -- taking names out ---------------------------------------------------------------------


async def test_deleting_one_name_leaves_the_others_with_a_smaller_group(node: Node) -> None:
    data = os.urandom(BIG)
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "a", data, metadata={"m": "1"})
        for name in "bcd":
            await store.link_object(BUCKET, "a", name)
        await store.delete_object(BUCKET, "b")
        with pytest.raises(NoSuchKey):
            store.head_object(BUCKET, "b")
        await assert_file(store, ["a", "c", "d"], data)
        await store.delete_object(BUCKET, "a")  # the name the file was made under
        await assert_file(store, ["c", "d"], data)
        await store.delete_object(BUCKET, "d")
        (head,) = await assert_file(store, ["c"], data)
        assert head.links == () and head.metadata == (("m", "1"),), "a group of one is none"
        await store.delete_object(BUCKET, "d")  # deleting a missing name again is no error
        assert keys(store) == ["c"]
        await store.link_object(BUCKET, "c", "e")  # the last name can be linked again
        await assert_file(store, ["c", "e"], data)
    node.power_cut()
    async with node.open() as store:
        assert keys(store) == ["c", "e"]
        await assert_file(store, ["c", "e"], data)


async def test_put_over_one_name_takes_it_out_of_its_group(node: Node) -> None:
    old, new, streamed = os.urandom(BIG), os.urandom(10_000), os.urandom(SEGMENT + 7)
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "a", old)
        for name in "bcd":
            await store.link_object(BUCKET, "a", name)
        info = await store.put_object(BUCKET, "b", new, metadata={"n": "2"})
        assert info.links == ()
        (head,) = await assert_file(store, ["b"], new)
        assert head.etag == md5(new) and head.metadata == (("n", "2"),)
        await assert_file(store, ["a", "c", "d"], old)
        await store.write_at(BUCKET, "a", 0, b"patched")  # no longer reaches "b"
        old = b"patched" + old[7:]
        await assert_file(store, ["a", "c", "d"], old)
        await assert_file(store, ["b"], new)

        with pytest.raises(KeyAlreadyExists):  # a conditional put over a member fails whole
            await store.put_object(BUCKET, "c", b"x", if_none_match=True)
        await assert_file(store, ["a", "c", "d"], old)

        async with store.open_writer(BUCKET, "c") as writer:  # a streamed S3 PUT
            await writer.write(streamed)
            await writer.commit()
        await assert_file(store, ["c"], streamed)
        await assert_file(store, ["a", "d"], old)
        await store.copy_object(BUCKET, "b", BUCKET, "d")  # an S3 copy onto a member
        await assert_file(store, ["d"], new)
        await assert_file(store, ["a"], old)
    node.power_cut()
    async with node.open() as store:
        await assert_file(store, ["a"], old)
        await assert_file(store, ["b"], new)
        await assert_file(store, ["c"], streamed)
        await assert_file(store, ["d"], new)


async def test_copy_of_a_member_is_an_unlinked_object(node: Node) -> None:
    data = os.urandom(BIG)
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        await store.create_bucket("other")
        empty = data_free_bytes(store)
        await store.put_object(BUCKET, "a", data, metadata={"m": "1"}, content_type="x/y")
        await store.link_object(BUCKET, "a", "b")
        stored = data_free_bytes(store)
        copied = await store.copy_object(BUCKET, "b", BUCKET, "c")
        assert copied.links == () and copied.metadata == (("m", "1"),)
        assert copied.content_type == "x/y" and copied.etag == md5(data)
        replaced = await store.copy_object(BUCKET, "a", BUCKET, "d", metadata={"n": "2"})
        assert replaced.links == () and replaced.metadata == (("n", "2"),)
        elsewhere = await store.copy_object(BUCKET, "a", "other", "a")
        assert elsewhere.links == () and elsewhere.metadata == (("m", "1"),)
        assert data_free_bytes(store) == stored, "copies share the segments"
        await assert_file(store, ["a", "b"], data)
        for key in "cd":
            await assert_file(store, [key], data)
        await assert_file(store, ["a"], data, bucket="other")
        await store.write_at(BUCKET, "a", 0, b"only the group")
        patched = b"only the group" + data[14:]
        await assert_file(store, ["a", "b"], patched)
        await assert_file(store, ["c"], data)
        await store.delete_object(BUCKET, "a")
        await store.delete_object(BUCKET, "b")
        await store.delete_object(BUCKET, "c")
        await store.delete_object("other", "a")
        assert data_free_bytes(store) == stored, "the copy at d still holds every segment"
        await store.delete_object(BUCKET, "d")
        assert data_free_bytes(store) == empty


# -- renames ------------------------------------------------------------------------------


async def test_rename_of_a_member_renames_it_in_its_group(node: Node) -> None:
    data, other = os.urandom(BIG), os.urandom(5000)
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "a", data)
        await store.link_object(BUCKET, "a", "b")
        info = await store.rename_object(BUCKET, "a", "z")
        assert info.key == "z" and info.links == ("b", "z")
        with pytest.raises(NoSuchKey):
            store.head_object(BUCKET, "a")
        await assert_file(store, ["b", "z"], data)
        await store.write_at(BUCKET, "z", 1, b"!")
        data = data[:1] + b"!" + data[2:]
        await assert_file(store, ["b", "z"], data)

        # Onto itself, or onto another name of the same file: nothing happens (POSIX).
        before = index_state(store)
        await store.rename_object(BUCKET, "z", "z")
        assert index_state(store) == before
        info = await store.rename_object(BUCKET, "z", "b")
        assert info.key == "b" and info.links == ("b", "z")
        assert index_state(store) == before
        await assert_file(store, ["b", "z"], data)
        with pytest.raises(KeyAlreadyExists):
            await store.rename_object(BUCKET, "z", "b", no_replace=True)
        assert index_state(store) == before

        # Another key onto a member: that member leaves its group (of two: no group left).
        await store.put_object(BUCKET, "o", other)
        await store.rename_object(BUCKET, "o", "b")
        await assert_file(store, ["b"], other)
        await assert_file(store, ["z"], data)

        # A group of three keeps the two names not renamed over.
        for name in "pq":
            await store.link_object(BUCKET, "z", name)
        await store.put_object(BUCKET, "s", b"small")
        await store.rename_object(BUCKET, "s", "p")
        await assert_file(store, ["p"], b"small")
        await assert_file(store, ["q", "z"], data)

        # A member of one group onto a member of another.
        await store.put_object(BUCKET, "g", other)
        await store.link_object(BUCKET, "g", "h")
        await store.link_object(BUCKET, "g", "i")
        await store.rename_object(BUCKET, "q", "g")
        await assert_file(store, ["g", "z"], data)
        await assert_file(store, ["h", "i"], other)
        assert keys(store) == ["b", "g", "h", "i", "p", "z"]
    node.power_cut()
    async with node.open() as store:
        assert keys(store) == ["b", "g", "h", "i", "p", "z"]
        await assert_file(store, ["g", "z"], data)
        await assert_file(store, ["h", "i"], other)
        await assert_file(store, ["b"], other)


async def test_rename_prefix_rewrites_member_names_in_every_member(node: Node) -> None:
    one, two, plain = os.urandom(BIG), os.urandom(3000), os.urandom(6000)
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "dir/a", one)
        await store.link_object(BUCKET, "dir/a", "out")
        await store.link_object(BUCKET, "dir/a", "dir/sub/c")
        await store.put_object(BUCKET, "dir/b", two)  # a group wholly inside
        await store.link_object(BUCKET, "dir/b", "dir/x")
        await store.put_object(BUCKET, "dir/plain", plain)
        await store.put_object(BUCKET, "dir/", b"")  # the directory's marker
        free = data_free_bytes(store)
        await store.rename_prefix(BUCKET, "dir/", "new/")
        assert data_free_bytes(store) == free
        assert keys(store) == [
            "new/",
            "new/a",
            "new/b",
            "new/plain",
            "new/sub/c",
            "new/x",
            "out",
        ]
        await assert_file(store, ["new/a", "new/sub/c", "out"], one)
        await assert_file(store, ["new/b", "new/x"], two)
        await assert_file(store, ["new/plain"], plain)
        await store.write_at(BUCKET, "out", 0, b"through the name outside")
        one = b"through the name outside" + one[24:]
        await assert_file(store, ["new/a", "new/sub/c", "out"], one)
        await store.rename_prefix(BUCKET, "new/sub/", "deep/")  # one member only
        await assert_file(store, ["deep/c", "new/a", "out"], one)
        # The moved directory's own marker may be a name too (only the store API can
        # make that): it is renamed like any other member.
        await store.link_object(BUCKET, "out", "new/sub2/")
        await store.rename_prefix(BUCKET, "new/sub2/", "top/")
        await assert_file(store, ["deep/c", "new/a", "out", "top/"], one)
    node.power_cut()
    async with node.open() as store:
        await assert_file(store, ["deep/c", "new/a", "out", "top/"], one)
        await assert_file(store, ["new/b", "new/x"], two)


async def test_rename_prefix_onto_a_linked_marker_takes_the_marker_out_of_its_group(
    node: Node,
) -> None:
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "a", b"hello")
        await store.link_object(BUCKET, "a", "dst/")  # a key that is also a directory marker
        await store.put_object(BUCKET, "src/x", b"x")
        await store.rename_prefix(BUCKET, "src/", "dst/")
        assert keys(store) == ["a", "dst/x"]
        check_groups(store, BUCKET)
        await store.write_at(BUCKET, "a", 0, b"J")
        await assert_file(store, ["a"], b"Jello")


async def test_rename_prefix_onto_a_marker_linked_to_a_moving_key_is_whole_or_nothing(
    node: Node,
) -> None:
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "src/x", b"hello")
        await store.link_object(BUCKET, "src/x", "dst/")
        before = index_state(store)
        try:
            await store.rename_prefix(BUCKET, "src/", "dst/")
        except NoSuchKey:
            assert index_state(store) == before, "a failed rename changed the index"
        else:
            check_groups(store, BUCKET)
            assert await store.get_object(BUCKET, "dst/x") == b"hello"


# -- versioned buckets ----------------------------------------------------------------------


async def test_links_in_a_versioned_bucket(node: Node) -> None:
    v1, v2, v3 = os.urandom(5000), os.urandom(BIG), os.urandom(700)
    async with node.open() as store:
        await store.create_bucket(VERSIONED)
        await store.set_bucket_versioning(VERSIONED, Versioning.ENABLED)
        node.clock.now_ns += 1
        first = await store.put_object(VERSIONED, "a", v1)
        node.clock.now_ns += 1
        second = await store.put_object(VERSIONED, "a", v2)
        node.clock.now_ns += 1
        linked = await store.link_object(VERSIONED, "a", "b")
        assert linked.version_id not in (first.version_id, second.version_id)
        assert store.head_object(VERSIONED, "a").version_id == second.version_id
        await assert_file(store, ["a", "b"], v2, bucket=VERSIONED)
        old = store.head_object(VERSIONED, "a", version_id=first.version_id)
        assert old.links == () and links_entry(old.metadata) == []

        # Writes change the current versions in place: no new version ids.
        await store.write_at(VERSIONED, "b", 0, b"W")
        v2 = b"W" + v2[1:]
        heads = await assert_file(store, ["a", "b"], v2, bucket=VERSIONED)
        assert [h.version_id for h in heads] == [second.version_id, linked.version_id]

        # A delete marker on one name: the group shrinks, the old version is not linked.
        node.clock.now_ns += 1
        marker = await store.delete_object(VERSIONED, "b")
        assert marker.delete_marker
        await assert_file(store, ["a"], v2, bucket=VERSIONED)
        was_linked = store.head_object(VERSIONED, "b", version_id=linked.version_id)
        assert was_linked.links == () and links_entry(was_linked.metadata) == []
        assert not was_linked.is_latest

        # Linking again onto the name with a marker; then an overwrite of the source.
        node.clock.now_ns += 1
        again = await store.link_object(VERSIONED, "a", "b")
        assert again.links == ("a", "b")
        await assert_file(store, ["a", "b"], v2, bucket=VERSIONED)
        page = store.list_object_versions(VERSIONED, limit=100)
        assert [(v.key, v.links) for v in page.entries] == [
            ("a", ("a", "b")),
            ("a", ()),
            ("b", ("a", "b")),
            ("b", ()),
            ("b", ()),
        ]
        node.clock.now_ns += 1
        third = await store.put_object(VERSIONED, "a", v3)
        await assert_file(store, ["a"], v3, bucket=VERSIONED)
        await assert_file(store, ["b"], v2, bucket=VERSIONED)
        assert store.head_object(VERSIONED, "a", version_id=second.version_id).links == ()

        # Deleting the current version by its id: the key's older version becomes
        # current, unlinked; the other name stays.
        await store.link_object(VERSIONED, "a", "c")
        await store.delete_object(VERSIONED, "a", version_id=third.version_id)
        await assert_file(store, ["a"], v2, bucket=VERSIONED)
        await assert_file(store, ["c"], v3, bucket=VERSIONED)
        versions = {v.version_id for v in store.list_object_versions(VERSIONED).entries}
    node.power_cut()
    async with node.open() as store:
        assert {v.version_id for v in store.list_object_versions(VERSIONED).entries} == versions
        await assert_file(store, ["a"], v2, bucket=VERSIONED)
        await assert_file(store, ["b"], v2, bucket=VERSIONED)
        await assert_file(store, ["c"], v3, bucket=VERSIONED)


async def test_links_in_a_suspended_bucket(store: Store) -> None:
    await store.set_bucket_versioning(BUCKET, Versioning.ENABLED)
    kept = await store.put_object(BUCKET, "a", b"enabled")
    await store.set_bucket_versioning(BUCKET, Versioning.SUSPENDED)
    await store.link_object(BUCKET, "a", "b")  # gets the null version id
    await assert_file(store, ["a", "b"], b"enabled")
    await store.put_object(BUCKET, "a", b"null version")  # over the enabled-era version
    await assert_file(store, ["a"], b"null version")
    await assert_file(store, ["b"], b"enabled")
    assert store.head_object(BUCKET, "a", version_id=kept.version_id).links == ()
    await store.link_object(BUCKET, "b", "c")
    marker = await store.delete_object(BUCKET, "c")  # a null marker replaces c's null version
    assert marker.delete_marker
    await assert_file(store, ["b"], b"enabled")


# -- space ----------------------------------------------------------------------------------


async def test_shared_segments_are_freed_only_when_the_last_name_goes(node: Node) -> None:
    data = os.urandom(BIG)
    async with node.open() as store:
        await store.create_bucket(BUCKET)
        empty = data_free_bytes(store)
        await store.put_object(BUCKET, "a", data)
        stored = data_free_bytes(store)
        assert empty - stored == 3 * SEGMENT + blocks(1234)
        for name in "bc":
            await store.link_object(BUCKET, "a", name)
        assert data_free_bytes(store) == stored

        # A truncate through one name frees the segments past the cut once.
        await store.truncate(BUCKET, "b", 2 * SEGMENT)
        assert data_free_bytes(store) == empty - 2 * SEGMENT
        # Overwriting a whole segment through another name: one new, one old freed.
        fresh = os.urandom(SEGMENT)
        await store.write_at(BUCKET, "c", 0, fresh)
        assert data_free_bytes(store) == empty - 2 * SEGMENT
        current = fresh + data[SEGMENT : 2 * SEGMENT]
        await assert_file(store, ["a", "b", "c"], current)

        await store.delete_object(BUCKET, "a")
        assert data_free_bytes(store) == empty - 2 * SEGMENT
        await store.put_object(BUCKET, "b", b"small")  # inline: takes no blocks
        assert data_free_bytes(store) == empty - 2 * SEGMENT
        await store.rename_object(BUCKET, "c", "d")
        assert data_free_bytes(store) == empty - 2 * SEGMENT
        await assert_file(store, ["d"], current)

        # The last name goes while a reader holds the file: freed when it closes.
        await store.link_object(BUCKET, "d", "e")
        async with store.open_reader(BUCKET, "e") as reader:
            await store.delete_object(BUCKET, "d")
            await store.delete_object(BUCKET, "e")
            assert store.space.free_bytes <= empty - 2 * SEGMENT
            assert await reader.read(0, reader.size_bytes) == current
        assert data_free_bytes(store) == empty
        check_references(store)
        await store.delete_object(BUCKET, "b")
        assert data_free_bytes(store) == empty
        assert store.statistics().objects == 0 and store.index.segment_ids() == []
    node.power_cut()
    async with node.open() as store:
        assert data_free_bytes(store) == empty


# -- recovery -------------------------------------------------------------------------------


async def make_scene(store: Store, clock: FakeClock) -> dict[tuple[str, str], bytes]:
    """Groups made and changed by every kind of record; returns (bucket, key) -> bytes."""
    big, small = os.urandom(BIG), os.urandom(3000)
    await store.create_bucket(BUCKET)
    await store.create_bucket(VERSIONED)
    await store.set_bucket_versioning(VERSIONED, Versioning.ENABLED)
    await store.put_object(BUCKET, "f/one", big, metadata={"m": "1"})
    for name in ("f/two", "g/three", "four", "five"):
        await store.link_object(BUCKET, "f/one", name)
    clock.now_ns += 1
    await store.write_at(BUCKET, "four", SEGMENT, b"written")
    big = big[:SEGMENT] + b"written" + big[SEGMENT + 7 :]
    await store.truncate(BUCKET, "g/three", len(big) - 100)
    big = big[:-100]
    await store.set_attributes(BUCKET, "f/two", posix=POSIX, metadata={"x": "y"})
    await store.delete_object(BUCKET, "five")
    await store.rename_object(BUCKET, "four", "f/four")
    await store.rename_prefix(BUCKET, "f/", "h/")
    await store.put_object(BUCKET, "p", small)
    await store.link_object(BUCKET, "p", "q")
    await store.copy_object(BUCKET, "p", BUCKET, "copy")
    await store.put_object(BUCKET, "q", b"over")
    await store.put_object(VERSIONED, "v", small)
    await store.put_object(VERSIONED, "v", big)
    for name in ("w", "x"):
        await store.link_object(VERSIONED, "v", name)
    await store.delete_object(VERSIONED, "x")
    return {
        **{(BUCKET, k): big for k in ("h/one", "h/two", "g/three", "h/four")},
        (BUCKET, "p"): small,
        (BUCKET, "q"): b"over",
        (BUCKET, "copy"): small,
        (VERSIONED, "v"): big,
        (VERSIONED, "w"): big,
    }


async def read_scene(
    store: Store, scene: dict[tuple[str, str], bytes]
) -> tuple[dict[str, dict[str, tuple[str, ...]]], list[ObjectInfo], tuple[object, ...]]:
    for (bucket, key), data in scene.items():
        assert await store.get_object(bucket, key) == data, key
    groups = {bucket: dict(check_groups(store, bucket)) for bucket in (BUCKET, VERSIONED)}
    heads = [store.head_object(bucket, key) for bucket, key in sorted(scene)]
    return groups, heads, index_state(store)


async def test_groups_come_back_after_wal_replay_and_after_a_checkpoint(node: Node) -> None:
    expected_groups = {
        BUCKET: {
            k: ("g/three", "h/four", "h/one", "h/two")
            for k in ("g/three", "h/four", "h/one", "h/two")
        },
        VERSIONED: {"v": ("v", "w"), "w": ("v", "w")},
    }
    async with node.open() as store:
        scene = await make_scene(store, node.clock)
        before = await read_scene(store, scene)
        assert before[0] == expected_groups
        assert all(
            but_ctime(h.posix) == but_ctime(POSIX)
            for h in before[1]
            if h.links and h.bucket == BUCKET
        )
        free = data_free_bytes(store)
        node.power_cut()  # no close, no checkpoint: everything from the WAL
    async with node.open() as store:
        assert store.replayed_records > 20
        assert await read_scene(store, scene) == before
        assert data_free_bytes(store) == free
        assert await store.checkpoint(force=True)
        node.power_cut()
    async with node.open() as store:
        assert store.replayed_records == 0, "the checkpoint holds every group"
        assert await read_scene(store, scene) == before
        assert data_free_bytes(store) == free
        # A checkpoint, then more records after it: both replayed together.
        assert await store.checkpoint(force=True)
        await store.write_at(BUCKET, "h/one", 0, b"after")
        await store.delete_object(BUCKET, "h/two")
        node.power_cut()
    async with node.open() as store:
        assert 0 < store.replayed_records < 5
        data = scene.pop((BUCKET, "h/one"))
        data = b"after" + data[5:]
        scene.pop((BUCKET, "h/two"))
        for key in ("h/one", "g/three", "h/four"):
            scene[(BUCKET, key)] = data
        groups, _, _ = await read_scene(store, scene)
        assert groups[BUCKET]["h/one"] == ("g/three", "h/four", "h/one")
    async with node.open() as store:  # a clean close and reopen
        assert await read_scene(store, scene) is not None


async def test_links_on_o_direct_device_files(disk_dir: str) -> None:
    data_dir = os.path.join(disk_dir, "node")
    await create_data_dir(data_dir, device_count=2, device_size_bytes=64 * MiB)
    config = StoreConfig(data_dir=data_dir)
    data = os.urandom(2 * MiB + 333)
    async with open_store(config) as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "a", data)
        await store.link_object(BUCKET, "a", "b")
        await store.link_object(BUCKET, "b", "c")
        await store.write_at(BUCKET, "c", MiB - 5, b"0123456789")
        data = data[: MiB - 5] + b"0123456789" + data[MiB + 5 :]
        await store.delete_object(BUCKET, "a")
        await assert_file(store, ["b", "c"], data)
    async with open_store(config) as store:
        await assert_file(store, ["b", "c"], data)
        await store.checkpoint(force=True)
    report = await run_fsck(config, verify_data=True, repair=False)
    assert report.clean, report.render()
    async with open_store(config) as store:
        await assert_file(store, ["b", "c"], data)
