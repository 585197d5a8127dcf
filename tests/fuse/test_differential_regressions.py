"""Divergences from ext4 the differential test (test_differential.py) found.

Each test is the shrunk syscall sequence of one bug, run on a fresh directory on
the local ext4 disk and on a fresh directory in the mount: the answers must be
the same. Tests of bugs not fixed yet are xfail(strict=True): fixing the bug
makes them pass, and then the xfail must go (with the narrowing of the rule in
the state machine that names the test).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fuse_node import WORK_DIR
from mount_helpers import write_file
from test_differential import RENAME_EXCHANGE, renameat2


@pytest.fixture
def local() -> Iterator[str]:
    """A fresh directory on the local disk (ext4), the reference."""
    os.makedirs(WORK_DIR, exist_ok=True)
    path = tempfile.mkdtemp(prefix="reg-", dir=WORK_DIR)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def outcome(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, exc.errno)


def same_on_both(scenario: Callable[[str], Any], mount: str, local: str) -> None:
    expected = scenario(local)
    assert scenario(mount) == expected


def test_open_rdonly_trunc_truncates(workdir: str, local: str) -> None:
    """open(O_RDONLY|O_TRUNC) kept the bytes; Linux truncates, and the kernel (with
    atomic_o_trunc) already believed the file empty. Fixed in 4a5bfbf."""

    def scenario(root: str) -> Any:
        path = os.path.join(root, "a")
        write_file(path, b"x")
        fd = os.open(path, os.O_RDONLY | os.O_TRUNC)
        try:
            size_seen = os.fstat(fd).st_size
        finally:
            os.close(fd)
        return size_seen, os.stat(path).st_size  # ext4: (0, 0)

    same_on_both(scenario, workdir, local)


def test_utime_atime_zero_is_kept(workdir: str, local: str) -> None:
    """An atime of 0 (the epoch) read back as the mtime (0 counted as unset). Fixed
    in 86b3d23."""

    def scenario(root: str) -> Any:
        path = os.path.join(root, "a")
        write_file(path, b"")
        os.utime(path, ns=(0, 1))
        info = os.stat(path)
        return info.st_atime_ns, info.st_mtime_ns  # ext4: (0, 1)

    same_on_both(scenario, workdir, local)


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_utime_mtime_zero_is_kept(workdir: str, local: str, kind: str) -> None:
    """An mtime of 0 (the epoch) read back as the object's own time, now (0 meant
    "not set apart"). Fixed in f5bbbd8."""

    def scenario(root: str) -> Any:
        path = os.path.join(root, "a")
        if kind == "dir":
            os.mkdir(path)
        else:
            write_file(path, b"")
        os.utime(path, ns=(1, 0))
        info = os.stat(path)
        return info.st_atime_ns, info.st_mtime_ns  # ext4: (1, 0)

    same_on_both(scenario, workdir, local)


@pytest.mark.parametrize("access", [os.O_WRONLY, os.O_RDONLY], ids=["wronly", "rdonly"])
def test_open_trunc_of_empty_file_moves_mtime(workdir: str, local: str, access: int) -> None:
    """open(O_TRUNC) of an empty file left its mtime and ctime (it truncated only when
    the size was not 0). Fixed in 3879652."""

    def scenario(root: str) -> Any:
        path = os.path.join(root, "a")
        write_file(path, b"")
        os.utime(path, ns=(1, 1))  # a time in the past: any change moves it to now
        os.close(os.open(path, access | os.O_TRUNC))
        return os.stat(path).st_mtime_ns != 1  # ext4: True (moved)

    same_on_both(scenario, workdir, local)


def test_write_moves_mtime_before_close(workdir: str, local: str) -> None:
    """After write() returned, stat and fstat showed the old mtime until the handle's
    gathered writes were stored (close, fsync). Fixed in 819908c."""

    def scenario(root: str) -> Any:
        path = os.path.join(root, "a")
        write_file(path, b"abc")
        os.utime(path, ns=(1, 1))  # a time in the past: any change moves it to now
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, b"x", 1)
            moved = os.stat(path).st_mtime_ns != 1, os.fstat(fd).st_mtime_ns != 1
        finally:
            os.close(fd)
        return moved  # ext4: (True, True)

    same_on_both(scenario, workdir, local)


# Keep this test last in the module: if the bug came back, the rename would never
# return, and the handler would hold the file (and the kernel the directory) until
# the module's node stops, which ends the call with ENOTCONN.
def test_exchange_dir_with_link_of_open_file_inside(workdir: str, local: str) -> None:
    """renameat2(RENAME_EXCHANGE) of a directory holding an open file with the file's
    other hard link never returned: the handler took the file's Semaphore(1) once per
    name and waited for itself (and the file's flush and close behind it). Fixed in
    e640aa2."""

    def scenario(root: str) -> Any:
        os.mkdir(os.path.join(root, "a"))
        write_file(os.path.join(root, "a", "x"), b"x")
        os.link(os.path.join(root, "a", "x"), os.path.join(root, "b"))
        fd = os.open(os.path.join(root, "b"), os.O_RDWR)
        done: list[Any] = []

        def exchange() -> None:
            done.append(
                outcome(
                    lambda: renameat2(
                        os.path.join(root, "a"), os.path.join(root, "b"), RENAME_EXCHANGE
                    )
                )
            )

        caller = threading.Thread(target=exchange, daemon=True)
        caller.start()
        caller.join(3)
        if caller.is_alive():
            return "no answer in 3 s"  # fd stays open: closing it would hang as well
        os.close(fd)
        return done[0], sorted(os.listdir(root)), sorted(os.listdir(os.path.join(root, "b")))

    same_on_both(scenario, workdir, local)  # ext4: (None, ['a', 'b'], ['x'])
