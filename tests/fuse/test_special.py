"""Symlinks, fifos, device nodes, sockets and hard links through the mount:
each is an object carrying its mode (and rdev, target, link group), and the
kernel treats it as what it is."""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
from typing import Any

import pytest
from fuse_node import Mounted
from mount_helpers import (
    errno_of,
    key_of,
    prefix_of,
    read_file,
    s3_get,
    s3_missing,
    s3_objects,
    write_file,
)


def test_symlink(mounted: Mounted, workdir: str, s3: Any) -> None:
    target = os.path.join(workdir, "target.txt")
    write_file(target, b"pointed at")
    link = os.path.join(workdir, "link")
    os.symlink("target.txt", link)
    assert os.readlink(link) == "target.txt"
    info = os.lstat(link)
    assert stat.S_ISLNK(info.st_mode)
    assert info.st_size == len("target.txt")
    assert stat.S_ISREG(os.stat(link).st_mode)  # stat follows it
    assert read_file(link) == b"pointed at"
    assert os.path.islink(link)
    assert s3_get(s3, key_of(mounted, link)) == b"target.txt"  # S3: the target as bytes
    # a dangling one, an absolute one, one to a directory
    os.symlink("nowhere", os.path.join(workdir, "dangling"))
    assert errno_of(lambda: os.stat(os.path.join(workdir, "dangling"))) == errno.ENOENT
    assert os.readlink(os.path.join(workdir, "dangling")) == "nowhere"
    os.symlink("/etc/hostname", os.path.join(workdir, "absolute"))
    assert os.readlink(os.path.join(workdir, "absolute")) == "/etc/hostname"
    os.mkdir(os.path.join(workdir, "d"))
    os.symlink("d", os.path.join(workdir, "to-d"))
    write_file(os.path.join(workdir, "to-d", "through"), b"via the link")
    assert read_file(os.path.join(workdir, "d", "through")) == b"via the link"
    # readlink of what is not a link; a link over an existing name
    assert errno_of(lambda: os.readlink(target)) == errno.EINVAL
    assert errno_of(lambda: os.symlink("x", target)) == errno.EEXIST
    # unlink removes the link, not its target
    os.unlink(link)
    assert not os.path.lexists(link)
    assert read_file(target) == b"pointed at"


def test_symlink_long_and_unicode_targets(workdir: str) -> None:
    long_target = "/".join(["segment-" + "x" * 50] * 60)  # ~3.5 KiB
    os.symlink(long_target, os.path.join(workdir, "long"))
    assert os.readlink(os.path.join(workdir, "long")) == long_target
    os.symlink("ünï €", os.path.join(workdir, "unicode"))
    assert os.readlink(os.path.join(workdir, "unicode")) == "ünï €"


def test_symlink_survives_rename(workdir: str) -> None:
    os.symlink("somewhere/else", os.path.join(workdir, "a"))
    os.rename(os.path.join(workdir, "a"), os.path.join(workdir, "b"))
    assert os.readlink(os.path.join(workdir, "b")) == "somewhere/else"
    assert stat.S_ISLNK(os.lstat(os.path.join(workdir, "b")).st_mode)


def test_fifo(mounted: Mounted, workdir: str, s3: Any) -> None:
    path = os.path.join(workdir, "pipe")
    os.mkfifo(path, 0o640)
    info = os.stat(path)
    assert stat.S_ISFIFO(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o640
    received: list[bytes] = []

    def reader() -> None:
        with open(path, "rb") as pipe:
            received.append(pipe.read())

    thread = threading.Thread(target=reader)
    thread.start()
    with open(path, "wb") as pipe:  # blocks until the reader opens: a real fifo
        pipe.write(b"through the pipe")
    thread.join(10)
    assert received == [b"through the pipe"]
    assert key_of(mounted, path) in s3_objects(s3, prefix_of(workdir))
    assert errno_of(lambda: os.mkfifo(path)) == errno.EEXIST
    os.unlink(path)
    assert s3_missing(s3, key_of(mounted, path))


@pytest.mark.skipif(os.geteuid() != 0, reason="device nodes need root (CAP_MKNOD)")
@pytest.mark.parametrize(
    ("kind", "major", "minor"),
    [(stat.S_IFCHR, 1, 3), (stat.S_IFBLK, 7, 200), (stat.S_IFCHR, 259, 70000)],
)
def test_device_nodes(
    mounted: Mounted, workdir: str, s3: Any, kind: int, major: int, minor: int
) -> None:
    path = os.path.join(workdir, "dev")
    os.mknod(path, kind | 0o600, os.makedev(major, minor))
    info = os.lstat(path)
    assert stat.S_IFMT(info.st_mode) == kind
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert (os.major(info.st_rdev), os.minor(info.st_rdev)) == (major, minor)
    assert info.st_size == 0
    os.rename(path, path + "-renamed")
    assert os.lstat(path + "-renamed").st_rdev == os.makedev(major, minor)
    assert key_of(mounted, path) + "-renamed" in s3_objects(s3, prefix_of(workdir))


def test_mknod_regular_file(workdir: str) -> None:
    path = os.path.join(workdir, "plain")
    os.mknod(path, stat.S_IFREG | 0o604)
    info = os.stat(path)
    assert stat.S_ISREG(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o604
    assert info.st_size == 0
    write_file(path, b"usable")
    assert read_file(path) == b"usable"


def test_unix_socket(mounted: Mounted, workdir: str, s3: Any) -> None:
    path = os.path.join(workdir, "sock")
    assert len(path) < 100, "AF_UNIX paths are at most 107 bytes"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(path)
        server.listen(1)
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            connection, _ = server.accept()
            with connection:
                client.sendall(b"hello over the mount")
                assert connection.recv(100) == b"hello over the mount"
    finally:
        server.close()
    assert key_of(mounted, path) in s3_objects(s3, prefix_of(workdir))
    os.unlink(path)
    assert not os.path.lexists(path)


def test_readdir_types_of_special_files(workdir: str) -> None:
    os.mkfifo(os.path.join(workdir, "fifo"))
    os.symlink("x", os.path.join(workdir, "link"))
    if os.geteuid() == 0:
        os.mknod(os.path.join(workdir, "chr"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    with os.scandir(workdir) as entries:
        modes = {
            entry.name: stat.S_IFMT(entry.stat(follow_symlinks=False).st_mode) for entry in entries
        }
        # scandir's own d_type too
    with os.scandir(workdir) as entries:
        links = {entry.name: entry.is_symlink() for entry in entries}
    assert modes["fifo"] == stat.S_IFIFO
    assert modes["link"] == stat.S_IFLNK
    assert links == {name: name == "link" for name in modes}
    if os.geteuid() == 0:
        assert modes["chr"] == stat.S_IFCHR


def test_hard_links(mounted: Mounted, workdir: str, s3: Any) -> None:
    first, second = os.path.join(workdir, "first"), os.path.join(workdir, "second")
    write_file(first, b"shared bytes")
    os.link(first, second)
    a, b = os.stat(first), os.stat(second)
    assert a.st_ino == b.st_ino
    assert (a.st_nlink, b.st_nlink) == (2, 2)
    with open(second, "r+b") as file:  # a write through one name shows through the other
        file.write(b"SHARED")
    assert read_file(first) == b"SHARED bytes"
    assert s3_get(s3, key_of(mounted, first)) == b"SHARED bytes"
    assert s3_get(s3, key_of(mounted, second)) == b"SHARED bytes"
    os.chmod(first, 0o600)
    assert stat.S_IMODE(os.stat(second).st_mode) == 0o600
    os.unlink(first)
    assert os.stat(second).st_nlink == 1
    assert read_file(second) == b"SHARED bytes"
    assert s3_missing(s3, key_of(mounted, first))
    assert errno_of(lambda: os.link(workdir, os.path.join(workdir, "dirlink"))) == errno.EPERM
    assert errno_of(lambda: os.link(second, second)) == errno.EEXIST
