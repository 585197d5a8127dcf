"""Regular files through the mount: create, read, write anywhere, append,
truncate, O_EXCL/O_TRUNC, fsync, sparse gaps, a large file written at random
places, and a file unlinked while open."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import random
import shutil
import stat
import subprocess
import sys
import threading
from typing import Any

import pytest
from fuse_node import BUCKET, Mounted
from mount_helpers import (
    errno_of,
    key_of,
    read_file,
    s3_get,
    s3_missing,
    s3_objects,
    wait_for,
    write_file,
)

from objfs.fuse.operations import ORPHAN_BUCKET


def test_create_write_read(mounted: Mounted, workdir: str, s3: Any) -> None:
    path = os.path.join(workdir, "hello.bin")
    data = os.urandom(5000)
    write_file(path, data)
    assert read_file(path) == data
    info = os.stat(path)
    assert stat.S_ISREG(info.st_mode)
    assert info.st_size == len(data)
    assert info.st_nlink == 1
    assert s3_get(s3, key_of(mounted, path)) == data
    assert os.listdir(workdir) == ["hello.bin"]


def test_empty_file_is_an_empty_object(mounted: Mounted, workdir: str, s3: Any) -> None:
    path = os.path.join(workdir, "empty")
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
    assert os.stat(path).st_size == 0
    assert read_file(path) == b""
    head = s3.head_object(Bucket=BUCKET, Key=key_of(mounted, path))
    assert head["ContentLength"] == 0
    assert head["ETag"] == f'"{hashlib.md5(b"").hexdigest()}"'


def test_create_read_only_0444(mounted: Mounted, workdir: str, s3: Any) -> None:
    """open(O_CREAT|O_RDONLY, 0444) makes the file (s3fs loses it), and the same
    call on an existing read-only file opens it, leaving it as it was."""
    path = os.path.join(workdir, "ro.txt")
    fd = os.open(path, os.O_CREAT | os.O_RDONLY, 0o444)
    try:
        assert os.read(fd, 10) == b""
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o444
    finally:
        os.close(fd)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    assert os.listdir(workdir) == ["ro.txt"]
    assert s3.head_object(Bucket=BUCKET, Key=key_of(mounted, path))["ContentLength"] == 0

    os.chmod(path, 0o644)
    write_file(path, b"keep me")
    os.chmod(path, 0o444)
    fd = os.open(path, os.O_CREAT | os.O_RDONLY, 0o444)
    try:
        assert os.read(fd, 100) == b"keep me"
    finally:
        os.close(fd)
    info = os.stat(path)
    assert stat.S_IMODE(info.st_mode) == 0o444
    assert info.st_size == 7
    assert s3_get(s3, key_of(mounted, path)) == b"keep me"


def test_write_at_any_offset(mounted: Mounted, workdir: str, s3: Any) -> None:
    path = os.path.join(workdir, "offsets")
    model = bytearray(os.urandom(100_000))
    write_file(path, bytes(model))
    fd = os.open(path, os.O_RDWR)
    try:
        for offset, size in [(0, 10), (50_000, 4096), (99_990, 10), (99_995, 30), (12_345, 1)]:
            chunk = os.urandom(size)
            assert os.pwrite(fd, chunk, offset) == size
            model[offset : offset + size] = chunk
            assert os.pread(fd, size, offset) == chunk  # read back before close
        assert os.fstat(fd).st_size == len(model) == 100_025
        os.lseek(fd, 0, os.SEEK_SET)
        assert os.read(fd, 200_000) == bytes(model)
    finally:
        os.close(fd)
    assert read_file(path) == bytes(model)
    assert s3_get(s3, key_of(mounted, path)) == bytes(model)


def test_reads_at_and_past_the_end(workdir: str) -> None:
    path = os.path.join(workdir, "short")
    write_file(path, b"0123456789")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 5) == b"56789"
        assert os.pread(fd, 100, 10) == b""
        assert os.pread(fd, 100, 1000) == b""
    finally:
        os.close(fd)


def test_append(mounted: Mounted, workdir: str, s3: Any) -> None:
    path = os.path.join(workdir, "log.txt")
    write_file(path, b"abc")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"def")  # O_APPEND: at the end whatever the offset
        assert os.fstat(fd).st_size == 6
    finally:
        os.close(fd)
    with open(path, "ab") as file:
        file.write(b"ghi")
    assert read_file(path) == b"abcdefghi"
    # two appending descriptors interleave, never overwrite each other
    first = os.open(path, os.O_WRONLY | os.O_APPEND)
    second = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(first, b"1")
        os.write(second, b"2")
        os.write(first, b"3")
    finally:
        os.close(first)
        os.close(second)
    assert read_file(path) == b"abcdefghi123"
    head = s3.head_object(Bucket=BUCKET, Key=key_of(mounted, path))
    assert head["ContentLength"] == 12
    assert head["ETag"] == f'"{hashlib.md5(b"abcdefghi123").hexdigest()}"'


def test_truncate_shrinks_and_extends_with_zeros(mounted: Mounted, workdir: str, s3: Any) -> None:
    path = os.path.join(workdir, "trunc")
    data = os.urandom(300_000)
    write_file(path, data)
    os.truncate(path, 1000)
    assert os.stat(path).st_size == 1000
    assert read_file(path) == data[:1000]
    os.truncate(path, 5000)
    assert read_file(path) == data[:1000] + bytes(4000)
    assert s3_get(s3, key_of(mounted, path)) == data[:1000] + bytes(4000)
    os.truncate(path, 0)
    assert read_file(path) == b""
    assert s3.head_object(Bucket=BUCKET, Key=key_of(mounted, path))["ContentLength"] == 0


def test_ftruncate_with_unflushed_writes(mounted: Mounted, workdir: str, s3: Any) -> None:
    path = os.path.join(workdir, "ftrunc")
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"x" * 10_000)
        os.ftruncate(fd, 4)
        assert os.fstat(fd).st_size == 4
        assert os.pread(fd, 100, 0) == b"xxxx"
        os.ftruncate(fd, 8)
        assert os.pread(fd, 100, 0) == b"xxxx\0\0\0\0"
        os.pwrite(fd, b"yy", 10)  # past the end: a gap of zeros
        assert os.fstat(fd).st_size == 12
    finally:
        os.close(fd)
    expected = b"xxxx" + bytes(6) + b"yy"
    assert read_file(path) == expected
    head = s3.head_object(Bucket=BUCKET, Key=key_of(mounted, path))
    assert head["ContentLength"] == 12
    assert head["ETag"] == f'"{hashlib.md5(expected).hexdigest()}"'


def test_o_excl(workdir: str) -> None:
    path = os.path.join(workdir, "excl")
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.write(fd, b"first")
    os.close(fd)
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    assert errno_of(lambda: os.open(path, flags, 0o600)) == errno.EEXIST
    os.mkdir(os.path.join(workdir, "sub"))
    assert errno_of(lambda: os.open(os.path.join(workdir, "sub"), flags)) == errno.EEXIST
    assert read_file(path) == b"first"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_o_trunc(mounted: Mounted, workdir: str, s3: Any) -> None:
    path = os.path.join(workdir, "otrunc.bin")
    write_file(path, os.urandom(200_000))
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        assert os.fstat(fd).st_size == 0
        os.write(fd, b"new")
    finally:
        os.close(fd)
    assert read_file(path) == b"new"
    head = s3.head_object(Bucket=BUCKET, Key=key_of(mounted, path))
    assert head["ContentLength"] == 3
    assert head["ETag"] == f'"{hashlib.md5(b"new").hexdigest()}"'
    # O_TRUNC|O_CREAT on an existing file truncates it too
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.close(fd)
    assert os.stat(path).st_size == 0


def test_fsync_makes_bytes_visible_to_s3(mounted: Mounted, workdir: str, s3: Any) -> None:
    path = os.path.join(workdir, "synced")
    key = key_of(mounted, path)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        first = os.urandom(70_000)
        os.write(fd, first)
        os.fsync(fd)
        head = s3.head_object(Bucket=BUCKET, Key=key)  # still open: fsync is enough
        assert head["ContentLength"] == len(first)
        assert head["ETag"] == f'"{hashlib.md5(first).hexdigest()}"'
        assert s3_get(s3, key) == first
        second = os.urandom(1000)
        os.write(fd, second)
        os.fdatasync(fd)
        assert s3_get(s3, key) == first + second
    finally:
        os.close(fd)
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ETag"] == f'"{hashlib.md5(first + second).hexdigest()}"'


def test_sparse_gaps_read_as_zeros(mounted: Mounted, workdir: str, s3: Any) -> None:
    path = os.path.join(workdir, "sparse")
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"head", 0)
        os.pwrite(fd, b"tail", 3 * 1024 * 1024)
        os.lseek(fd, 5 * 1024 * 1024, os.SEEK_SET)
        os.write(fd, b"end")
        assert os.fstat(fd).st_size == 5 * 1024 * 1024 + 3
        assert os.pread(fd, 8192, 1024 * 1024) == bytes(8192)
    finally:
        os.close(fd)
    expected = bytearray(5 * 1024 * 1024 + 3)
    expected[0:4] = b"head"
    expected[3 * 1024 * 1024 : 3 * 1024 * 1024 + 4] = b"tail"
    expected[-3:] = b"end"
    assert read_file(path) == bytes(expected)
    assert s3_get(s3, key_of(mounted, path)) == bytes(expected)


def test_posix_fallocate_reserves_zeros(workdir: str) -> None:
    path = os.path.join(workdir, "falloc")
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"abc")
        os.posix_fallocate(fd, 0, 256 * 1024)  # glibc writes zeros when FUSE cannot
        assert os.fstat(fd).st_size == 256 * 1024
    finally:
        os.close(fd)
    assert read_file(path) == b"abc" + bytes(256 * 1024 - 3)


def test_large_file_random_writes(mounted: Mounted, workdir: str, s3: Any) -> None:
    """20 MiB written in order, then 120 writes at random places (some past the
    end): the mount and S3 both give back exactly the model's bytes."""
    path = os.path.join(workdir, "big.bin")
    rng = random.Random(5)
    model = bytearray(rng.randbytes(20 * 1024 * 1024))
    with open(path, "wb") as file:
        for start in range(0, len(model), 1 << 20):
            file.write(model[start : start + (1 << 20)])
    fd = os.open(path, os.O_RDWR)
    try:
        for _ in range(120):
            size = rng.choice([1, 17, 4096, 65_536, 300_000])
            offset = rng.randrange(0, len(model) + 100_000)
            chunk = rng.randbytes(size)
            os.pwrite(fd, chunk, offset)
            if offset > len(model):
                model.extend(bytes(offset - len(model)))
            model[offset : offset + size] = chunk
        assert os.fstat(fd).st_size == len(model)
        probe = rng.randrange(0, len(model) - 4096)
        assert os.pread(fd, 4096, probe) == model[probe : probe + 4096]
    finally:
        os.close(fd)
    assert os.stat(path).st_size == len(model)
    got = read_file(path)
    assert len(got) == len(model)
    assert got == model
    assert s3_get(s3, key_of(mounted, path)) == model
    head = s3.head_object(Bucket=BUCKET, Key=key_of(mounted, path))
    assert head["ContentLength"] == len(model)
    assert head["ETag"] == f'"{hashlib.md5(model).hexdigest()}"'  # rehashed on close


MMAP_CHILD = """
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
with mmap.mmap(fd, 0) as mapped:
    assert mapped[:4] == b"head", mapped[:4]
    mapped[5000:5005] = b"HELLO"
    mapped.flush()
os.close(fd)
"""


def test_shared_mmap_writes_reach_the_file_and_s3(mounted: Mounted, workdir: str, s3: Any) -> None:
    """Pages written through a shared mapping (msync) are the file's bytes. The
    mapping lives in a child process: a page fault in the process that serves the
    mount can deadlock it (the fault holds the process's mmap lock)."""
    path = os.path.join(workdir, "mapped.bin")
    data = bytearray(b"head" + bytes(20_000))
    write_file(path, bytes(data))
    subprocess.run([sys.executable, "-c", MMAP_CHILD, path], check=True, timeout=30)
    data[5000:5005] = b"HELLO"
    assert read_file(path) == bytes(data)
    assert s3_get(s3, key_of(mounted, path)) == bytes(data)


def test_times_set_on_an_open_descriptor_survive_close(workdir: str) -> None:
    path = os.path.join(workdir, "copied-with-times")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"data" * 1000)
        os.utime(fd, ns=(1_000_000_000_000_000_000, 1_100_000_000_000_000_000))
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    info = os.stat(path)
    assert info.st_mtime_ns == 1_100_000_000_000_000_000
    assert info.st_atime_ns == 1_000_000_000_000_000_000
    assert info.st_mode == stat.S_IFREG | 0o600
    assert info.st_size == 4000


def test_unlink_of_an_open_file(mounted: Mounted, workdir: str, s3: Any) -> None:
    path = os.path.join(workdir, "doomed")
    key = key_of(mounted, path)
    write_file(path, b"still here")
    fd = os.open(path, os.O_RDWR)
    try:
        os.unlink(path)
        assert not os.path.exists(path)
        assert os.listdir(workdir) == []
        assert s3_missing(s3, key)
        assert key not in s3_objects(s3, os.path.basename(workdir) + "/")
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 100, 0) == b"still here"
        os.pwrite(fd, b" and growing", 10)
        assert os.fstat(fd).st_size == 22
        assert os.pread(fd, 100, 0) == b"still here and growing"
        # a new file of the same name is another file
        write_file(path, b"newcomer")
        assert os.pread(fd, 100, 0) == b"still here and growing"
        assert read_file(path) == b"newcomer"
        assert s3_get(s3, key) == b"newcomer"
    finally:
        os.close(fd)
    assert read_file(path) == b"newcomer"
    os.unlink(path)
    assert s3_missing(s3, key)
    assert os.listdir(workdir) == []
    store = mounted.node.store
    # the set-aside copy goes when the kernel releases the file (after close returns)
    assert wait_for(lambda: not store.list_objects(ORPHAN_BUCKET, limit=10).objects)
    assert ORPHAN_BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_unlinked_open_file_unwritten_bytes_survive(workdir: str) -> None:
    """Writes still gathered in memory when the file is unlinked stay readable."""
    path = os.path.join(workdir, "pending")
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"a" * 5000)
        os.unlink(path)
        os.write(fd, b"b" * 5000)
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 20_000, 0) == b"a" * 5000 + b"b" * 5000
    finally:
        os.close(fd)
    assert not os.path.exists(path)


def test_unlink_errors(workdir: str) -> None:
    assert errno_of(lambda: os.unlink(os.path.join(workdir, "nothing"))) == errno.ENOENT
    os.mkdir(os.path.join(workdir, "d"))
    assert errno_of(lambda: os.unlink(os.path.join(workdir, "d"))) == errno.EISDIR
    path = os.path.join(workdir, "f")
    write_file(path, b"x")
    assert errno_of(lambda: os.open(os.path.join(path, "below"), os.O_RDONLY)) == errno.ENOTDIR
    assert errno_of(lambda: os.open(os.path.join(workdir, "d"), os.O_RDWR)) == errno.EISDIR


@pytest.mark.parametrize("name", ["x" * 255, "ünïcødé €.txt", "spaces and 'quotes'"])
def test_names(mounted: Mounted, workdir: str, s3: Any, name: str) -> None:
    path = os.path.join(workdir, name)
    write_file(path, name.encode())
    assert os.listdir(workdir) == [name]
    assert s3_get(s3, key_of(mounted, path)) == name.encode()


def test_name_too_long(mounted: Mounted, workdir: str) -> None:
    path = os.path.join(workdir, "y" * 256)
    assert errno_of(lambda: os.open(path, os.O_CREAT | os.O_WRONLY)) == errno.ENAMETOOLONG
    # a key is at most 1024 bytes (S3): a path that would make a longer one is too long
    deep = workdir
    for segment in ("a" * 250, "b" * 250, "c" * 250, "d" * 5):
        deep = os.path.join(deep, segment)
        os.mkdir(deep)
    room = 1024 - len(key_of(mounted, deep)) - 1
    assert room < 255
    with open(os.path.join(deep, "f" * room), "wb") as file:
        file.write(b"fits exactly")
    too_long = os.path.join(deep, "f" * (room + 1))
    assert errno_of(lambda: os.open(too_long, os.O_CREAT | os.O_WRONLY)) == errno.ENAMETOOLONG
    assert errno_of(lambda: os.mkdir(too_long)) == errno.ENAMETOOLONG
    assert os.listdir(deep) == ["f" * room]


@pytest.mark.parametrize("name", ["new\nline", "tab\there", "bell\x07", "del\x7f"])
def test_names_with_control_characters_are_refused(workdir: str, name: str) -> None:
    path = os.path.join(workdir, name)
    assert errno_of(lambda: os.open(path, os.O_CREAT | os.O_WRONLY)) == errno.EINVAL
    assert errno_of(lambda: os.mkdir(path)) == errno.EINVAL
    assert os.listdir(workdir) == []


def test_names_that_are_not_utf8_are_refused(workdir: str) -> None:
    path = os.fsencode(workdir) + b"/\xff\xfe"
    assert errno_of(lambda: os.open(path, os.O_CREAT | os.O_WRONLY)) == errno.EINVAL


def test_copy_file_range_and_copyfile(mounted: Mounted, workdir: str, s3: Any) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    source = os.path.join(workdir, "source.bin")
    write_file(source, data)
    shutil.copyfile(source, os.path.join(workdir, "copy.bin"))
    head = s3.head_object(Bucket=BUCKET, Key=key_of(mounted, os.path.join(workdir, "copy.bin")))
    assert head["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    target = os.path.join(workdir, "ranged.bin")
    fd_in = os.open(source, os.O_RDONLY)
    fd_out = os.open(target, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        copied = 0
        while copied < len(data):
            step = os.copy_file_range(fd_in, fd_out, len(data) - copied)
            assert step > 0
            copied += step
    finally:
        os.close(fd_in)
        os.close(fd_out)
    assert read_file(target) == data
    assert s3_get(s3, key_of(mounted, target)) == data


def test_concurrent_writers_at_different_offsets(mounted: Mounted, workdir: str, s3: Any) -> None:
    path = os.path.join(workdir, "shared.bin")
    chunk, per_writer, writers = 16_384, 32, 4
    write_file(path, bytes(chunk * per_writer * writers * 2))
    expected = bytearray(chunk * per_writer * writers * 2)

    def writer(number: int) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            for j in range(per_writer):
                os.pwrite(fd, bytes([number + 1]) * chunk, (number * per_writer + j) * chunk * 2)
        finally:
            os.close(fd)

    for number in range(writers):
        for j in range(per_writer):
            offset = (number * per_writer + j) * chunk * 2
            expected[offset : offset + chunk] = bytes([number + 1]) * chunk
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert read_file(path) == expected
    assert s3_get(s3, key_of(mounted, path)) == expected


def test_o_direct(workdir: str) -> None:
    path = os.path.join(workdir, "direct")
    buffer = mmap.mmap(-1, 8192)  # page-aligned, as O_DIRECT wants
    buffer.write(b"d" * 8192)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o644)
    try:
        assert os.write(fd, buffer) == 8192
    finally:
        os.close(fd)
    assert read_file(path) == b"d" * 8192


def test_flock_is_exclusive(workdir: str) -> None:
    path = os.path.join(workdir, "locked")
    write_file(path, b"l")
    first, second = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert errno_of(lambda: fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)) in (
            errno.EAGAIN,
            errno.EWOULDBLOCK,
        )
        fcntl.flock(first, fcntl.LOCK_UN)
        fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(first)
        os.close(second)
