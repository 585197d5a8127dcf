"""POSIX permission rules through the mount, for users who are not root.

Method (differential): each test is a script of (user, syscall, expected
result) lines. The script runs twice, once in a fresh directory of the mount
and once in a plain directory on the local disk (ext4 under /var/tmp on this
machine), each line in a child process forked from the test and switched to
that user with setgroups/setresgid/setresuid, umask 022. (A fork, not a new
interpreter: the test's Python may live where other users cannot reach it,
such as under a 0700 /root.) A result is "ok", a value (bytes read,
`ls -l`-style mode and owner, a listing, times) or the errno name. The mount
must give what ext4 gives, and ext4 must give what the script expects (if not,
the test itself is wrong, and says so).

The kernel checks the mode bits (the mount has default_permissions and
allow_other); the face must store modes, owners and groups faithfully, give a
setgid directory's group to what is made in it, and take the kernel's
set-user/group-ID clearing on write, truncate and chown.
"""

from __future__ import annotations

import errno
import os
import pickle
import select
import shutil
import signal
import stat
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from fuse_node import WORK_DIR, Mounted

SHARED = 65530  # a group alice is in and bob is not


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


ROOT = User("root", 0, 0)
ALICE = User("alice", 65533, 65533, (SHARED,))
BOB = User("bob", 65534, 65534)  # nobody:nogroup

Step = tuple[Any, ...]  # (operation, path, arguments...)
Line = tuple[User, Step, object]  # who, what, and the result ext4 and the mount must give

T1 = (1_600_000_000_123_456_789, 1_500_000_000_987_654_321)  # (atime, mtime) in ns
T2 = (1_400_000_000_000_000_001, 1_300_000_000_000_000_002)
CHILD_TIMEOUT_S = 20.0


# -- the syscalls a script can make ---------------------------------------------


def _create(path: str, mode: int, data: bytes = b"") -> str:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return "ok"


def _write(path: str, data: bytes, offset: int = 0) -> str:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)
    return "ok"


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _mode(path: str) -> str:
    """`ls -l` style: "-rwsr-xr-x 0:65530"."""
    info = os.lstat(path)
    return f"{stat.filemode(info.st_mode)} {info.st_uid}:{info.st_gid}"


def _times(path: str) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_atime_ns, info.st_mtime_ns


def _recent(path: str) -> bool:
    """Is the mtime within 10 s of now (set by UTIME_NOW)?"""
    return abs(os.stat(path).st_mtime_ns - time.time_ns()) < 10_000_000_000


def _utime(path: str, ns: tuple[int, int] | None) -> None:
    if ns is None:
        os.utime(path)  # utimensat(..., NULL): both times to now
    else:
        os.utime(path, ns=ns)


def _trunc_write(path: str, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return "ok"


def _chown(path: str, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)


OPERATIONS: dict[str, Callable[..., object]] = {
    "create": _create,
    "write": _write,
    "read": _read,
    "mode": _mode,
    "times": _times,
    "recent": _recent,
    "utime": _utime,
    "chmod": os.chmod,
    "chown": _chown,
    "truncate": os.truncate,
    "trunc_write": _trunc_write,
    "unlink": os.unlink,
    "rmdir": os.rmdir,
    "mkdir": os.mkdir,
    "rename": os.rename,
    "symlink": lambda path, target: os.symlink(target, path),
    "mkfifo": os.mkfifo,
    "listdir": lambda path: sorted(os.listdir(path)),
}


def _run_step(base: str, step: Step) -> object:
    operation, path, *args = step
    if operation == "rename":
        args = [os.path.join(base, args[0])]
    try:
        result = OPERATIONS[operation](os.path.join(base, path), *args)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return "ok" if result is None else result


def as_user(user: User, base: str, steps: Sequence[Step]) -> list[object]:
    """Run `steps` in a child process forked and switched to `user`; their results."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only syscalls, and it never returns into pytest
        status = 70
        try:
            os.close(read_end)
            os.setgroups(list(user.groups))
            os.setresgid(user.gid, user.gid, user.gid)
            os.setresuid(user.uid, user.uid, user.uid)
            os.umask(0o022)
            os.chdir("/")
            payload = pickle.dumps([_run_step(base, step) for step in steps])
            with open(write_end, "wb") as pipe:
                pipe.write(payload)
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(write_end)
    chunks: list[bytes] = []
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    with open(read_end, "rb", buffering=0) as pipe:
        while True:
            ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"{user.name} in {base}: {steps} took over {CHILD_TIMEOUT_S} s")
            chunk = pipe.read(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"the child for {user.name} failed"
    results: list[object] = pickle.loads(b"".join(chunks))
    return results


def run_script(base: str, script: Sequence[Line]) -> list[object]:
    """Every line's result in `base`; a user's consecutive lines share one child."""
    results: list[object] = []
    start = 0
    while start < len(script):
        user = script[start][0]
        end = start
        while end < len(script) and script[end][0] == user:
            end += 1
        results += as_user(user, base, [step for _, step, _ in script[start:end]])
        start = end
    return results


@dataclass(frozen=True)
class Bases:
    mount: str  # a fresh directory in the mount, root's, 0755
    local: str  # a fresh directory on the local disk, root's, 0755


def check(bases: Bases, script: Sequence[Line]) -> None:
    """Run the script on ext4 and on the mount: both must give the expected results."""
    on_local = run_script(bases.local, script)
    on_mount = run_script(bases.mount, script)
    problems = []
    for (user, step, expected), mount_result, local_result in zip(
        script, on_mount, on_local, strict=True
    ):
        if local_result != expected:
            problems.append(
                f"{user.name} {step}: ext4 gives {local_result!r}, the script expects "
                f"{expected!r} (the test is wrong)"
            )
        if mount_result != local_result:
            problems.append(
                f"{user.name} {step}: mount gives {mount_result!r}, ext4 {local_result!r}"
            )
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module", autouse=True)
def others_reach_the_mount(mounted: Mounted) -> None:
    """The mountpoint's parent is a 0700 temporary directory: let other users through."""
    os.chmod(os.path.dirname(mounted.mountpoint), 0o755)


@pytest.fixture
def bases(workdir: str) -> Iterator[Bases]:
    os.makedirs(WORK_DIR, exist_ok=True)
    local = tempfile.mkdtemp(dir=WORK_DIR, prefix="ext4-")
    os.chmod(local, 0o755)
    os.chmod(workdir, 0o755)
    try:
        yield Bases(workdir, local)
    finally:
        shutil.rmtree(local, ignore_errors=True)


# -- reading and writing --------------------------------------------------------


def test_a_0600_file_of_root_is_closed_to_other_users(bases: Bases) -> None:
    check(
        bases,
        [
            (ROOT, ("create", "secret", 0o600, b"top secret"), "ok"),
            (BOB, ("read", "secret"), "EACCES"),
            (BOB, ("write", "secret", b"bob"), "EACCES"),
            (BOB, ("truncate", "secret", 0), "EACCES"),
            (BOB, ("mode", "secret"), "-rw------- 0:0"),
            (ALICE, ("read", "secret"), "EACCES"),
            (ROOT, ("read", "secret"), b"top secret"),
            # group permission counts supplementary groups: alice is in SHARED, bob is not
            (ROOT, ("chown", "secret", 0, SHARED), "ok"),
            (ROOT, ("chmod", "secret", 0o640), "ok"),
            (ALICE, ("read", "secret"), b"top secret"),
            (ALICE, ("write", "secret", b"alice"), "EACCES"),
            (BOB, ("read", "secret"), "EACCES"),
            (ROOT, ("chmod", "secret", 0o604), "ok"),
            (BOB, ("read", "secret"), b"top secret"),
            (ALICE, ("read", "secret"), "EACCES"),  # the group's bits decide for a member
        ],
    )


def test_searching_a_directory_needs_its_x_bit(bases: Bases) -> None:
    check(
        bases,
        [
            (ROOT, ("mkdir", "d", 0o755), "ok"),
            (ROOT, ("mkdir", "d/sub", 0o755), "ok"),
            (ROOT, ("create", "d/f", 0o644, b"in d"), "ok"),
            (ROOT, ("create", "d/sub/g", 0o644, b"deep"), "ok"),
            (ROOT, ("chmod", "d", 0o744), "ok"),  # others may read the names, not pass
            (BOB, ("listdir", "d"), ["f", "sub"]),
            (BOB, ("read", "d/f"), "EACCES"),
            (BOB, ("mode", "d/f"), "EACCES"),
            (BOB, ("read", "d/sub/g"), "EACCES"),
            (ROOT, ("chmod", "d", 0o711), "ok"),  # others may pass, not read the names
            (BOB, ("listdir", "d"), "EACCES"),
            (BOB, ("read", "d/f"), b"in d"),
            (BOB, ("read", "d/sub/g"), b"deep"),
            (BOB, ("create", "d/new", 0o644), "EACCES"),
            (ROOT, ("chmod", "d", 0o733), "ok"),  # others may add names, not list them
            (BOB, ("create", "d/new", 0o644, b"bob's"), "ok"),
            (BOB, ("listdir", "d"), "EACCES"),
            (BOB, ("mode", "d/new"), "-rw-r--r-- 65534:65534"),
            (ROOT, ("chmod", "d", 0o700), "ok"),
            (BOB, ("read", "d/new"), "EACCES"),
            (BOB, ("mode", "d"), "drwx------ 0:0"),
            (ROOT, ("read", "d/new"), b"bob's"),
        ],
    )


# -- chmod and chown ------------------------------------------------------------


def test_only_the_owner_changes_a_mode(bases: Bases) -> None:
    check(
        bases,
        [
            (ROOT, ("chmod", ".", 0o777), "ok"),
            (ALICE, ("create", "a", 0o600, b"alice"), "ok"),
            (ALICE, ("chmod", "a", 0o640), "ok"),
            (BOB, ("chmod", "a", 0o666), "EPERM"),
            (ROOT, ("create", "r", 0o666), "ok"),
            (ROOT, ("chmod", "r", 0o666), "ok"),
            (BOB, ("chmod", "r", 0o777), "EPERM"),  # write permission is not ownership
            (BOB, ("chmod", ".", 0o755), "EPERM"),
            (ALICE, ("mode", "a"), "-rw-r----- 65533:65533"),
            (BOB, ("mode", "r"), "-rw-rw-rw- 0:0"),
            (ROOT, ("chmod", "a", 0o604), "ok"),  # root may
            (BOB, ("read", "a"), b"alice"),
        ],
    )


def test_chown_and_chgrp_by_a_user_who_is_not_root(bases: Bases) -> None:
    check(
        bases,
        [
            (ROOT, ("chmod", ".", 0o777), "ok"),
            (ALICE, ("create", "a", 0o644, b"alice"), "ok"),
            (ALICE, ("chown", "a", BOB.uid, -1), "EPERM"),  # give a file away: no
            (ALICE, ("chown", "a", -1, BOB.gid), "EPERM"),  # a group she is not in: no
            (ALICE, ("chown", "a", ALICE.uid, -1), "ok"),  # to herself: a no-op, allowed
            (ALICE, ("chown", "a", -1, SHARED), "ok"),  # a supplementary group of hers
            (ALICE, ("mode", "a"), f"-rw-r--r-- {ALICE.uid}:{SHARED}"),
            (ALICE, ("chown", "a", -1, ALICE.gid), "ok"),  # and back to her primary group
            (BOB, ("chown", "a", BOB.uid, -1), "EPERM"),  # not his file
            (BOB, ("chown", "a", -1, BOB.gid), "EPERM"),
            (ALICE, ("mode", "a"), f"-rw-r--r-- {ALICE.uid}:{ALICE.gid}"),
            (ROOT, ("chown", "a", BOB.uid, BOB.gid), "ok"),  # root may
            (BOB, ("mode", "a"), f"-rw-r--r-- {BOB.uid}:{BOB.gid}"),
            (BOB, ("read", "a"), b"alice"),
        ],
    )


# -- set-user-ID and set-group-ID -----------------------------------------------


def _changed_by(how: str, name: str) -> Step:
    """A step that changes a file's bytes: "0123456789" becomes `_AFTER[how]`."""
    if how == "write":
        return ("write", name, b"AB", 0)
    if how == "truncate":
        return ("truncate", name, 2)
    return ("trunc_write", name, b"AB")  # open(O_WRONLY | O_TRUNC), write


_AFTER = {"write": b"AB23456789", "truncate": b"01", "open O_TRUNC": b"AB"}


@pytest.mark.parametrize("how", ["write", "truncate", "open O_TRUNC"])
def test_a_change_by_a_user_without_cap_fsetid_clears_set_id_bits(bases: Bases, how: str) -> None:
    check(
        bases,
        [
            (ROOT, ("create", "run", 0o644, b"0123456789"), "ok"),
            (ROOT, ("chmod", "run", 0o6777), "ok"),  # setuid, and setgid with group x
            (ROOT, ("chmod", ".", 0o777), "ok"),
            (ALICE, ("create", "own", 0o644, b"0123456789"), "ok"),
            (ALICE, ("chmod", "own", 0o4755), "ok"),
            (BOB, _changed_by(how, "run"), "ok"),  # bob may write it, it is not his
            (ALICE, _changed_by(how, "own"), "ok"),  # the owner clears it too
            (ROOT, ("mode", "run"), "-rwxrwxrwx 0:0"),
            (ROOT, ("mode", "own"), f"-rwxr-xr-x {ALICE.uid}:{ALICE.gid}"),
            (ROOT, ("read", "run"), _AFTER[how]),
            (ROOT, ("read", "own"), _AFTER[how]),
            # root (CAP_FSETID) changing it keeps the bits
            (ROOT, ("chmod", "run", 0o6777), "ok"),
            (ROOT, ("write", "run", b"0123456789"), "ok"),
            (ROOT, _changed_by(how, "run"), "ok"),
            (ROOT, ("mode", "run"), "-rwsrwsrwx 0:0"),
        ],
    )


@pytest.mark.parametrize("how", ["write", "truncate", "open O_TRUNC"])
def test_a_change_by_a_user_outside_the_group_clears_setgid_without_group_x(
    bases: Bases, how: str
) -> None:
    check(
        bases,
        [
            (ROOT, ("create", "nox", 0o644, b"0123456789"), "ok"),
            (ROOT, ("chmod", "nox", 0o2666), "ok"),  # setgid without group x
            (BOB, _changed_by(how, "nox"), "ok"),  # bob is not in group 0
            (ROOT, ("mode", "nox"), "-rw-rw-rw- 0:0"),
            (ROOT, ("read", "nox"), _AFTER[how]),
        ],
    )


def test_chown_by_root_clears_set_id_bits_of_a_file(bases: Bases) -> None:
    check(
        bases,
        [
            (ROOT, ("create", "x", 0o644, b"x"), "ok"),
            (ROOT, ("chmod", "x", 0o6755), "ok"),
            (ROOT, ("chown", "x", ALICE.uid, -1), "ok"),
            (ROOT, ("mode", "x"), f"-rwxr-xr-x {ALICE.uid}:0"),
            (ROOT, ("create", "g", 0o644, b"g"), "ok"),
            (ROOT, ("chmod", "g", 0o2644), "ok"),  # setgid without group x
            (ROOT, ("chown", "g", ALICE.uid, SHARED), "ok"),
            (ROOT, ("mode", "g"), f"-rw-r-Sr-- {ALICE.uid}:{SHARED}"),
            (ROOT, ("create", "same", 0o644, b"s"), "ok"),
            (ROOT, ("chmod", "same", 0o4755), "ok"),
            (ROOT, ("chown", "same", -1, -1), "ok"),  # even a chown that changes nothing
            (ROOT, ("mode", "same"), "-rwxr-xr-x 0:0"),
            (ROOT, ("mkdir", "d", 0o755), "ok"),
            (ROOT, ("chmod", "d", 0o2755), "ok"),
            (ROOT, ("chown", "d", ALICE.uid, SHARED), "ok"),
            (ROOT, ("mode", "d"), f"drwxr-sr-x {ALICE.uid}:{SHARED}"),  # directories keep it
        ],
    )


def test_a_setgid_directory_passes_on_its_group(bases: Bases) -> None:
    check(
        bases,
        [
            (ROOT, ("mkdir", "g", 0o755), "ok"),
            (ROOT, ("chown", "g", 0, SHARED), "ok"),
            (ROOT, ("chmod", "g", 0o2777), "ok"),
            (BOB, ("mode", "g"), f"drwxrwsrwx 0:{SHARED}"),
            (BOB, ("create", "g/f", 0o644, b"bob"), "ok"),
            (BOB, ("mode", "g/f"), f"-rw-r--r-- {BOB.uid}:{SHARED}"),
            (BOB, ("mkdir", "g/sub", 0o755), "ok"),
            (BOB, ("mode", "g/sub"), f"drwxr-sr-x {BOB.uid}:{SHARED}"),
            (BOB, ("create", "g/sub/h", 0o644), "ok"),
            (BOB, ("mode", "g/sub/h"), f"-rw-r--r-- {BOB.uid}:{SHARED}"),
            # a new setgid file of a group its maker is not in loses the bit
            (BOB, ("create", "g/x", 0o2775), "ok"),
            (BOB, ("mode", "g/x"), f"-rwxr-xr-x {BOB.uid}:{SHARED}"),
            (ALICE, ("create", "g/y", 0o2775), "ok"),
            (ALICE, ("mode", "g/y"), f"-rwxr-sr-x {ALICE.uid}:{SHARED}"),
            (BOB, ("symlink", "g/link", "f"), "ok"),
            (BOB, ("mode", "g/link"), f"lrwxrwxrwx {BOB.uid}:{SHARED}"),
            (BOB, ("mkfifo", "g/fifo", 0o644), "ok"),
            (BOB, ("mode", "g/fifo"), f"prw-r--r-- {BOB.uid}:{SHARED}"),
            (ROOT, ("mkdir", "g/rootdir", 0o700), "ok"),
            (ROOT, ("mode", "g/rootdir"), f"drwx--S--- 0:{SHARED}"),
            # chmod g+s by an owner outside the file's group: the bit is dropped silently
            (BOB, ("chmod", "g/f", 0o2755), "ok"),
            (BOB, ("mode", "g/f"), f"-rwxr-xr-x {BOB.uid}:{SHARED}"),
            (ALICE, ("chmod", "g/y", 0o2750), "ok"),
            (ALICE, ("mode", "g/y"), f"-rwxr-s--- {ALICE.uid}:{SHARED}"),
            # outside a setgid directory a new file takes its maker's group
            (ROOT, ("mkdir", "plain", 0o755), "ok"),
            (ROOT, ("chmod", "plain", 0o777), "ok"),
            (BOB, ("create", "plain/f", 0o644), "ok"),
            (BOB, ("mode", "plain/f"), f"-rw-r--r-- {BOB.uid}:{BOB.gid}"),
            (BOB, ("mkdir", "plain/d", 0o755), "ok"),
            (BOB, ("mode", "plain/d"), f"drwxr-xr-x {BOB.uid}:{BOB.gid}"),
            # a name moved into a setgid directory keeps its group
            (BOB, ("rename", "plain/f", "g/moved"), "ok"),
            (BOB, ("mode", "g/moved"), f"-rw-r--r-- {BOB.uid}:{BOB.gid}"),
        ],
    )


# -- the sticky bit -------------------------------------------------------------


def test_a_sticky_directory_keeps_users_off_each_others_names(bases: Bases) -> None:
    check(
        bases,
        [
            (ROOT, ("chmod", ".", 0o1777), "ok"),
            (ROOT, ("mode", "."), "drwxrwxrwt 0:0"),
            (ALICE, ("create", "a1", 0o644, b"a1"), "ok"),
            (ALICE, ("create", "a2", 0o666, b"a2"), "ok"),
            (ALICE, ("mkdir", "adir", 0o777), "ok"),
            (ALICE, ("chmod", "adir", 0o777), "ok"),  # past the umask
            (BOB, ("create", "b1", 0o644, b"b1"), "ok"),
            (BOB, ("unlink", "a1"), "EPERM"),
            (BOB, ("rename", "a1", "took-it"), "EPERM"),
            (BOB, ("rename", "b1", "a1"), "EPERM"),  # replacing hers is removing it
            (BOB, ("rmdir", "adir"), "EPERM"),
            (BOB, ("rename", "adir", "bdir"), "EPERM"),
            (BOB, ("create", "adir/inside", 0o644, b"i"), "ok"),  # adir is not sticky
            (BOB, ("unlink", "adir/inside"), "ok"),
            (BOB, ("write", "a2", b"B"), "EACCES"),  # 0644 after the umask
            (BOB, ("listdir", "."), ["a1", "a2", "adir", "b1"]),
            (BOB, ("rename", "b1", "b2"), "ok"),  # his own, he may
            (BOB, ("unlink", "b2"), "ok"),
            (ALICE, ("rename", "a2", "a3"), "ok"),
            (ALICE, ("unlink", "a1"), "ok"),
            (ALICE, ("read", "a3"), b"a2"),
            (ROOT, ("listdir", "."), ["a3", "adir"]),
            (ROOT, ("unlink", "a3"), "ok"),  # root may remove anyone's
            (ROOT, ("rmdir", "adir"), "ok"),
            (ROOT, ("listdir", "."), []),
        ],
    )


# -- times ----------------------------------------------------------------------


def test_utime_rules_for_a_user_who_is_not_the_owner(bases: Bases) -> None:
    check(
        bases,
        [
            (ROOT, ("create", "open", 0o644, b"o"), "ok"),
            (ROOT, ("chmod", "open", 0o666), "ok"),  # bob may write it, it is not his
            (ROOT, ("create", "closed", 0o644, b"c"), "ok"),
            (ROOT, ("utime", "open", T1), "ok"),
            (ROOT, ("times", "open"), T1),
            (BOB, ("utime", "open", T2), "EPERM"),  # explicit times: the owner only
            (BOB, ("times", "open"), T1),
            (BOB, ("utime", "closed", None), "EACCES"),  # now: needs write permission
            (BOB, ("utime", "open", None), "ok"),
            (BOB, ("recent", "open"), True),
            (ROOT, ("chmod", ".", 0o777), "ok"),
            (ALICE, ("create", "mine", 0o600, b"m"), "ok"),
            (ALICE, ("utime", "mine", T2), "ok"),  # the owner may set any times
            (ALICE, ("times", "mine"), T2),
            (ROOT, ("utime", "closed", T2), "ok"),
            (ROOT, ("times", "closed"), T2),
        ],
    )
