"""Edges of the mount found by an audit against what POSIX programs expect,
each a bug once: extended attribute names S3 cannot carry, a hard link's
unlink in a directory S3 made, the mtime of an open file unlinked, a write
past the largest object, a directory rename refused, a full store.

The node here has small devices, so a test can fill it in a second.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fuse_node import BUCKET, Mounted, mounted_node
from mount_helpers import errno_of, key_of, prefix_of, s3_get

from objfs.fuse.files import REHASH_MAX_BYTES
from objfs.store.names import MAX_OBJECT_BYTES

DEVICE_BYTES = 48 << 20  # three of them: about 80 MiB of data under 2+1
STORE_BYTES = 3 * DEVICE_BYTES  # more than the store holds
FILLER_BYTES = 32 << 20


@pytest.fixture(scope="module")
def mounted() -> Iterator[Mounted]:
    """conftest's node, on small devices."""
    with mounted_node(device_size_bytes=DEVICE_BYTES) as running:
        yield running


def errno_of_any(call: Callable[[], object]) -> int:
    """The errno an OSError from `call()` carries, 0 if it raised none."""
    try:
        call()
    except OSError as exc:
        return exc.errno or 0
    return 0


@pytest.mark.parametrize("name", [b"user.a b", b"user.a(b)", b"user.a/b", b'user.a"b'])
def test_xattr_names_that_are_no_header_name_keep_s3_reads_working(
    mounted: Mounted, workdir: str, s3: Any, name: bytes
) -> None:
    """user.NAME became x-amz-meta-NAME even when NAME cannot be an HTTP header
    name: every S3 HEAD and GET of the file then failed with 500."""
    path = os.path.join(workdir, "f")
    with open(path, "wb") as file:
        file.write(b"abc")
    os.setxattr(path, name, b"v")
    assert os.getxattr(path, name) == b"v"
    assert name in [n.encode() for n in os.listxattr(path)]
    head = s3.head_object(Bucket=BUCKET, Key=key_of(mounted, path))
    assert set(head["Metadata"]) <= {"mode", "uid", "gid", "mtime"}  # kept out of S3's sight
    assert s3_get(s3, key_of(mounted, path)) == b"abc"
    os.removexattr(path, name)
    assert os.listxattr(path) == []


def test_unlinking_a_hard_link_keeps_a_directory_s3_made(
    mounted: Mounted, workdir: str, s3: Any
) -> None:
    """The last name in a directory that S3 made (no marker) going as one name of
    a hard-linked file took the directory with it: `rm d/a` left no `d`."""
    s3.put_object(Bucket=BUCKET, Key=prefix_of(workdir) + "d/a", Body=b"x")
    directory = os.path.join(workdir, "d")
    os.link(os.path.join(directory, "a"), os.path.join(workdir, "b"))
    os.unlink(os.path.join(directory, "a"))
    assert os.path.isdir(directory)
    assert os.listdir(directory) == []
    with open(os.path.join(workdir, "b"), "rb") as file:
        assert file.read() == b"x"
    os.rmdir(directory)


def test_an_open_file_keeps_its_mtime_when_unlinked_or_replaced(workdir: str) -> None:
    """An open file unlinked (or renamed over) is set aside by a copy, which took a
    new time: fstat() on the open descriptor showed the mtime of the unlink."""
    unlinked, replaced = os.path.join(workdir, "unlinked"), os.path.join(workdir, "replaced")
    for path in (unlinked, replaced):
        with open(path, "wb") as file:
            file.write(b"abc")
    source = os.path.join(workdir, "source")
    with open(source, "wb") as file:
        file.write(b"new")
    before = {path: os.stat(path) for path in (unlinked, replaced)}
    time.sleep(0.05)
    fds = {path: os.open(path, os.O_RDONLY) for path in (unlinked, replaced)}
    try:
        os.unlink(unlinked)
        os.rename(source, replaced)
        for path, fd in fds.items():
            after = os.fstat(fd)
            assert after.st_mtime_ns == before[path].st_mtime_ns
            assert after.st_ctime_ns >= before[path].st_ctime_ns
            assert (after.st_size, after.st_nlink, after.st_mode) == (3, 0, before[path].st_mode)
            assert os.pread(fd, 10, 0) == b"abc"
    finally:
        for fd in fds.values():
            os.close(fd)


def test_a_write_past_the_largest_object_fails_at_once(workdir: str) -> None:
    """A write past 5 TiB (the most an object may hold) was taken into memory and
    acknowledged, and only close() failed (EFBIG), the bytes lost. As on Linux: a
    write from there fails with EFBIG, one across it is cut short."""
    path = os.path.join(workdir, "huge")
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        assert errno_of(lambda: os.pwrite(fd, b"x", MAX_OBJECT_BYTES)) == errno.EFBIG
        assert os.pwrite(fd, b"0123456789", MAX_OBJECT_BYTES - 4) == 4
        assert errno_of(lambda: os.ftruncate(fd, MAX_OBJECT_BYTES + 1)) == errno.EFBIG
        os.fsync(fd)
        assert os.fstat(fd).st_size == MAX_OBJECT_BYTES
        assert os.pread(fd, 10, MAX_OBJECT_BYTES - 6) == b"\0\x000123"
    finally:
        os.close(fd)
    os.unlink(path)


def test_a_refused_directory_rename_keeps_the_target_directory(
    mounted: Mounted, workdir: str, s3: Any
) -> None:
    """rename(src, dst) over a directory holding only keys the mount hides is
    refused (ENOTEMPTY), but dst's inode had been dropped first: dst came back
    under a new number, and a descriptor open on it kept the old one, which no
    later rename moved (fstat after renaming dst: ENOENT)."""
    source, target = os.path.join(workdir, "src"), os.path.join(workdir, "dst")
    os.mkdir(source)
    os.mkdir(target)
    s3.put_object(Bucket=BUCKET, Key=prefix_of(workdir) + "dst//hidden", Body=b"x")
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        inode = os.fstat(fd).st_ino
        assert errno_of(lambda: os.rename(source, target)) == errno.ENOTEMPTY
        assert os.stat(target).st_ino == inode
        moved = os.path.join(workdir, "moved")
        os.rename(target, moved)
        assert os.fstat(fd).st_ino == os.stat(moved).st_ino == inode
    finally:
        os.close(fd)
    assert sorted(os.listdir(workdir)) == ["moved", "src"]


def _fill(path: str, size_bytes: int) -> None:
    with open(path, "wb") as file:
        file.write(os.urandom(size_bytes))


def test_a_full_store_is_enospc_and_no_write_is_lost_silently(workdir: str) -> None:
    """The core raised NoSpace for a write of several segments inside a group of
    its own, which the open file did not take for a store failure: fsync() and
    close() said EIO (logged as a bug), and a run stored behind the writer was
    lost with nothing told at all: with space back by close(), close() returned
    0 and the file had a hole of zeros."""
    filler = os.path.join(workdir, "filler")
    _fill(filler, FILLER_BYTES)
    path = os.path.join(workdir, "big")
    chunk = os.urandom(1 << 20)
    errors: list[int] = []
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        for _ in range(STORE_BYTES >> 20):  # more than the store holds, no fsync
            if number := errno_of_any(lambda: os.write(fd, chunk)):
                errors.append(number)
        os.unlink(filler)  # space back before close()
    finally:
        if number := errno_of_any(lambda: os.close(fd)):
            errors.append(number)
    assert errors and set(errors) == {errno.ENOSPC}
    os.unlink(path)


def test_a_failed_fsync_leaves_no_wrong_etag(mounted: Mounted, workdir: str, s3: Any) -> None:
    """A store that failed (a full store) had already hashed its bytes into the
    file's MD5; the same bytes written again were hashed again, and close() gave
    the object an ETag that was no MD5 of its bytes."""
    filler = os.path.join(workdir, "filler")
    _fill(filler, FILLER_BYTES)
    path = os.path.join(workdir, "big")
    chunk = os.urandom(4 << 20)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        for _ in range(STORE_BYTES // len(chunk)):
            os.write(fd, chunk)
            if number := errno_of_any(lambda: os.fsync(fd)):
                break
        assert number == errno.ENOSPC
        os.unlink(filler)
        size = os.fstat(fd).st_size
        for _ in range(2):  # the failed store is told once more (files.py), then writes go on
            if not errno_of_any(lambda: os.pwrite(fd, chunk, size)):
                break
    finally:
        os.close(fd)
    with open(path, "rb") as file:
        data = file.read()
    assert len(data) == size + len(chunk) <= REHASH_MAX_BYTES
    head = s3.head_object(Bucket=BUCKET, Key=key_of(mounted, path))
    assert head["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    os.unlink(path)
