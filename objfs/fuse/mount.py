"""objfs.fuse.mount — mount the face, serve it, unmount it.

`run_mount` is started by the node (`nursery.start`) after the store is open:
it clears a stale mount a killed node left at the mountpoint, mounts, reports
ready, and serves until `stop_mount()` (SIGTERM) or an unmount from outside.
On the way out it stores what open files still hold and unmounts. pyfuse3
allows one mount per process.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import subprocess

import pyfuse3
import trio

from objfs.config import FuseConfig
from objfs.errors import ConfigError, InvalidBucketName, NoSuchBucket
from objfs.fuse.operations import Operations
from objfs.metrics import Metrics
from objfs.store import Store
from objfs.store.names import check_bucket_name

log = logging.getLogger(__name__)


def _mounted_at(path: str) -> bool:
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 1 and fields[1].replace("\\040", " ") == path:
                return True
    return False


def prepare_mountpoint(mountpoint: str) -> str:
    """Make the mountpoint usable and return its absolute path: unmount what a
    killed node left behind ("Transport endpoint is not connected"), create the
    directory if missing.

    Raises:
        ConfigError: no FUSE here, something else is mounted there, or it is not
            a directory.
    """
    if not os.path.exists("/dev/fuse"):
        raise ConfigError("fuse.mountpoint: this machine has no /dev/fuse (FUSE is not available)")
    path = os.path.abspath(mountpoint)
    try:
        os.stat(path)
    except FileNotFoundError:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"fuse.mountpoint: cannot create {path}: {exc.strerror}") from exc
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise ConfigError(f"fuse.mountpoint: {path}: {exc.strerror}") from exc
        log.warning("%s: clearing the stale mount of a node that did not stop cleanly", path)
        tool = shutil.which("fusermount3") or shutil.which("fusermount")
        command = [tool, "-u", "-z", path] if tool else ["umount", "-l", path]
        subprocess.run(command, check=False, capture_output=True)
    else:
        if _mounted_at(path):
            raise ConfigError(f"fuse.mountpoint: {path} already has something mounted on it")
    if not os.path.isdir(path):
        raise ConfigError(f"fuse.mountpoint: {path} is not a directory")
    return path


def check_mount_settings(config: FuseConfig) -> None:
    """What `objfs config check` can say of [fuse] without touching anything (the
    node may be running with the mount in place): FUSE exists, the mountpoint is
    a directory or can be made, the bucket name is valid.

    Raises:
        ConfigError: naming the key.
    """
    if not os.path.exists("/dev/fuse"):
        raise ConfigError("fuse.mountpoint: this machine has no /dev/fuse (FUSE is not available)")
    path = os.path.abspath(config.mountpoint)
    try:
        if not stat.S_ISDIR(os.stat(path).st_mode):
            raise ConfigError(f"fuse.mountpoint: {path} is not a directory")
    except FileNotFoundError:
        parent = os.path.dirname(path)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.access(parent, os.W_OK):
            raise ConfigError(f"fuse.mountpoint: cannot create {path} in {parent}") from None
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:  # a stale mount: serve clears it
            raise ConfigError(f"fuse.mountpoint: {path}: {exc.strerror}") from exc
    if config.bucket:
        try:
            check_bucket_name(config.bucket)
        except InvalidBucketName as exc:
            raise ConfigError(f"fuse.bucket: {exc}") from None


def check_mount_config(config: FuseConfig) -> None:
    """Refuse a mount that cannot work, naming the key, before the node starts.

    Raises:
        ConfigError: no FUSE, a mountpoint in use or not a directory, a bad bucket name.
    """
    prepare_mountpoint(config.mountpoint)
    if config.bucket:
        try:
            check_bucket_name(config.bucket)
        except InvalidBucketName as exc:
            raise ConfigError(f"fuse.bucket: {exc}") from None


READ_AHEAD_KB = 1024  # the kernel's default of 128 KiB is eight trips per MiB read


async def _read_ahead_after_init(path: str) -> None:
    # The kernel sets the mount's read-ahead from the FUSE INIT exchange, which the
    # main loop answers once it runs: set ours after that.
    await trio.sleep(0.5)
    await trio.to_thread.run_sync(_read_ahead, path, READ_AHEAD_KB)


def _read_ahead(path: str, kib: int) -> None:
    """Let the kernel read ahead `kib` KiB through the mount (root only; best effort:
    a mount that keeps the default is slower, not wrong)."""
    # Not os.stat(path): the mount answers only once its loop runs (a deadlock here).
    device = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 4 and fields[4].replace("\\040", " ") == path:
                device = fields[2]  # major:minor; the last mount there is ours
    try:
        if device is None:
            raise FileNotFoundError(2, "not in /proc/self/mountinfo")
        with open(f"/sys/class/bdi/{device}/read_ahead_kb", "w", encoding="ascii") as file:
            file.write(str(kib))
    except OSError as exc:
        log.info("%s: read-ahead left as it is (%s)", path, exc.strerror)


def _may_allow_other() -> bool:
    """Root may always let other users in; anyone else only if fuse.conf says so."""
    if os.getuid() == 0:
        return True
    try:
        with open("/etc/fuse.conf", encoding="utf-8") as conf:
            if any(line.strip() == "user_allow_other" for line in conf):
                return True
    except OSError:
        pass
    log.warning(
        "fuse.allow_other: not root and no user_allow_other in /etc/fuse.conf: "
        "only this user can use the mount"
    )
    return False


async def run_mount(
    store: Store,
    config: FuseConfig,
    *,
    metrics: Metrics | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Mount and serve until `stop_mount`; `task_status` gets the mountpoint's
    absolute path as soon as the kernel has it (use `mount_answers` to know the
    mount serves requests)."""
    path = await trio.to_thread.run_sync(prepare_mountpoint, config.mountpoint)
    if config.bucket:
        try:
            store.head_bucket(config.bucket)
        except NoSuchBucket:
            log.info("creating bucket %s for the mount", config.bucket)
            await store.create_bucket(config.bucket)
    uid = os.getuid() if config.default_uid < 0 else config.default_uid
    gid = os.getgid() if config.default_gid < 0 else config.default_gid
    operations = Operations(
        store,
        bucket=config.bucket,
        uid=uid,
        gid=gid,
        timeout_s=config.cache_timeout_ms / 1000,
        metrics=metrics,
    )
    await operations.prepare()
    options = set(pyfuse3.default_options)  # default_permissions: the kernel checks modes
    options |= {"fsname=objfs", "subtype=objfs"}
    if config.allow_other and _may_allow_other():
        options.add("allow_other")
    pyfuse3.init(operations, path, options)
    unwatch = store.watch(operations.coherence.on_change)
    log.info("mounted %s at %s", config.bucket or "every bucket", path)
    try:
        async with trio.open_nursery() as nursery:
            operations.nursery = nursery
            nursery.start_soon(operations.coherence.run)
            nursery.start_soon(_read_ahead_after_init, path)
            task_status.started(path)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()
    finally:
        unwatch()
        with trio.CancelScope(shield=True):
            await operations.close()
        pyfuse3.close(unmount=True)
        log.info("unmounted %s", path)


async def mount_answers(path: str, timeout_s: float = 10.0) -> bool:
    """Whether the mount at `path` answers a stat within `timeout_s`. The stat runs
    in a worker thread while the event loop serves it (from the loop itself it
    would wait for itself); a mount that never answers leaves that thread behind."""
    with trio.move_on_after(timeout_s):
        try:
            await trio.to_thread.run_sync(os.stat, path, abandon_on_cancel=True)
        except OSError as exc:
            log.error("the mount at %s does not answer: %s", path, exc)
            return False
        return True
    log.error("the mount at %s did not answer within %.0f s", path, timeout_s)
    return False


def stop_mount() -> None:
    """End `run_mount`'s main loop (from the event loop's thread)."""
    try:
        pyfuse3.terminate()
    except Exception:  # not mounted (yet, or any more): nothing to stop
        log.debug("no mount to stop", exc_info=True)
