"""Hostile names and numbers are refused before anything is stored.

Goal: a key or bucket name that the core must not store (path escapes, NUL and
other control characters, bad UTF-8, empty, too long; bucket names breaking the
S3 rules) is refused by every call that could create it, with the specific
`InvalidArgument`-family error, and leaves no trace: no key, no WAL record, no
byte of space. Names at the very edge of the rules are accepted and read back.
Bad offsets and sizes are refused the same way, and listings stay correct and
finite whatever the keys hold.

Method: drive the Store API on in-memory devices (the conftest `store` fixture,
fsck-checked at teardown, here on small devices). "Nothing stored" is checked
three ways: the listing, `space.free_bytes` and the WAL's applied LSN. Listing
calls that could spin are run under a SIGALRM deadline so a hang fails the test.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import pytest

from objfs.errors import InvalidArgument, InvalidBucketName, InvalidKey, KeyTooLong
from objfs.store import Store
from objfs.store.testing import MemoryDevice
from objfs.store.types import MiB

BUCKET = "bkt"
SOURCE = "source"
PAYLOAD = os.urandom(600_000)  # big enough that storing it would move free space


@pytest.fixture
def memory_devices() -> list[MemoryDevice]:
    """Smaller than conftest's (hostile input never needs much room), so faster."""
    return [MemoryDevice(16 * MiB, path=f"mem{i}") for i in range(3)]


@pytest.fixture
async def hostile_store(store: Store) -> Store:
    """The conftest store with bucket BUCKET holding one object, SOURCE."""
    await store.create_bucket(BUCKET)
    await store.put_object(BUCKET, SOURCE, PAYLOAD)
    return store


class Hung(Exception):
    pass


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail a synchronous call that runs longer than `seconds` (it would hang the loop)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def listed(store: Store, bucket: str = BUCKET) -> list[str]:
    page = store.list_objects(bucket, limit=10_000)
    assert not page.is_truncated
    return [info.key for info in page.objects]


# -- keys -------------------------------------------------------------------------------

BAD_KEYS = [
    pytest.param("../escape", InvalidKey, id="dotdot-first"),
    pytest.param("a/../../etc/passwd", InvalidKey, id="dotdot-inside"),
    pytest.param("a/..", InvalidKey, id="dotdot-last"),
    pytest.param("..", InvalidKey, id="lone-dotdot"),
    pytest.param("../", InvalidKey, id="dotdot-dir"),
    pytest.param("./a", InvalidKey, id="dot-first"),
    pytest.param("a/./b", InvalidKey, id="dot-inside"),
    pytest.param("a/.", InvalidKey, id="dot-last"),
    pytest.param(".", InvalidKey, id="lone-dot"),
    pytest.param("a\x00b", InvalidKey, id="nul"),
    pytest.param("\x00", InvalidKey, id="lone-nul"),
    pytest.param("a\nb", InvalidKey, id="newline"),
    pytest.param("a\rb", InvalidKey, id="carriage-return"),
    pytest.param("a\tb", InvalidKey, id="tab"),
    pytest.param("\x1b[31mred", InvalidKey, id="escape"),
    pytest.param("a\x01", InvalidKey, id="soh"),
    pytest.param("a\x1f", InvalidKey, id="unit-separator"),
    pytest.param("a\x7fb", InvalidKey, id="delete"),
    pytest.param("\ud800", InvalidKey, id="lone-high-surrogate"),
    pytest.param("a\udfffb", InvalidKey, id="lone-low-surrogate"),
    pytest.param("\ud83d\ude00", InvalidKey, id="surrogate-pair-as-code-units"),
    pytest.param("", InvalidKey, id="empty"),
    pytest.param("k" * 1025, KeyTooLong, id="1025-ascii-bytes"),
    pytest.param("k" * 1023 + "\u00e9", KeyTooLong, id="1025-bytes-ending-multibyte"),
    pytest.param("\u00e9" * 513, KeyTooLong, id="1026-bytes-in-513-chars"),
    pytest.param("\U0001f600" * 257, KeyTooLong, id="1028-bytes-of-emoji"),
    pytest.param("k" * 2048, KeyTooLong, id="2kb"),
    pytest.param("x/" * 1024, KeyTooLong, id="2kb-of-dirs"),
]


async def put(store: Store, key: str) -> None:
    await store.put_object(BUCKET, key, PAYLOAD)


async def put_small(store: Store, key: str) -> None:
    await store.put_object(BUCKET, key, b"inline")


async def stream(store: Store, key: str) -> None:
    async with store.open_writer(BUCKET, key) as writer:
        await writer.write(PAYLOAD)
        await writer.commit()


async def rename_to(store: Store, key: str) -> None:
    await store.rename_object(BUCKET, SOURCE, key)


async def copy_to(store: Store, key: str) -> None:
    await store.copy_object(BUCKET, SOURCE, BUCKET, key)


WRITES: list[Callable[[Store, str], Awaitable[None]]] = [put, put_small, stream, rename_to, copy_to]


@pytest.mark.parametrize(("key", "error"), BAD_KEYS)
async def test_hostile_key_is_refused_by_every_write_and_nothing_is_stored(
    hostile_store: Store, key: str, error: type[InvalidArgument]
) -> None:
    store = hostile_store
    free, lsn = store.space.free_bytes, store.wal.applied_lsn
    for write in WRITES:
        with pytest.raises(error) as caught:
            await write(store, key)
        assert isinstance(caught.value, InvalidArgument), write.__name__
    assert listed(store) == [SOURCE]
    assert store.space.free_bytes == free
    assert store.wal.applied_lsn == lsn, "no record may be written for a refused key"
    assert await store.get_object(BUCKET, SOURCE) == PAYLOAD


@pytest.mark.parametrize(
    "prefix",
    ["../", "a/../", "./", "a/./", "x\x00/", "\ud800/", "/" * 1025],
    ids=["dotdot", "dotdot-inside", "dot", "dot-inside", "nul", "surrogate", "too-long"],
)
async def test_hostile_rename_prefix_target_is_refused(hostile_store: Store, prefix: str) -> None:
    store = hostile_store
    await store.put_object(BUCKET, "dir/a", b"a")
    lsn = store.wal.applied_lsn
    with pytest.raises((InvalidKey, KeyTooLong)):
        await store.rename_prefix(BUCKET, "dir/", prefix)
    assert listed(store) == ["dir/a", SOURCE]
    assert store.wal.applied_lsn == lsn


GOOD_KEYS = [
    "k" * 1024,
    "\u00e9" * 512,  # 1024 bytes in 512 characters
    "\u65e5" * 341 + "x",  # 1024 bytes: 341 three-byte characters and one more
    "...",
    "..a",
    "a..",
    ".hidden",
    "a/.b/c.",
    "dir/",
    "a//b",
    "with space",
    "\U0001f600/\u00fc",
    "a\u0085b",  # NEL is a C1 control, not C0: the rules allow it
]


async def test_keys_at_the_edge_of_the_rules_are_stored_and_read_back(store: Store) -> None:
    await store.create_bucket(BUCKET)
    for number, key in enumerate(GOOD_KEYS):
        await store.put_object(BUCKET, key, str(number).encode())
    assert listed(store) == sorted(GOOD_KEYS)
    for number, key in enumerate(GOOD_KEYS):
        assert await store.get_object(BUCKET, key) == str(number).encode()
        assert store.head_object(BUCKET, key).key == key
    longest = "k" * 1024
    await store.rename_object(BUCKET, longest, "z" * 1024)
    await store.copy_object(BUCKET, "z" * 1024, BUCKET, "y" * 1024)
    async with store.open_writer(BUCKET, "w" * 1024) as writer:
        await writer.write(b"streamed")
        await writer.commit()
    assert await store.get_object(BUCKET, "y" * 1024) == b"0"
    assert await store.get_object(BUCKET, "w" * 1024) == b"streamed"


# -- bucket names -----------------------------------------------------------------------

BAD_BUCKETS = [
    pytest.param("Abc", id="uppercase"),
    pytest.param("ABC", id="all-uppercase"),
    pytest.param("a_b", id="underscore"),
    pytest.param("ab", id="two-chars"),
    pytest.param("a", id="one-char"),
    pytest.param("", id="empty"),
    pytest.param("a" * 64, id="64-chars"),
    pytest.param("b" * 2048, id="2kb"),
    pytest.param("-abc", id="leading-hyphen"),
    pytest.param("abc-", id="trailing-hyphen"),
    pytest.param(".abc", id="leading-dot"),
    pytest.param("abc.", id="trailing-dot"),
    pytest.param("a..b", id="double-dot"),
    pytest.param("a.-b", id="dot-hyphen"),
    pytest.param("a-.b", id="hyphen-dot"),
    pytest.param("192.168.1.1", id="ip-address"),
    pytest.param("10.0.0.255", id="another-ip-address"),
    pytest.param("xn--abc", id="punycode-prefix"),
    pytest.param("sthree-abc", id="sthree-prefix"),
    pytest.param("abc-s3alias", id="s3alias-suffix"),
    pytest.param("abc--ol-s3", id="object-lambda-suffix"),
    pytest.param("ab c", id="space"),
    pytest.param("abc/def", id="slash"),
    pytest.param("ab\x00c", id="nul"),
    pytest.param("abc\n", id="trailing-newline"),
    pytest.param("192.168.1.1\n", id="ip-and-trailing-newline"),
    pytest.param("ab\u00e9c", id="non-ascii"),
    pytest.param("\ud800abc", id="surrogate"),
]


@pytest.mark.parametrize("name", BAD_BUCKETS)
async def test_bucket_name_breaking_s3_rules_is_refused_and_nothing_is_stored(
    store: Store, name: str
) -> None:
    await store.create_bucket(BUCKET)
    free, lsn = store.space.free_bytes, store.wal.applied_lsn
    with pytest.raises(InvalidBucketName):
        await store.create_bucket(name)
    assert [info.name for info in store.list_buckets()] == [BUCKET]
    assert store.space.free_bytes == free
    assert store.wal.applied_lsn == lsn


async def test_bucket_names_at_the_edge_of_the_rules_are_accepted(store: Store) -> None:
    names = ["abc", "a" * 63, "a.b-c", "123", "a-b-c", "xn-abc", "abc.def.ghi", "1.2.3"]
    for name in names:
        info = await store.create_bucket(name)
        assert info.name == name
        await store.put_object(name, "k", name.encode())
    assert [info.name for info in store.list_buckets()] == sorted(names)
    for name in names:
        assert await store.get_object(name, "k") == name.encode()


# -- offsets and sizes ------------------------------------------------------------------


async def test_negative_write_offset_is_refused_and_changes_nothing(
    hostile_store: Store,
) -> None:
    store = hostile_store
    free, lsn = store.space.free_bytes, store.wal.applied_lsn
    for offset in (-1, -4096, -(2**63)):
        with pytest.raises(InvalidArgument):
            await store.write_at(BUCKET, SOURCE, offset, os.urandom(10_000))
    assert store.space.free_bytes == free
    assert store.wal.applied_lsn == lsn
    assert await store.get_object(BUCKET, SOURCE) == PAYLOAD
    assert store.head_object(BUCKET, SOURCE).size_bytes == len(PAYLOAD)


async def test_negative_truncate_is_refused_and_changes_nothing(hostile_store: Store) -> None:
    store = hostile_store
    free = store.space.free_bytes
    etag = store.head_object(BUCKET, SOURCE).etag
    for size in (-1, -(2**40)):
        with pytest.raises(InvalidArgument):
            await store.truncate(BUCKET, SOURCE, size)
    assert store.space.free_bytes == free
    assert await store.get_object(BUCKET, SOURCE) == PAYLOAD
    assert store.head_object(BUCKET, SOURCE).etag == etag


async def test_offsets_too_large_to_record_are_refused_with_invalid_argument(
    hostile_store: Store,
) -> None:
    store = hostile_store
    free, lsn = store.space.free_bytes, store.wal.applied_lsn
    with pytest.raises(InvalidArgument):
        await store.write_at(BUCKET, SOURCE, 2**64, b"x")
    with pytest.raises(InvalidArgument):
        await store.truncate(BUCKET, SOURCE, 2**64)
    assert store.space.free_bytes == free
    assert store.wal.applied_lsn == lsn
    assert await store.get_object(BUCKET, SOURCE) == PAYLOAD


# -- listings stay correct and finite ---------------------------------------------------

LAST_CODE_POINT = "\U0010ffff"


async def test_key_holding_the_last_code_point_is_listed_once_under_its_prefix(
    store: Store,
) -> None:
    await store.create_bucket(BUCKET)
    for key in ("a/b", "a/" + LAST_CODE_POINT * 2, "a/" + LAST_CODE_POINT + "x/y", "b"):
        await store.put_object(BUCKET, key, b"x")
    with deadline(2):
        page = store.list_objects(BUCKET, delimiter="/")
    assert page.common_prefixes == ("a/",)
    assert [info.key for info in page.objects] == ["b"]
    assert not page.is_truncated
    with deadline(2):
        inner = store.list_objects(BUCKET, prefix="a/", delimiter="/")
    assert [info.key for info in inner.objects] == ["a/b", "a/" + LAST_CODE_POINT * 2]
    assert inner.common_prefixes == ("a/" + LAST_CODE_POINT + "x/",)


async def test_paging_past_a_common_prefix_ends_when_keys_hold_the_last_code_point(
    store: Store,
) -> None:
    await store.create_bucket(BUCKET)
    for key in ("a/b", "a/" + LAST_CODE_POINT * 2, "b"):
        await store.put_object(BUCKET, key, b"x")
    entries: list[str] = []
    start_after = ""
    for _ in range(10):
        with deadline(2):
            page = store.list_objects(BUCKET, delimiter="/", start_after=start_after, limit=1)
        entries += [info.key for info in page.objects] + list(page.common_prefixes)
        if not page.is_truncated:
            break
        assert page.next_start_after is not None
        start_after = page.next_start_after
    assert entries == ["a/", "b"]


async def test_non_positive_list_limit_never_claims_more_without_saying_where(
    store: Store,
) -> None:
    await store.create_bucket(BUCKET)
    await store.put_object(BUCKET, "a", b"x")
    for limit in (0, -1):
        try:
            page = store.list_objects(BUCKET, limit=limit)
        except InvalidArgument:
            continue  # refusing the limit is fine too
        assert page.objects == () and page.common_prefixes == ()
        assert not page.is_truncated or page.next_start_after is not None, (
            f"limit={limit}: a truncated page without a place to continue"
        )


async def test_hostile_listing_arguments_return_nothing_rather_than_fail(
    hostile_store: Store,
) -> None:
    store = hostile_store
    for prefix in ("../", "\x00", "\ud800", "k" * 5000, LAST_CODE_POINT):
        assert store.list_objects(BUCKET, prefix=prefix).objects == ()
    for start_after in ("\x00", "\ud800", LAST_CODE_POINT * 3):
        page = store.list_objects(BUCKET, start_after=start_after)
        expected = [SOURCE] if start_after < SOURCE else []
        assert [info.key for info in page.objects] == expected
    page = store.list_objects(BUCKET, delimiter="\x00")
    assert [info.key for info in page.objects] == [SOURCE]
