"""Helpers shared by the FUSE functional tests: keys of paths, S3 listings,
bulk puts on the node's loop, and the syscalls Python's os module lacks."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any

import boto3
import trio
from botocore.config import Config as BotoConfig
from fuse_node import BUCKET, Mounted
from s3_node import ROOT_KEY, ROOT_SECRET

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
PARALLEL = 64  # store calls in flight at once in put_many/delete_many


def write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)


def read_file(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def key_of(mounted: Mounted, path: str) -> str:
    """The S3 key of a path in the mount (the mount's root is the bucket)."""
    return os.path.relpath(path, mounted.mountpoint)


def prefix_of(workdir: str) -> str:
    return os.path.basename(workdir) + "/"


def listing_client(mounted: Mounted) -> Any:
    """A boto3 client of the node that leaves LastModified as text: botocore spends
    ~0.5 ms parsing each date, most of the time of a 10,000-key listing."""
    session = boto3.session.Session()
    parsers = session._session.get_component("response_parser_factory")
    parsers.set_parser_defaults(timestamp_parser=str)
    return session.client(
        "s3",
        endpoint_url=mounted.node.endpoint,
        aws_access_key_id=ROOT_KEY,
        aws_secret_access_key=ROOT_SECRET,
        region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def s3_objects(s3: Any, prefix: str) -> dict[str, dict[str, Any]]:
    """Every object under `prefix` (ListObjectsV2, all pages): key -> its listing entry."""
    found: dict[str, dict[str, Any]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=prefix, PaginationConfig={"PageSize": 1000}
    ):
        for item in page.get("Contents", []):
            found[item["Key"]] = item
    return found


def s3_get(s3: Any, key: str) -> bytes:
    body: bytes = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return body


def s3_missing(s3: Any, key: str) -> bool:
    """Does a HEAD of the key answer 404?"""
    try:
        s3.head_object(Bucket=BUCKET, Key=key)
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
            return True
        raise
    return False


def _on_node(mounted: Mounted, calls: list[Callable[[], Awaitable[object]]]) -> None:
    """Run store calls on the node's event loop, many at once (their WAL records
    share group commits), in one trip across threads."""

    async def run_all() -> None:
        limit = trio.CapacityLimiter(PARALLEL)

        async def one(call: Callable[[], Awaitable[object]]) -> None:
            async with limit:
                await call()

        async with trio.open_nursery() as nursery:
            for call in calls:
                nursery.start_soon(one, call)

    trio.from_thread.run(run_all, trio_token=mounted.node.token)


def put_many(mounted: Mounted, items: Iterable[tuple[str, bytes]]) -> None:
    """Put many small objects straight into the store (what an S3 PUT does, without
    the HTTP): fast setup for tests that need thousands of keys."""
    store = mounted.node.store
    _on_node(
        mounted,
        [partial(store.put_object, mounted.bucket, key, data) for key, data in items],
    )


def delete_many(mounted: Mounted, keys: Iterable[str]) -> None:
    store = mounted.node.store
    _on_node(mounted, [partial(store.delete_object, mounted.bucket, key) for key in keys])


def renameat2(source: str, target: str, flags: int) -> None:
    """renameat2(2) through libc; raises OSError with the errno."""
    result = _libc.renameat2(AT_FDCWD, os.fsencode(source), AT_FDCWD, os.fsencode(target), flags)
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number), source)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(path: str, atime: tuple[int, int], mtime: tuple[int, int], flags: int = 0) -> None:
    """utimensat(2) with (seconds, nanoseconds) pairs; UTIME_NOW/UTIME_OMIT go in
    the nanoseconds. Raises OSError with the errno."""
    times = (_Timespec * 2)(_Timespec(*atime), _Timespec(*mtime))
    if _libc.utimensat(AT_FDCWD, os.fsencode(path), times, flags) != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number), path)


def errno_of(call: Callable[[], object]) -> int:
    """The errno an OSError from `call()` carries (fails the test when there is none)."""
    try:
        call()
    except OSError as exc:
        assert exc.errno is not None
        return exc.errno
    raise AssertionError(f"{call} raised no OSError")


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll `condition` until true (for what the kernel does after a call returns,
    such as RELEASE after close()); its last value."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return condition()
        time.sleep(0.01)
    return True


ENOATTR = getattr(errno, "ENOATTR", errno.ENODATA)
