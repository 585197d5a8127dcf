"""The mount against ext4: the same random syscalls on both, the same answers.

A hypothesis state machine (issue 5, Must show) drives random sequences of
create / open / write / append / truncate / read / rename (and renameat2's
NOREPLACE and EXCHANGE) / link / unlink / mkdir / rmdir / chmod / chown /
utimens / symlink / readlink / mkfifo / *xattr, and files held open across them,
through two roots: a fresh directory in the mount and a fresh directory on the
local ext4 disk under WORK_DIR (not tmpfs). Every call must give the same
return value or the same errno on both; after every step the two trees must
match: names per directory, what every name of the pool resolves to, file
type, mode bits, link counts, owners, extended attributes, sizes, bytes and
symlink targets; and an mtime utime set moves on both sides or on neither.

What is deliberately not compared, and why:
- atime: ext4 moves it on reads (relatime), the mount keeps it as set.
- mtime/ctime values in general: two clocks. An mtime set by utime (a time that
  is not now) is compared: each call must move it on both sides or on neither
  (`set_times_move_alike`), which checks when calls move times without
  comparing clocks.
- directory sizes: ext4 counts blocks (4096), the mount says 0.
- a fifo's mtime: writes through a fifo move it on ext4, but on any FUSE mount the
  kernel's pipe carries the bytes and the filesystem never hears of them.

Names come from a small pool (NAMES, depth <= 3) so that collisions, renames
over existing entries and non-empty directories happen all the time. The pool
mixes names that sort before and after "/" ("a.b" < "a/" < "a0"): the mount
maps directories to key prefixes, where such neighbours are a classic trap.

Runs of the default setting are derandomized (the same examples every time);
`OBJFS_DIFF_EXAMPLES=1000` runs that many fresh random examples (bug hunting),
`OBJFS_DIFF_STEPS` changes the steps per example. Bugs it found have
deterministic reproductions in test_differential_regressions.py.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from fuse_node import WORK_DIR, Mounted
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

# Hard links: off, the link rule is left out (objfs answered link() with EOPNOTSUPP
# before they landed, which only ever differed from ext4's success).
HARD_LINKS = True

# The rules are narrowed around bugs found (and kept as xfail regressions in
# test_differential_regressions.py) so that this test passes; OBJFS_DIFF_KNOWN_BUGS=1
# lifts the narrowing, to check fixes or hunt on.
KNOWN_BUGS = os.environ.get("OBJFS_DIFF_KNOWN_BUGS", "") not in ("", "0")

NAMES = ("a", "a.b", "a0", "b")
MAX_DEPTH = 3
MAX_HELD = 3  # files held open across calls at once

EXAMPLES = int(os.environ.get("OBJFS_DIFF_EXAMPLES", "0"))  # 0: the default, fixed run
STEPS = int(os.environ.get("OBJFS_DIFF_STEPS", "30"))
DEFAULT_EXAMPLES = 60

# Every open is non-blocking: a fifo (mkfifo) would otherwise wait for its other end
# forever. On regular files O_NONBLOCK changes nothing.
NONBLOCK = os.O_NONBLOCK

Outcome = tuple[str, Any]  # ("ok", return value) or ("error", errno name)

# -- strategies ---------------------------------------------------------------------

paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=MAX_DEPTH).map("/".join)
modes = st.one_of(st.sampled_from([0o644, 0o755, 0o600, 0o444, 0o000]), st.integers(0, 0o7777))
offsets = st.one_of(st.integers(0, 300), st.sampled_from([4095, 4096, 65536, 1 << 20]))
chunks = st.binary(min_size=1, max_size=64)
owners = st.sampled_from([-1, 0, 1000, 65534])
# Extended attribute names: plain user.* ones (the mount keeps them as S3 metadata),
# and ones it must encode (upper case, a dot or colon, another namespace).
xattr_names = st.sampled_from(["user.a", "user.B", "user.a.b", "user.x:y", "trusted.t"])
xattr_values = st.one_of(st.sampled_from([b"", b"v", b"V 2"]), st.binary(max_size=24))
xattr_flags = st.sampled_from([0, os.XATTR_CREATE, os.XATTR_REPLACE])
access_modes = st.sampled_from([os.O_RDONLY, os.O_WRONLY, os.O_RDWR])
# Times utime sets: nanoseconds, 1970 to 2106 (ext4's 256-byte inodes and FUSE both
# hold them), including pre-1970 ones.
times_ns = st.one_of(
    st.integers(0, (1 << 32) * 10**9 - 1),
    st.integers(-(10**18), -1),
    st.sampled_from([0, 1, 10**9, 1_700_000_000_123_456_789]),
)
fd_steps = st.one_of(
    st.tuples(st.just("pwrite"), offsets, chunks),
    st.tuples(st.just("write"), chunks),
    st.tuples(st.just("pread"), offsets, st.integers(0, 400)),
    st.tuples(st.just("ftruncate"), offsets),
    st.tuples(st.just("fstat")),
    st.tuples(st.just("fsync")),
)
session_steps = st.lists(
    st.one_of(
        fd_steps,
        st.tuples(st.just("unlink")),
        st.tuples(st.just("rename"), st.just("")),  # the new name: drawn in the rule
        st.tuples(st.just("rename_top"), st.just("")),  # of the file's top directory
        st.tuples(st.just("stat")),  # by path, while the handle may hold unstored writes
        st.tuples(st.just("read_again")),  # through a second open of the path
        st.tuples(st.just("write_again"), offsets, chunks),
    ),
    min_size=1,
    max_size=6,
)


def attempt(action: Callable[[str], Any], path: str) -> Outcome:
    """What `action(path)` returns, or the errno it fails with."""
    try:
        return ("ok", action(path))
    except OSError as exc:
        return ("error", errno.errorcode.get(exc.errno or 0, exc.errno))


def read_all(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | NONBLOCK)
    try:
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read()
    finally:
        os.close(fd)


def listdir_sorted(path: str) -> list[str]:
    return sorted(os.listdir(path))


def describe(path: str) -> tuple[Any, ...]:
    """What the name is, by everything that must be the same on both sides."""
    info = os.lstat(path)
    mode = oct(stat.S_IMODE(info.st_mode))
    xattrs = tuple(
        (name, os.getxattr(path, name, follow_symlinks=False))
        for name in sorted(os.listxattr(path, follow_symlinks=False))
    )
    common = (mode, info.st_nlink, info.st_uid, info.st_gid, xattrs)
    if stat.S_ISREG(info.st_mode):
        return ("file", *common, info.st_size, read_all(path))
    if stat.S_ISLNK(info.st_mode):
        return ("symlink", *common, info.st_size, os.readlink(path))
    if stat.S_ISDIR(info.st_mode):
        return ("dir", *common)  # no size: ext4 counts blocks, the mount says 0
    return ("other", oct(info.st_mode), *common[1:], info.st_size)


_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def renameat2(source: str, dest: str, flags: int) -> None:
    """renameat2(2), which os has no call for."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(dest), flags):
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))


def fd_call(fd: int, step: tuple[Any, ...]) -> Any:
    """One call on an open file: a step of `fd_steps`."""
    kind = step[0]
    if kind == "pwrite":
        return os.pwrite(fd, step[2], step[1])
    if kind == "write":
        return os.write(fd, step[1])
    if kind == "pread":
        return os.pread(fd, step[2], step[1])
    if kind == "ftruncate":
        return os.ftruncate(fd, step[1])
    if kind == "fstat":
        return fd_stat(fd)
    if kind == "fsync":
        return os.fsync(fd)
    raise AssertionError(kind)


def fd_stat(fd: int) -> tuple[int | None, int, str]:
    info = os.fstat(fd)
    size = None if stat.S_ISDIR(info.st_mode) else info.st_size  # a directory: as describe
    return size, info.st_nlink, oct(info.st_mode)


class Differential(RuleBasedStateMachine):
    """One example: a fresh root in the mount and one on ext4, the same calls on both."""

    def __init__(self, mount_parent: str, local_parent: str) -> None:
        super().__init__()
        name = "ex-" + uuid.uuid4().hex[:12]
        self.mount = os.path.join(mount_parent, name)
        self.local = os.path.join(local_parent, name)
        os.mkdir(self.mount)
        os.mkdir(self.local)
        # ext4 inode number -> the mtime_ns utime set, while no call has moved it.
        self.pinned: dict[int, int] = {}
        self.last = "nothing"  # the last call, for messages
        self.held: list[tuple[int, int, str]] = []  # (mount fd, ext4 fd, what) held open

    def teardown(self) -> None:
        for mount_fd, local_fd, _ in self.held:
            os.close(mount_fd)
            os.close(local_fd)
        shutil.rmtree(self.local)
        shutil.rmtree(self.mount)  # an rmtree the mount refuses is a finding too

    # -- running one call on both sides ----------------------------------------------

    def both(self, what: str, action: Callable[[str], Any]) -> Outcome:
        self.last = what
        mount = attempt(action, self.mount)
        local = attempt(action, self.local)
        assert mount == local, f"{what}: mount {mount!r} != ext4 {local!r}"
        return local

    # -- drawing names ----------------------------------------------------------------

    def pick(
        self,
        data: st.DataObject,
        label: str,
        *,
        fresh: int = 1,
        existing: int = 2,
        kind: str = "",
    ) -> str:
        """A path for a call, by weights: an entry that exists (on ext4), one of the
        `kind` the call wants ("file": a regular file, "dir"), a new name in a
        directory that exists; now and then any path of the pool."""
        entries, directories = self.local_entries()
        wanted = {"file": entries["file"], "dir": directories[1:], "": []}[kind]
        # Hypothesis favours (and shrinks towards) the first choices: the useful ones.
        choices = ["wanted"] * 3 * bool(wanted) + ["existing"] * existing * bool(entries["all"])
        choices += ["fresh"] * fresh + ["any"]
        how = data.draw(st.sampled_from(choices), label=f"{label} from")
        if how == "existing":
            return data.draw(st.sampled_from(entries["all"]), label=label)
        if how == "wanted":
            return data.draw(st.sampled_from(wanted), label=label)
        if how == "fresh":
            directory = data.draw(st.sampled_from(directories), label=f"{label} in")
            return os.path.join(directory, data.draw(st.sampled_from(NAMES), label=label))
        return data.draw(paths, label=label)

    def local_entries(self) -> tuple[dict[str, list[str]], list[str]]:
        """({"all": every name in the ext4 tree, "file": its regular files},
        directories up to MAX_DEPTH - 1 deep), as paths relative to the root ("" for
        the root itself)."""
        entries: dict[str, list[str]] = {"all": [], "file": []}
        directories = [""]
        for directory, dirnames, filenames in os.walk(self.local):
            rel = os.path.relpath(directory, self.local)
            rel = "" if rel == "." else rel
            for name in sorted(dirnames + filenames):
                path = os.path.join(rel, name)
                entries["all"].append(path)
                mode = os.lstat(os.path.join(directory, name)).st_mode
                if stat.S_ISREG(mode):
                    entries["file"].append(path)
                elif stat.S_ISDIR(mode) and path.count("/") + 1 < MAX_DEPTH:
                    directories.append(path)
        return entries, directories

    # -- files ------------------------------------------------------------------------

    @rule(
        data=st.data(),
        create=st.booleans(),
        exclusive=st.booleans(),
        truncate=st.booleans(),
        access=access_modes,
        mode=modes,
    )
    def open_close(
        self,
        data: st.DataObject,
        create: bool,
        exclusive: bool,
        truncate: bool,
        access: int,
        mode: int,
    ) -> None:
        path = self.pick(data, "path", fresh=3 if create else 1, kind="file")
        flags = access | (os.O_CREAT if create else 0) | (os.O_TRUNC if truncate else 0)
        if create and exclusive:
            flags |= os.O_EXCL

        def action(root: str) -> tuple[int | None, int, str]:
            fd = os.open(os.path.join(root, path), flags | NONBLOCK, mode)
            try:
                return fd_stat(fd)
            finally:
                os.close(fd)

        self.both(f"open({path!r}, {flags:#o}, {mode:#o})", action)

    @rule(data=st.data(), content=st.binary(max_size=300), mode=modes)
    def write_file(self, data: st.DataObject, content: bytes, mode: int) -> None:
        """What `echo > path` does: create or truncate, write, close."""
        path = self.pick(data, "path", fresh=3, kind="file")

        def action(root: str) -> int:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            fd = os.open(os.path.join(root, path), flags | NONBLOCK, mode)
            try:
                return os.write(fd, content)
            finally:
                os.close(fd)

        self.both(f"write_file({path!r}, {content!r}, {mode:#o})", action)

    @rule(data=st.data(), offset=offsets, chunk=chunks, rdwr=st.booleans())
    def write(self, data: st.DataObject, offset: int, chunk: bytes, rdwr: bool) -> None:
        path = self.pick(data, "path", kind="file")

        def action(root: str) -> int:
            fd = os.open(os.path.join(root, path), (os.O_RDWR if rdwr else os.O_WRONLY) | NONBLOCK)
            try:
                return os.pwrite(fd, chunk, offset)
            finally:
                os.close(fd)

        self.both(f"pwrite({path!r}, {chunk!r}, {offset})", action)

    @rule(data=st.data(), chunk=chunks)
    def append(self, data: st.DataObject, chunk: bytes) -> None:
        path = self.pick(data, "path", kind="file")

        def action(root: str) -> tuple[int, tuple[int | None, int, str]]:
            fd = os.open(os.path.join(root, path), os.O_WRONLY | os.O_APPEND | NONBLOCK)
            try:
                return os.write(fd, chunk), fd_stat(fd)
            finally:
                os.close(fd)

        self.both(f"append({path!r}, {chunk!r})", action)

    @rule(data=st.data(), size=offsets)
    def truncate(self, data: st.DataObject, size: int) -> None:
        path = self.pick(data, "path", kind="file")
        self.both(
            f"truncate({path!r}, {size})",
            lambda root: os.truncate(os.path.join(root, path), size),
        )

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        path = self.pick(data, "path", kind="file")
        self.both(f"read({path!r})", lambda root: read_all(os.path.join(root, path)))

    @rule(data=st.data(), create=st.booleans(), append=st.booleans(), steps=session_steps)
    def session(
        self, data: st.DataObject, create: bool, append: bool, steps: list[tuple[Any, ...]]
    ) -> None:
        """One open file through several calls: the handle's buffered writes, reads
        and truncates, and the file unlinked or renamed while open."""
        path = self.pick(data, "path", fresh=2 if create else 1, kind="file")
        steps = [
            (step[0], self.pick(data, "rename to", fresh=2))
            if step[0].startswith("rename")
            else step
            for step in steps
        ]
        flags = os.O_RDWR | (os.O_CREAT if create else 0) | (os.O_APPEND if append else 0)

        def action(root: str) -> list[Outcome]:
            fd = os.open(os.path.join(root, path), flags | NONBLOCK, 0o644)
            results: list[Outcome] = []
            try:
                for step in steps:
                    try:
                        results.append(("ok", self._step(root, path, fd, step)))
                    except OSError as exc:
                        results.append(("error", errno.errorcode.get(exc.errno or 0, exc.errno)))
            finally:
                os.close(fd)
            return results

        self.both(f"session({path!r}, {flags:#o}, {steps!r})", action)

    @staticmethod
    def _step(root: str, path: str, fd: int, step: tuple[Any, ...]) -> Any:
        kind = step[0]
        if kind == "unlink":
            return os.unlink(os.path.join(root, path))
        if kind == "rename":
            return os.rename(os.path.join(root, path), os.path.join(root, step[1]))
        if kind == "rename_top":  # the open file moves with its directory
            top = path.split("/")[0]
            return os.rename(os.path.join(root, top), os.path.join(root, step[1]))
        if kind == "stat":
            info = os.stat(os.path.join(root, path))
            size = None if stat.S_ISDIR(info.st_mode) else info.st_size
            return size, info.st_nlink, oct(info.st_mode)
        if kind == "read_again":
            return read_all(os.path.join(root, path))
        if kind == "write_again":
            other = os.open(os.path.join(root, path), os.O_WRONLY | NONBLOCK)
            try:
                return os.pwrite(other, step[2], step[1])
            finally:
                os.close(other)
        return fd_call(fd, step)

    # -- handles held open across calls -----------------------------------------------

    @precondition(lambda self: len(self.held) < MAX_HELD)
    @rule(data=st.data(), create=st.booleans(), append=st.booleans(), access=access_modes)
    def hold(self, data: st.DataObject, create: bool, append: bool, access: int) -> None:
        """Open a file on both sides and keep it open: the calls that follow (renames,
        unlinks, writes by path ...) run while the mount holds it."""
        path = self.pick(data, "path", fresh=2 if create else 1, kind="file")
        flags = access | (os.O_CREAT if create else 0) | (os.O_APPEND if append else 0)
        fds: list[int] = []

        def action(root: str) -> tuple[int | None, int, str]:
            fd = os.open(os.path.join(root, path), flags | NONBLOCK, 0o644)
            fds.append(fd)
            return fd_stat(fd)

        try:
            outcome = self.both(f"hold open({path!r}, {flags:#o})", action)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        if outcome[0] == "ok":
            self.held.append((fds[0], fds[1], f"{path!r} opened {flags:#o}"))

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data(), step=fd_steps)
    def use_held(self, data: st.DataObject, step: tuple[Any, ...]) -> None:
        which = data.draw(st.integers(0, len(self.held) - 1), label="handle")
        mount_fd, local_fd, what = self.held[which]
        fd_of = {self.mount: mount_fd, self.local: local_fd}
        self.both(f"{step!r} on the handle {what}", lambda root: fd_call(fd_of[root], step))

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        which = data.draw(st.integers(0, len(self.held) - 1), label="handle")
        mount_fd, local_fd, what = self.held.pop(which)
        fd_of = {self.mount: mount_fd, self.local: local_fd}
        self.both(f"close of the handle {what}", lambda root: os.close(fd_of[root]))

    # -- names ------------------------------------------------------------------------

    @rule(data=st.data())
    def rename(self, data: st.DataObject) -> None:
        source = self.pick(data, "source")
        dest = self.pick(data, "dest", fresh=2, existing=2)
        self.both(
            f"rename({source!r}, {dest!r})",
            lambda root: os.rename(os.path.join(root, source), os.path.join(root, dest)),
        )

    @rule(data=st.data(), exchange=st.booleans())
    def rename_flags(self, data: st.DataObject, exchange: bool) -> None:
        """renameat2 with RENAME_NOREPLACE or RENAME_EXCHANGE."""
        source = self.pick(data, "source")
        dest = self.pick(data, "dest", fresh=1, existing=3)
        flags = RENAME_EXCHANGE if exchange else RENAME_NOREPLACE
        self.both(
            f"renameat2({source!r}, {dest!r}, {'EXCHANGE' if exchange else 'NOREPLACE'})",
            lambda root: renameat2(os.path.join(root, source), os.path.join(root, dest), flags),
        )

    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        path = self.pick(data, "path", kind="file")
        self.both(f"unlink({path!r})", lambda root: os.unlink(os.path.join(root, path)))

    @rule(data=st.data(), mode=modes)
    def mkdir(self, data: st.DataObject, mode: int) -> None:
        path = self.pick(data, "path", fresh=3, existing=1)
        self.both(
            f"mkdir({path!r}, {mode:#o})",
            lambda root: os.mkdir(os.path.join(root, path), mode),
        )

    @rule(data=st.data())
    def rmdir(self, data: st.DataObject) -> None:
        path = self.pick(data, "path", kind="dir")
        self.both(f"rmdir({path!r})", lambda root: os.rmdir(os.path.join(root, path)))

    @rule(data=st.data(), slash=st.booleans())
    def symlink(self, data: st.DataObject, slash: bool) -> None:
        path = self.pick(data, "path", fresh=3, existing=1)
        # The target stays inside the root: relative, no "..", so it resolves the same
        # way on both sides and a create through a dangling link never lands outside.
        pointee = self.pick(data, "pointee", fresh=1, existing=2) + ("/" if slash else "")
        self.both(
            f"symlink({pointee!r}, {path!r})",
            lambda root: os.symlink(pointee, os.path.join(root, path)),
        )

    @rule(data=st.data(), mode=modes)
    def mkfifo(self, data: st.DataObject, mode: int) -> None:
        path = self.pick(data, "path", fresh=3, existing=1)
        self.both(
            f"mkfifo({path!r}, {mode:#o})",
            lambda root: os.mkfifo(os.path.join(root, path), mode),
        )

    @rule(data=st.data())
    def readlink(self, data: st.DataObject) -> None:
        path = self.pick(data, "path", kind="file")
        self.both(f"readlink({path!r})", lambda root: os.readlink(os.path.join(root, path)))

    @precondition(lambda self: HARD_LINKS)
    @rule(data=st.data())
    def link(self, data: st.DataObject) -> None:
        source = self.pick(data, "source", kind="file")
        dest = self.pick(data, "dest", fresh=3, existing=1)
        self.both(
            f"link({source!r}, {dest!r})",
            lambda root: os.link(os.path.join(root, source), os.path.join(root, dest)),
        )

    # -- attributes -------------------------------------------------------------------

    @rule(data=st.data(), mode=modes)
    def chmod(self, data: st.DataObject, mode: int) -> None:
        path = self.pick(data, "path")
        self.both(
            f"chmod({path!r}, {mode:#o})", lambda root: os.chmod(os.path.join(root, path), mode)
        )

    @rule(
        data=st.data(),
        name=xattr_names,
        value=xattr_values,
        flags=xattr_flags,
        follow=st.booleans(),
    )
    def setxattr(
        self, data: st.DataObject, name: str, value: bytes, flags: int, follow: bool
    ) -> None:
        path = self.pick(data, "path")
        self.both(
            f"setxattr({path!r}, {name!r}, {value!r}, {flags}, follow_symlinks={follow})",
            lambda root: os.setxattr(
                os.path.join(root, path), name, value, flags, follow_symlinks=follow
            ),
        )

    @rule(data=st.data(), name=xattr_names, follow=st.booleans())
    def getxattr(self, data: st.DataObject, name: str, follow: bool) -> None:
        path = self.pick(data, "path")
        self.both(
            f"getxattr({path!r}, {name!r}, follow_symlinks={follow})",
            lambda root: os.getxattr(os.path.join(root, path), name, follow_symlinks=follow),
        )

    @rule(data=st.data(), name=xattr_names, follow=st.booleans())
    def removexattr(self, data: st.DataObject, name: str, follow: bool) -> None:
        path = self.pick(data, "path")
        self.both(
            f"removexattr({path!r}, {name!r}, follow_symlinks={follow})",
            lambda root: os.removexattr(os.path.join(root, path), name, follow_symlinks=follow),
        )

    @rule(data=st.data(), follow=st.booleans())
    def listxattr(self, data: st.DataObject, follow: bool) -> None:
        path = self.pick(data, "path")
        self.both(
            f"listxattr({path!r}, follow_symlinks={follow})",
            lambda root: sorted(os.listxattr(os.path.join(root, path), follow_symlinks=follow)),
        )

    @rule(data=st.data(), uid=owners, gid=owners, follow=st.booleans())
    def chown(self, data: st.DataObject, uid: int, gid: int, follow: bool) -> None:
        """As root: any owner; -1 keeps one. The kernel drops setuid/setgid of a
        non-directory on chown, on both sides alike."""
        path = self.pick(data, "path")
        self.both(
            f"chown({path!r}, {uid}, {gid}, follow_symlinks={follow})",
            lambda root: os.chown(os.path.join(root, path), uid, gid, follow_symlinks=follow),
        )

    @rule(data=st.data(), atime=times_ns, mtime=times_ns, follow=st.booleans())
    def utime(self, data: st.DataObject, atime: int, mtime: int, follow: bool) -> None:
        on_root = data.draw(st.sampled_from([False, False, False, True]), label="on the root")
        path = "." if on_root else self.pick(data, "path")

        def action(root: str) -> tuple[int, int]:
            full = os.path.join(root, path)
            os.utime(full, ns=(atime, mtime), follow_symlinks=follow)
            info = os.stat(full, follow_symlinks=follow)
            return info.st_atime_ns, info.st_mtime_ns

        what = f"utime({path!r}, ns=({atime}, {mtime}), follow_symlinks={follow})"
        outcome = self.both(what, action)
        if outcome[0] == "ok":
            assert outcome[1] == (atime, mtime), f"{what}: ext4 keeps {outcome[1]}"
            info = os.stat(os.path.join(self.local, path), follow_symlinks=follow)
            # Not a fifo's: the bytes through a fifo never reach a FUSE filesystem (the
            # kernel's pipe carries them), so writes to it cannot move its time there.
            if not stat.S_ISFIFO(info.st_mode):
                self.pinned[info.st_ino] = mtime

    @rule(data=st.data())
    def utime_now(self, data: st.DataObject) -> None:
        path = self.pick(data, "path")
        self.both(f"utime({path!r})", lambda root: os.utime(os.path.join(root, path)))

    # -- the trees --------------------------------------------------------------------

    @invariant()
    def trees_match(self) -> None:
        mount, local = self.tree(self.mount), self.tree(self.local)
        if mount != local:
            differ = {
                rel: (mount.get(rel), local.get(rel))
                for rel in sorted(mount.keys() | local.keys())
                if mount.get(rel) != local.get(rel)
            }
            lines = "\n".join(
                f"  {rel!r}: mount {m!r}\n  {' ' * len(repr(rel))}  ext4  {e!r}"
                for rel, (m, e) in differ.items()
            )
            raise AssertionError(f"the trees differ:\n{lines}")

    def tree(self, root: str) -> dict[str, Any]:
        """rel -> what it is, for the root, the listing of every directory, and every
        name of the pool in every directory (lstat: phantom names show too)."""
        found: dict[str, Any] = {"": attempt(describe, root)}
        todo = [""]
        while todo:
            rel = todo.pop()
            listing = attempt(listdir_sorted, os.path.join(root, rel))
            found[rel + "/ (listing)"] = listing
            names = set(NAMES) | set(listing[1] if listing[0] == "ok" else ())
            for name in sorted(names):
                child = os.path.join(rel, name)
                outcome = attempt(describe, os.path.join(root, child))
                if outcome[0] != "error" or outcome[1] != "ENOENT":
                    found[child] = outcome
                if outcome[0] == "ok" and outcome[1][0] == "dir":
                    todo.append(child)
        return found

    @invariant()
    def set_times_move_alike(self) -> None:
        """An mtime utime set stays until a call moves it, and a call moves it on the
        mount exactly when it moves it on ext4. The set times are never "now", so
        the two clocks cannot blur this (a call that moves a time moves it to now)."""
        still: dict[int, int] = {}
        for rel, mount_path, local_path in self._walk():
            local = os.lstat(local_path)
            pinned = self.pinned.get(local.st_ino)
            if pinned is None:
                continue
            mount_mtime = os.lstat(mount_path).st_mtime_ns
            local_moved, mount_moved = local.st_mtime_ns != pinned, mount_mtime != pinned
            assert mount_moved == local_moved, (
                f"after {self.last}: the mtime utime set on {rel!r} ({pinned}) "
                + ("moved on ext4, not on the mount" if local_moved else "moved on the mount")
                + f": mount {mount_mtime}, ext4 {local.st_mtime_ns}"
            )
            if not local_moved:
                still[local.st_ino] = pinned
        self.pinned = still  # moved (or gone): no longer known on either side

    def _walk(self) -> Iterator[tuple[str, str, str]]:
        """(rel, mount path, ext4 path) of the root and everything under it."""
        yield ".", self.mount, self.local
        for directory, dirnames, filenames in os.walk(self.local):
            for name in dirnames + filenames:
                local_path = os.path.join(directory, name)
                rel = os.path.relpath(local_path, self.local)
                yield rel, os.path.join(self.mount, rel), local_path


def machine_settings() -> settings:
    hunting = EXAMPLES > 0
    return settings(
        max_examples=EXAMPLES if hunting else DEFAULT_EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        derandomize=not hunting,  # the default run is the same every time (CI)
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def test_mount_behaves_like_ext4(mounted: Mounted) -> None:
    mount_parent = os.path.join(mounted.mountpoint, "diff-" + uuid.uuid4().hex[:12])
    os.mkdir(mount_parent)
    os.makedirs(WORK_DIR, exist_ok=True)
    local_parent = tempfile.mkdtemp(prefix="diff-", dir=WORK_DIR)
    try:

        class Machine(Differential):
            def __init__(self) -> None:
                super().__init__(mount_parent, local_parent)

        run_state_machine_as_test(Machine, settings=machine_settings())
    finally:
        shutil.rmtree(local_parent, ignore_errors=True)
        shutil.rmtree(mount_parent, ignore_errors=True)


def test_hard_link_shares_content(workdir: str) -> None:
    first, second = os.path.join(workdir, "first"), os.path.join(workdir, "second")
    with open(first, "wb") as file:
        file.write(b"one")
    os.link(first, second)
    assert os.stat(first).st_nlink == os.stat(second).st_nlink == 2
    assert os.stat(first).st_ino == os.stat(second).st_ino
    with open(second, "r+b") as file:
        file.write(b"two")
    assert read_all(first) == b"two"
    os.unlink(first)
    assert os.stat(second).st_nlink == 1
    assert read_all(second) == b"two"
