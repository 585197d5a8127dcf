"""rename(2) through the mount: files and whole directories, one atomic core
record each (never a copy), the inode number kept, and the POSIX replace rules."""

from __future__ import annotations

import errno
import hashlib
import os
import time
from typing import Any

import pytest
from fuse_node import BUCKET, Mounted
from mount_helpers import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    errno_of,
    key_of,
    listing_client,
    prefix_of,
    put_many,
    read_file,
    renameat2,
    s3_get,
    s3_missing,
    s3_objects,
    write_file,
)


def test_rename_file_keeps_inode_and_bytes(mounted: Mounted, workdir: str, s3: Any) -> None:
    old, new = os.path.join(workdir, "old.bin"), os.path.join(workdir, "new.bin")
    data = os.urandom(200_000)
    write_file(old, data)
    ino = os.stat(old).st_ino
    etag = s3.head_object(Bucket=BUCKET, Key=key_of(mounted, old))["ETag"]
    os.rename(old, new)
    assert os.stat(new).st_ino == ino
    assert not os.path.exists(old)
    assert os.listdir(workdir) == ["new.bin"]
    assert read_file(new) == data
    assert s3_missing(s3, key_of(mounted, old))
    assert s3.head_object(Bucket=BUCKET, Key=key_of(mounted, new))["ETag"] == etag
    assert s3_get(s3, key_of(mounted, new)) == data


def test_rename_into_another_directory(mounted: Mounted, workdir: str, s3: Any) -> None:
    os.mkdir(os.path.join(workdir, "a"))
    os.mkdir(os.path.join(workdir, "b"))
    source, target = os.path.join(workdir, "a", "f"), os.path.join(workdir, "b", "g")
    write_file(source, b"moving")
    ino = os.stat(source).st_ino
    os.rename(source, target)
    assert os.stat(target).st_ino == ino
    assert os.listdir(os.path.join(workdir, "a")) == []
    assert os.listdir(os.path.join(workdir, "b")) == ["g"]
    assert set(s3_objects(s3, prefix_of(workdir))) == {
        prefix_of(workdir),
        prefix_of(workdir) + "a/",
        prefix_of(workdir) + "b/",
        prefix_of(workdir) + "b/g",
    }


def test_rename_over_an_existing_file(mounted: Mounted, workdir: str, s3: Any) -> None:
    source, target = os.path.join(workdir, "src"), os.path.join(workdir, "dst")
    write_file(source, b"source bytes")
    write_file(target, b"the target, replaced")
    ino = os.stat(source).st_ino
    os.rename(source, target)
    assert os.stat(target).st_ino == ino
    assert read_file(target) == b"source bytes"
    assert os.listdir(workdir) == ["dst"]
    assert s3_get(s3, key_of(mounted, target)) == b"source bytes"
    assert s3_missing(s3, key_of(mounted, source))


def test_rename_over_an_open_file(mounted: Mounted, workdir: str, s3: Any) -> None:
    """The replaced file lives on for whoever has it open."""
    source, target = os.path.join(workdir, "src"), os.path.join(workdir, "dst")
    write_file(source, b"new content")
    write_file(target, b"old content")
    fd = os.open(target, os.O_RDWR)
    try:
        os.rename(source, target)
        assert os.pread(fd, 100, 0) == b"old content"
        assert os.fstat(fd).st_nlink == 0
        os.pwrite(fd, b"OLD", 0)
        assert os.pread(fd, 100, 0) == b"OLD content"
    finally:
        os.close(fd)
    assert read_file(target) == b"new content"
    assert s3_get(s3, key_of(mounted, target)) == b"new content"


def test_rename_an_open_file_then_write(mounted: Mounted, workdir: str, s3: Any) -> None:
    source, target = os.path.join(workdir, "writing"), os.path.join(workdir, "renamed")
    fd = os.open(source, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"before ")
        os.rename(source, target)
        os.write(fd, b"after")
    finally:
        os.close(fd)
    assert read_file(target) == b"before after"
    assert s3_get(s3, key_of(mounted, target)) == b"before after"
    assert s3_missing(s3, key_of(mounted, source))


def make_tree(root: str) -> dict[str, bytes]:
    """A small non-empty tree under `root`: relative path -> bytes ("" values: dirs)."""
    files = {
        "a.txt": b"a",
        "sub/b.bin": os.urandom(150_000),
        "sub/deeper/c": b"c" * 10,
        "empty/": b"",
    }
    for relative, data in files.items():
        path = os.path.join(root, relative)
        if relative.endswith("/"):
            os.makedirs(path)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_file(path, data)
    return files


def test_rename_a_non_empty_directory(mounted: Mounted, workdir: str, s3: Any) -> None:
    source, target = os.path.join(workdir, "src"), os.path.join(workdir, "dst")
    os.mkdir(source)
    files = make_tree(source)
    inodes = {name: os.stat(os.path.join(source, name)).st_ino for name in files}
    dir_ino = os.stat(source).st_ino
    before = s3_objects(s3, key_of(mounted, source) + "/")
    os.rename(source, target)
    assert not os.path.exists(source)
    assert os.stat(target).st_ino == dir_ino
    for name, data in files.items():
        path = os.path.join(target, name)
        assert os.stat(path).st_ino == inodes[name]
        if not name.endswith("/"):
            assert read_file(path) == data
    after = s3_objects(s3, key_of(mounted, target) + "/")
    assert s3_objects(s3, key_of(mounted, source) + "/") == {}
    old, new = key_of(mounted, source) + "/", key_of(mounted, target) + "/"
    assert sorted(after) == sorted(new + key[len(old) :] for key in before)
    for key, item in before.items():  # the same objects under new names, not copies
        assert after[new + key[len(old) :]]["ETag"] == item["ETag"]
        assert after[new + key[len(old) :]]["Size"] == item["Size"]


def test_rename_directory_with_an_open_file_inside(mounted: Mounted, workdir: str, s3: Any) -> None:
    source, target = os.path.join(workdir, "d1"), os.path.join(workdir, "d2")
    os.mkdir(source)
    fd = os.open(os.path.join(source, "f"), os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"one ")
        os.rename(source, target)
        os.write(fd, b"two")
    finally:
        os.close(fd)
    assert read_file(os.path.join(target, "f")) == b"one two"
    assert s3_get(s3, key_of(mounted, target) + "/f") == b"one two"
    assert s3_objects(s3, key_of(mounted, source) + "/") == {}


def test_rename_directory_over_an_empty_directory(mounted: Mounted, workdir: str, s3: Any) -> None:
    source, target = os.path.join(workdir, "full"), os.path.join(workdir, "empty")
    os.mkdir(source)
    write_file(os.path.join(source, "x"), b"x")
    os.mkdir(target)
    os.rename(source, target)
    assert os.listdir(workdir) == ["empty"]
    assert read_file(os.path.join(target, "x")) == b"x"
    assert set(s3_objects(s3, prefix_of(workdir))) == {
        prefix_of(workdir),
        prefix_of(workdir) + "empty/",
        prefix_of(workdir) + "empty/x",
    }


def test_rename_directory_over_a_non_empty_directory(workdir: str) -> None:
    source, target = os.path.join(workdir, "a"), os.path.join(workdir, "b")
    os.mkdir(source)
    os.mkdir(target)
    write_file(os.path.join(source, "in-a"), b"a")
    write_file(os.path.join(target, "in-b"), b"b")
    assert errno_of(lambda: os.rename(source, target)) in (errno.ENOTEMPTY, errno.EEXIST)
    assert os.listdir(source) == ["in-a"]
    assert os.listdir(target) == ["in-b"]


def test_rename_kind_mismatches(workdir: str) -> None:
    d, f = os.path.join(workdir, "d"), os.path.join(workdir, "f")
    os.mkdir(d)
    write_file(f, b"f")
    assert errno_of(lambda: os.rename(f, d)) == errno.EISDIR
    assert errno_of(lambda: os.rename(d, f)) == errno.ENOTDIR
    assert os.path.isdir(d)
    assert read_file(f) == b"f"


def test_rename_directory_into_itself(workdir: str) -> None:
    d = os.path.join(workdir, "d")
    os.makedirs(os.path.join(d, "sub"))
    assert errno_of(lambda: os.rename(d, os.path.join(d, "sub", "inside"))) == errno.EINVAL
    assert errno_of(lambda: os.rename(d, os.path.join(d, "inside"))) == errno.EINVAL
    assert os.listdir(d) == ["sub"]


def test_rename_other_cases(mounted: Mounted, workdir: str, s3: Any) -> None:
    f = os.path.join(workdir, "f")
    write_file(f, b"same")
    os.rename(f, f)  # to itself: nothing happens
    assert read_file(f) == b"same"
    missing = os.path.join(workdir, "missing")
    assert errno_of(lambda: os.rename(missing, f)) == errno.ENOENT
    nowhere = os.path.join(workdir, "no", "f")
    assert errno_of(lambda: os.rename(f, nowhere)) == errno.ENOENT
    assert errno_of(lambda: os.rename(f, os.path.join(f, "x"))) == errno.ENOTDIR
    assert s3_get(s3, key_of(mounted, f)) == b"same"


def test_rename_noreplace(mounted: Mounted, workdir: str, s3: Any) -> None:
    a, b, c = (os.path.join(workdir, name) for name in "abc")
    write_file(a, b"a")
    write_file(b, b"b")
    assert errno_of(lambda: renameat2(a, b, RENAME_NOREPLACE)) == errno.EEXIST
    assert read_file(a) == b"a"
    assert read_file(b) == b"b"
    renameat2(a, c, RENAME_NOREPLACE)
    assert sorted(os.listdir(workdir)) == ["b", "c"]
    assert s3_get(s3, key_of(mounted, c)) == b"a"


def test_rename_exchange_swaps_two_files(mounted: Mounted, workdir: str, s3: Any) -> None:
    a, b = os.path.join(workdir, "a"), os.path.join(workdir, "b")
    write_file(a, b"bytes of a")
    write_file(b, b"bytes of b")
    ino_a, ino_b = os.stat(a).st_ino, os.stat(b).st_ino
    renameat2(a, b, RENAME_EXCHANGE)
    assert (read_file(a), read_file(b)) == (b"bytes of b", b"bytes of a")
    assert (os.stat(a).st_ino, os.stat(b).st_ino) == (ino_b, ino_a)  # the inodes swap names
    assert s3_get(s3, key_of(mounted, a)) == b"bytes of b"
    assert s3_get(s3, key_of(mounted, b)) == b"bytes of a"


def test_rename_exchange_swaps_a_directory_and_a_file(
    mounted: Mounted, workdir: str, s3: Any
) -> None:
    d, f = os.path.join(workdir, "d"), os.path.join(workdir, "f")
    os.mkdir(d)
    write_file(os.path.join(d, "inside"), b"inside")
    write_file(f, b"a file")
    renameat2(d, f, RENAME_EXCHANGE)
    assert os.path.isfile(d)
    assert read_file(d) == b"a file"
    assert os.path.isdir(f)
    assert read_file(os.path.join(f, "inside")) == b"inside"
    assert set(s3_objects(s3, prefix_of(workdir))) == {
        prefix_of(workdir),
        prefix_of(workdir) + "d",
        prefix_of(workdir) + "f/",
        prefix_of(workdir) + "f/inside",
    }
    missing = os.path.join(workdir, "missing")
    assert errno_of(lambda: renameat2(d, missing, RENAME_EXCHANGE)) == errno.ENOENT


def test_rename_exchange_swaps_two_non_empty_directories(workdir: str) -> None:
    one, two = os.path.join(workdir, "one"), os.path.join(workdir, "two")
    os.makedirs(os.path.join(one, "sub"))
    write_file(os.path.join(one, "sub", "x"), b"x")
    os.mkdir(two)
    write_file(os.path.join(two, "y"), b"y")
    renameat2(one, two, RENAME_EXCHANGE)
    assert os.listdir(one) == ["y"]
    assert os.listdir(two) == ["sub"]
    assert read_file(os.path.join(two, "sub", "x")) == b"x"
    assert errno_of(lambda: renameat2(one, os.path.join(one, "y"), RENAME_EXCHANGE)) == (
        errno.EINVAL
    )


@pytest.mark.parametrize("count", [10_000])
def test_rename_a_directory_of_many_files(
    mounted: Mounted, workdir: str, s3: Any, count: int
) -> None:
    """10,000 objects move with one rename: at once, every new key listed by S3
    right after, no old one, the same objects (ETags), in well under a second."""
    prefix = prefix_of(workdir)
    names = [f"file-{i:05d}.txt" for i in range(count)]
    put_many(mounted, ((prefix + "many/" + name, name.encode()) for name in names))
    big = os.urandom(4 * 1024 * 1024)  # one object on the devices, not inline
    s3.put_object(Bucket=BUCKET, Key=prefix + "many/big.bin", Body=big)
    names.append("big.bin")
    lister = listing_client(mounted)
    free_before = mounted.node.store.statistics().free_bytes
    source, target = os.path.join(workdir, "many"), os.path.join(workdir, "moved")
    os.stat(source)
    started = time.perf_counter()
    os.rename(source, target)
    elapsed = time.perf_counter() - started
    print(f"rename of a directory of {count} files: {elapsed * 1000:.1f} ms")
    assert s3_objects(lister, prefix + "many/") == {}
    after = s3_objects(lister, prefix + "moved/")
    assert sorted(after) == sorted(prefix + "moved/" + name for name in names)
    for name in names[:-1]:  # each object's own ETag (the MD5 of its bytes, its name)
        etag = after[prefix + "moved/" + name]["ETag"]
        assert etag == f'"{hashlib.md5(name.encode()).hexdigest()}"'
    assert after[prefix + "moved/big.bin"]["ETag"] == f'"{hashlib.md5(big).hexdigest()}"'
    # not a copy: no byte was written to the devices
    assert mounted.node.store.statistics().free_bytes == free_before
    assert elapsed < 5.0  # generous: a loaded machine; the promise itself is tested below
    assert len(os.listdir(target)) == count + 1
    assert not os.path.exists(source)
    assert read_file(os.path.join(target, names[1234])) == names[1234].encode()
    assert read_file(os.path.join(target, "big.bin")) == big


def deep_file(workdir: str, top: str, key_bytes: int) -> str:
    """A file under workdir/top, three 250-byte directories down, whose key is
    `key_bytes` long."""
    path = os.path.join(workdir, top)
    for letter in "abc":
        path = os.path.join(path, letter * 250)
    os.makedirs(path)
    key_length = len(os.path.join(os.path.basename(workdir), os.path.relpath(path, workdir)))
    path = os.path.join(path, "f" * (key_bytes - key_length - 1))
    write_file(path, b"deep")
    return path


def test_rename_refuses_keys_longer_than_s3_allows(mounted: Mounted, workdir: str, s3: Any) -> None:
    path = deep_file(workdir, "x", 1018)
    assert len(key_of(mounted, path)) == 1018
    long_name = os.path.join(workdir, "y" * 200)
    assert errno_of(lambda: os.rename(os.path.join(workdir, "x"), long_name)) == errno.ENAMETOOLONG
    assert read_file(path) == b"deep"
    assert max(len(key) for key in s3_objects(s3, prefix_of(workdir))) <= 1024
