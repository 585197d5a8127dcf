"""Faults: a bug in a handler, a node killed with files open, a bad config.

- A handler that raises an unexpected exception must fail that one call with
  EIO and log the traceback; the mount and the S3 server in the same process
  keep serving. The node of the `mounted` fixture runs in a thread of this
  process, so patching a class of `objfs.fuse` injects the bug into it.
- kill -9 of `objfs serve` (a real process with a real mount) while files are
  open leaves a stale mount (ENOTCONN); a new `objfs serve` on the same data
  and mountpoint clears it, and what was fsync'd or closed is there with its
  exact bytes, through the mount and through S3; SIGTERM then unmounts and
  exits 0, and `objfs fsck` is clean.
- A bad [fuse] setting, an unusable mountpoint or a bad bucket name for the
  mount is one line naming the key, a non-zero exit, no traceback and nothing
  mounted.

(Named test_mount_faults, not test_faults: tests/store has a test_faults module,
and pytest and mypy need distinct basenames.)
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

import pytest
import trio
from fuse_node import BUCKET, WORK_DIR, Mounted
from s3_node import ROOT_KEY, ROOT_SECRET, boto3_client

from objfs.fuse.files import OpenFile
from objfs.fuse.tree import Tree
from objfs.store.format import create_data_dir

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
# Any free ports: tests run beside each other and beside a node on 9000/9001.
ANY_PORTS = '[s3]\naddress = "127.0.0.1:0"\n\n[node]\nadmin_address = "127.0.0.1:0"\n'


def _errno_of(call: Callable[[], object]) -> int | None:
    try:
        call()
    except OSError as exc:
        return exc.errno
    return None


# -- a bug in a handler ---------------------------------------------------------


def _write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _read_file(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _inject(monkeypatch: pytest.MonkeyPatch, injection: str, victim: str) -> Callable[[], object]:
    """Make one handler raise RuntimeError for the path `victim` in the mount; the
    call that must now fail with EIO."""
    name = os.path.basename(victim)
    if injection == "readdir":
        entries = Tree.entries

        def broken_entries(self: Tree, node: Any) -> list[tuple[str, str, str]]:
            if node.path.endswith(f"/{name}/"):
                raise RuntimeError("injected bug in Tree.entries")
            return entries(self, node)

        monkeypatch.setattr(Tree, "entries", broken_entries)
        return lambda: os.listdir(victim)
    if injection == "lookup":
        attrs = Tree.attrs

        def broken_attrs(self: Tree, node: Any, **kwargs: Any) -> Any:
            if node.path.endswith(f"/{name}"):
                raise RuntimeError("injected bug in Tree.attrs")
            return attrs(self, node, **kwargs)

        monkeypatch.setattr(Tree, "attrs", broken_attrs)
        return lambda: os.stat(victim)
    assert injection == "write"
    write = OpenFile.write

    async def broken_write(self: OpenFile, offset: int, data: bytes) -> None:
        if self.node.path.endswith(f"/{name}"):
            raise RuntimeError("injected bug in OpenFile.write")
        await write(self, offset, data)

    monkeypatch.setattr(OpenFile, "write", broken_write)

    def write_victim() -> None:
        fd = os.open(victim, os.O_WRONLY)
        try:
            os.pwrite(fd, b"never stored", 0)
        finally:
            os.close(fd)

    return write_victim


@pytest.mark.parametrize(
    ("injection", "handler"),
    [("readdir", "readdir"), ("lookup", "(lookup|getattr)"), ("write", "write")],
)
def test_a_bug_in_a_handler_is_eio_for_that_call_and_the_node_keeps_serving(
    mounted: Mounted,
    workdir: str,
    s3: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    injection: str,
    handler: str,
) -> None:
    prefix = os.path.basename(workdir) + "/"
    os.mkdir(os.path.join(workdir, "sick"))  # the victim's directory (its listing may fail)
    victim = os.path.join(workdir, "sick", "victim")
    if injection == "readdir":
        os.mkdir(victim)
        _write_file(os.path.join(victim, "inside"), b"inside")
    else:
        _write_file(victim, b"before")
    calm = os.path.join(workdir, "calm")
    os.mkdir(calm)
    _write_file(os.path.join(calm, "f"), b"calm")
    caplog.set_level(logging.ERROR, logger="objfs.fuse")

    failing = _inject(monkeypatch, injection, victim)
    for _ in range(2):  # and again: the first failure broke nothing
        assert _errno_of(failing) == errno.EIO
    # everything else still works, through the mount and through S3
    assert sorted(os.listdir(workdir)) == ["calm", "sick"]
    assert os.listdir(calm) == ["f"]
    assert _read_file(os.path.join(calm, "f")) == b"calm"
    _write_file(os.path.join(calm, "g"), b"written after the bug")
    got = s3.get_object(Bucket=BUCKET, Key=prefix + "calm/g")
    assert got["Body"].read() == b"written after the bug"
    s3.put_object(Bucket=BUCKET, Key=prefix + "calm/from-s3", Body=b"s3")
    assert _read_file(os.path.join(calm, "from-s3")) == b"s3"
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "calm/")
    assert [item["Key"] for item in listed["Contents"]] == [
        prefix + "calm/",  # the directory's marker
        prefix + "calm/f",
        prefix + "calm/from-s3",
        prefix + "calm/g",
    ]
    assert mounted.node.thread.is_alive() and not mounted.node.errors
    assert re.search(f"bug in FUSE handler {handler}", caplog.text), caplog.text
    assert "RuntimeError: injected bug" in caplog.text  # with its traceback

    monkeypatch.undo()
    if injection == "readdir":
        assert os.listdir(victim) == ["inside"]
    else:
        assert _errno_of(failing) is None
        expected = b"before" if injection == "lookup" else b"never stored"
        assert _read_file(victim) == expected
        got = s3.get_object(Bucket=BUCKET, Key=prefix + "sick/victim")
        assert got["Body"].read() == expected


# -- kill -9 with files open, and a restart -------------------------------------


def _mounted_at(path: str) -> bool:
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
        return any(
            len(fields) > 1 and fields[1].replace("\\040", " ") == path
            for fields in (line.split() for line in mounts)
        )


def _unmount(path: str) -> None:
    if _mounted_at(path):
        subprocess.run(["fusermount3", "-u", "-z", path], check=False, capture_output=True)


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "OBJFS_ROOT_ACCESS_KEY": ROOT_KEY,
        "OBJFS_ROOT_SECRET_KEY": ROOT_SECRET,
        "PYTHONUNBUFFERED": "1",
    }


def objfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "objfs", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )


class Serving:
    """`objfs serve --mount` in a subprocess: its output, its S3 endpoint."""

    def __init__(self, data: str, mountpoint: str, config: str, log_path: str) -> None:
        self.log_path = log_path
        self.lines: list[str] = []
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "objfs", "serve", "--data", data),
                    *("--mount", mountpoint, "--bucket", BUCKET, "--config", config),
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=_env(),
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.endpoint = self._wait_ready()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            text = "".join(self.lines)
            found = re.search(r"serving S3 on (http://127\.0\.0\.1:\d+)", text)
            if found and "mounted at" in text:
                return found.group(1)
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"objfs serve did not get ready:\n{self.output()}\n{self.log()}")

    def output(self) -> str:
        return "".join(self.lines)

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return log.read()

    def s3(self) -> Any:
        return boto3_client(self.endpoint)

    def stop(self) -> None:
        """Kill it if it still runs (cleanup)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(STOP_TIMEOUT_S)
        self._reader.join(5)


@pytest.fixture
def served_dir() -> Iterator[str]:
    os.makedirs(WORK_DIR, exist_ok=True)
    path = tempfile.mkdtemp(dir=WORK_DIR, prefix="served-")
    try:
        yield path
    finally:
        _unmount(os.path.join(path, "mnt"))
        shutil.rmtree(path, ignore_errors=True)


def _config(directory: str, text: str) -> str:
    path = os.path.join(directory, "objfs.toml")
    with open(path, "w", encoding="utf-8") as file:
        file.write(ANY_PORTS + text)
    return path


def _format(data: str) -> None:
    """What `objfs --data DATA format --device-count 3 --device-size 64M` does, in this
    process: starting `objfs` costs a second of imports, and these tests are about
    serving, not formatting (tests/e2e/test_cli.py runs format)."""
    formatted = trio.run(
        functools.partial(create_data_dir, data, device_count=3, device_size_bytes=64 << 20)
    )
    assert len(formatted) == 3


@pytest.fixture(scope="module")
def formatted() -> Iterator[str]:
    """A formatted data directory for the tests whose node must not get far."""
    os.makedirs(WORK_DIR, exist_ok=True)
    path = tempfile.mkdtemp(dir=WORK_DIR, prefix="formatted-")
    try:
        _format(os.path.join(path, "data"))
        yield os.path.join(path, "data")
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_kill_9_with_files_open_then_restart_clears_the_stale_mount(served_dir: str) -> None:
    data = os.path.join(served_dir, "data")
    mountpoint = os.path.join(served_dir, "mnt")
    log_path = os.path.join(served_dir, "node.log")
    config = _config(served_dir, "")
    _format(data)
    synced, closed, pending = os.urandom(300_000), os.urandom(5_000_000), os.urandom(200_000)
    nodes: list[Serving] = []
    held: list[int] = []
    try:
        first = Serving(data, mountpoint, config, log_path)
        nodes.append(first)
        fd = os.open(os.path.join(mountpoint, "synced.bin"), os.O_CREAT | os.O_WRONLY, 0o640)
        held.append(fd)
        assert os.write(fd, synced) == len(synced)
        os.fsync(fd)  # acknowledged: must survive; the file stays open
        with open(os.path.join(mountpoint, "closed.bin"), "wb") as file:
            file.write(closed)  # acknowledged by close()
        fd = os.open(os.path.join(mountpoint, "pending.bin"), os.O_CREAT | os.O_WRONLY, 0o600)
        held.append(fd)
        assert os.write(fd, pending) == len(pending)  # never fsync'd, still open

        first.process.send_signal(signal.SIGKILL)
        assert first.process.wait(STOP_TIMEOUT_S) == -signal.SIGKILL
        assert _errno_of(lambda: os.stat(mountpoint)) == errno.ENOTCONN  # a stale mount
        assert _mounted_at(mountpoint)
        for fd in held:
            with suppress(OSError):  # the connection is gone: close may fail
                os.close(fd)
        held.clear()

        second = Serving(data, mountpoint, config, log_path)
        nodes.append(second)
        assert "clearing the stale mount" in second.log()
        assert sorted(os.listdir(mountpoint)) == ["closed.bin", "pending.bin", "synced.bin"]
        s3 = second.s3()
        for name, expected in (("synced.bin", synced), ("closed.bin", closed)):
            assert _read_file(os.path.join(mountpoint, name)) == expected, name
            got = s3.get_object(Bucket=BUCKET, Key=name)
            assert got["Body"].read() == expected, name
            assert got["ETag"] == f'"{hashlib.md5(expected).hexdigest()}"', name
        assert os.stat(os.path.join(mountpoint, "synced.bin")).st_mode & 0o7777 == 0o640
        # never acknowledged: no bytes of it need be there, but none that were not written
        assert pending.startswith(_read_file(os.path.join(mountpoint, "pending.bin")))

        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(STOP_TIMEOUT_S) == 0, second.log()
        second.stop()
        assert not _mounted_at(mountpoint), "SIGTERM left the mount behind"
        assert "objfs: stopped cleanly" in second.output()
        assert "Traceback" not in second.log()
        checked = objfs("--data", data, "fsck", "--verify-data")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "fsck: clean" in checked.stdout
    finally:
        for fd in held:
            with suppress(OSError):
                os.close(fd)
        for node in nodes:
            node.stop()
        _unmount(mountpoint)


# -- bad configuration ----------------------------------------------------------


def _assert_one_line_error(result: subprocess.CompletedProcess[str], key: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("objfs: ")]
    assert len(errors) == 1 and key in errors[0], result.stderr


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("cache_timeout_ms = -5", "fuse.cache_timeout_ms"),
        ('cache_timeout_ms = "5"', "fuse.cache_timeout_ms"),
        ("cache_timeout = 5", "fuse.cache_timeout"),
    ],
)
def test_a_bad_fuse_setting_is_named_and_nothing_is_mounted(
    served_dir: str, setting: str, key: str
) -> None:
    mountpoint = os.path.join(served_dir, "mnt")
    config = _config(served_dir, f"[fuse]\n{setting}\n")
    result = objfs(
        "serve",
        "--data",
        os.path.join(served_dir, "data"),
        "--mount",
        mountpoint,
        "--config",
        config,
    )
    assert result.returncode == 2
    _assert_one_line_error(result, key)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not _mounted_at(mountpoint)


@pytest.mark.parametrize("where", ["a regular file", "under a regular file"])
def test_a_mountpoint_that_cannot_be_a_directory_is_named(
    served_dir: str, formatted: str, where: str
) -> None:
    data = formatted
    plain = os.path.join(served_dir, "plain")
    with open(plain, "wb") as file:
        file.write(b"not a directory")
    mountpoint = plain if where == "a regular file" else os.path.join(plain, "mnt")
    result = objfs(
        "serve", "--data", data, "--mount", mountpoint, "--config", _config(served_dir, "")
    )
    assert not _mounted_at(mountpoint)
    assert _read_file(plain) == b"not a directory"
    _assert_one_line_error(result, "fuse.mountpoint")


@pytest.mark.parametrize("how", ["--bucket", "[fuse] bucket"])
def test_an_invalid_bucket_name_for_the_mount_is_named(
    served_dir: str, formatted: str, how: str
) -> None:
    data = formatted
    mountpoint = os.path.join(served_dir, "mnt")
    if how == "--bucket":
        config, flags, named = _config(served_dir, ""), ["--bucket", "b"], "'b'"
    else:
        config, flags, named = _config(served_dir, '[fuse]\nbucket = "b"\n'), [], "fuse.bucket"
    result = objfs("serve", "--data", data, "--mount", mountpoint, "--config", config, *flags)
    assert not _mounted_at(mountpoint)
    _assert_one_line_error(result, named)
