"""FUSE face: a 1 GiB file through the mount vs S3 and ext4; small files; 4 KiB random writes.

What it measures, in one run, on one node started as `objfs serve --data DIR
--mount MNT --config CFG` in a child process (six device files under --dir, 4+2
as the embedded default; CFG says `[s3] address = "127.0.0.1:0"` and the S3
address is read from the node's "objfs: serving S3 on ..." line; root keys from
OBJFS_ROOT_ACCESS_KEY / OBJFS_ROOT_SECRET_KEY). The bucket `bench` is made with
mkdir at the mount's root, so the mount, S3 and ext4 all write to the same disk
(the ext4 files sit in the same scratch directory as the device files).

1. **Sequential 1 GiB**, --repeat rounds, the three targets taking turns at
   going first:
   - mount: a fresh file written with 1 MiB `write`s (as cp or dd do), then
     fsync and close (close stores what the face still holds and sets the ETag);
     then read back with 1 MiB `read`s, every byte compared. The face opens
     every file with keep_cache=False, so the kernel drops the file's page cache
     at open; the bench also calls posix_fadvise(DONTNEED) first.
   - S3: boto3 `put_object` of the same 1 GiB (`bytes` body, checksums
     "when_required": over http botocore still signs the payload, so the client
     hashes it with SHA256 first) and `get_object`, the body read in 1 MiB
     chunks and compared. Same node, same bucket.
   - ext4: a fresh file in the scratch directory, same 1 MiB writes, fsync,
     close; then posix_fadvise(DONTNEED) (the pages are clean after the fsync,
     so they go: the read comes from the disk) and the same 1 MiB reads.
   A read phase stops after --read-seconds (the rate is taken over what it
   read; the table says when it was cut short). Targets: mount / S3 >= 0.8 for
   write and read; mount / ext4 >= 0.5 (a goal).

2. **Small files**: create (O_CREAT|O_EXCL, one write of --small-bytes, close),
   then stat of each, then unlink of each, of --files files in one new
   directory, through the mount and on ext4 (no fsync on ext4: what an
   application sees by default; objfs commits every step to its WAL before it
   answers). The mount's directory is in a bucket of its own (`smallfiles`):
   a path walk through a bucket's directory counts the bucket's subdirectories
   when a change has reset that count, which unpacks every object at the
   bucket's root, so the 1 GiB file of phase 1 beside them would halve the
   rate. The mount's create pass stops after --small-seconds; stat and unlink
   then cover the files it made. Figure: files/s through all three steps;
   target mount / ext4 >= 0.1. Also: the node's device bytes per file (WAL
   commits) and, as the floor of a commit, the rate of 4 KiB O_DIRECT write +
   fdatasync pairs on a file in the scratch directory (one thread, 1 s).

3. **4 KiB random writes** into the 1 GiB file the last round wrote through
   the mount: --random-writes `pwrite`s of 4 KiB at random 4 KiB-aligned offsets
   (seeded), an fsync every --fsync-every, stopped after --random-seconds. The
   face gathers the writes and the fsync stores them, so nearly all the time is
   in the fsyncs: the cap is seen between groups, and the group under way ends.
   Figures: writes/s, and **device bytes per application byte**: the node's
   `write_bytes` from /proc/PID/io (which counts its O_DIRECT writes to the
   device files: data fragments, WAL mirrors, checkpoints, everything) over
   the phase, divided by 4 KiB x writes. Expected near (k+m)/k (1.5 for 4+2),
   not the file size; the verdict says met when it is at most twice that. What
   exceeds (k+m)/k x 4 KiB per write is printed (WAL records, padding of short
   stores to 4 KiB blocks, checkpoints). A control of lone commits (`utime` of a
   small file through the mount: one metadata record, no data) shows what one
   WAL commit costs in device bytes and time. Limit: the same offsets written
   into the ext4 file (fsync every --fsync-every), ratio printed without a
   target.

Beside each figure: the node's CPU (utime + stime of all its threads, from
/proc/PID/stat) over the phase, per MiB or per operation, since the node and
this client share the machine's vCPUs.

Rows are medians over the rounds with min and max; ratios are taken within a
round and their median printed. Nothing asserts a timing: the table says met or
missed and the script exits 0. --quick: a 128 MiB file, 1,000 small files,
2,000 random writes, 2 rounds, shorter caps (~1 min). Without /dev/fuse or
fusermount3 the script says so and exits 0. The first line names the objfs the
node runs (its directory, commit and uncommitted changes): the node imports
objfs at start, so PYTHONPATH may point at an export of one commit (`git
archive HEAD objfs | tar -x -C DIR`) while others edit the checkout.
"""

from __future__ import annotations

import argparse
import importlib.util
import mmap
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from _util import DEFAULT_BASE_DIR, MB, Rounds, Summary, precondition, print_row, scratch_dir

BUCKET = "bench"
SMALL_BUCKET = "smallfiles"  # its own bucket: see small_files()
S3_KEY = "s3-seq.bin"  # not seq.bin: that key is the mount's file (one namespace)
ROOT_KEY, ROOT_SECRET = "BENCHFUSEKEY0123", "bench-fuse-secret-0123456789abcdef"
REGION = "us-east-1"
MiB = 1024 * 1024
PAGE = 4096
BLOCK = 1 * MiB  # the application's read and write size for sequential I/O
STARTUP_TIMEOUT_S = 60.0
MOUNT_VS_S3_TARGET = 0.8
MOUNT_VS_EXT4_GOAL = 0.5
SMALL_FILES_GOAL = 0.1
AMPLIFICATION_SLACK = 2.0  # "near (k+m)/k": met when at most twice that

FULL = {
    "file_mib": 1024,
    "files": 10_000,
    "random_writes": 20_000,
    "fsync_every": 1_000,
    "repeat": 3,
    "read_seconds": 15.0,
    "small_seconds": 15.0,
    "random_seconds": 30.0,
}
QUICK = {
    "file_mib": 128,
    "files": 1_000,
    "random_writes": 2_000,
    "fsync_every": 250,
    "repeat": 2,
    "read_seconds": 5.0,
    "small_seconds": 5.0,
    "random_seconds": 10.0,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=DEFAULT_BASE_DIR, help="scratch directory (a disk)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and caps (~1 min)")
    parser.add_argument("--file-mib", type=int, help="sequential file size (1024; quick 128)")
    parser.add_argument("--files", type=int, help="small files (10000; quick 1000)")
    parser.add_argument("--small-bytes", type=int, default=PAGE, help="bytes in each small file")
    parser.add_argument("--random-writes", type=int, help="4 KiB writes (20000; quick 2000)")
    parser.add_argument("--fsync-every", type=int, help="random writes per fsync (1000; 250)")
    parser.add_argument("--repeat", type=int, help="sequential and small-file rounds (3; 2)")
    parser.add_argument("--read-seconds", type=float, help="cap of each sequential read (15; 5)")
    parser.add_argument("--small-seconds", type=float, help="cap of the mount's creates (15; 5)")
    parser.add_argument("--random-seconds", type=float, help="cap of the random writes (30; 10)")
    parser.add_argument("--device-mib", type=int, help="size of each of the 6 device files")
    parser.add_argument(
        "--no-precondition", action="store_true", help="do not write the device files first"
    )
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.device_mib is None:
        # Room for the mount's file and the S3 object at 1.5 device bytes per byte,
        # the random writes' new pieces, and as much again.
        args.device_mib = max(256, args.file_mib)
    return args


# -- the node ----------------------------------------------------------------------


def objfs_command() -> list[str]:
    """The `objfs` console script beside this interpreter (.venv/bin/objfs)."""
    script = os.path.join(os.path.dirname(sys.executable), "objfs")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "objfs"]


def process_cpu_seconds(pid: int) -> float:
    """utime + stime so far of process `pid` (every thread, dead ones too)."""
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_write_bytes(pid: int) -> int:
    """Bytes process `pid` has sent to storage (/proc/PID/io write_bytes; O_DIRECT
    writes are counted there when they are issued)."""
    with open(f"/proc/{pid}/io") as file:
        for line in file:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError(f"no write_bytes in /proc/{pid}/io")


def is_mounted(path: str) -> bool:
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
        return any(line.split()[1] == path for line in mounts if len(line.split()) > 1)


@dataclass(frozen=True, slots=True)
class Counters:
    """A node's cumulative CPU seconds and device bytes written, at one moment."""

    cpu_s: float
    written: int

    def __sub__(self, other: Counters) -> Counters:
        return Counters(self.cpu_s - other.cpu_s, self.written - other.written)


class Node:
    """`objfs serve --mount` in a child process; stopped with SIGTERM."""

    def __init__(self, data_dir: str, mountpoint: str, config: str, log_path: str) -> None:
        self.argv = [
            *objfs_command(),
            "serve",
            "--data",
            data_dir,
            "--mount",
            mountpoint,
            "--config",
            config,
        ]
        self.mountpoint, self.log_path = mountpoint, log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.endpoint = ""
        self.policy = (0, 0)  # (k, m) from the node's status lines

    def start(self, env: dict[str, str]) -> float:
        """Start; wait until S3 listens and the mount is up. Seconds taken."""
        start = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        while True:
            text = self.log_text()
            found = re.search(r"serving S3 on (?:http://)*(\S+?)[,;]", text)
            if found and "mounted at" in text and is_mounted(self.mountpoint):
                break
            if self.process.poll() is not None or time.perf_counter() - start > STARTUP_TIMEOUT_S:
                self.stop()
                raise RuntimeError(f"{self.argv} did not start:\n{text[-3000:]}")
            time.sleep(0.05)
        self.endpoint = f"http://{found.group(1)}"
        shape = re.search(r"erasure:\s+(\d+)\+(\d+)", text)
        if shape is None:
            raise RuntimeError(f"no erasure line in the node's log:\n{text[-3000:]}")
        self.policy = (int(shape.group(1)), int(shape.group(2)))
        return time.perf_counter() - start

    def log_text(self) -> str:
        with open(self.log_path, "rb") as file:
            return file.read().decode(errors="replace")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def counters(self) -> Counters:
        return Counters(process_cpu_seconds(self.pid), process_write_bytes(self.pid))

    def stop(self) -> None:
        """SIGTERM and wait (the node unmounts itself); SIGKILL and a lazy unmount
        if it does not stop. Safe to call more than once."""
        process = self.process
        try:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(90)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                    print("the node did not stop in 90 s: killed", flush=True)
        finally:
            if is_mounted(self.mountpoint):
                tool = shutil.which("fusermount3") or shutil.which("fusermount")
                command = [tool, "-u", "-z", self.mountpoint] if tool else ["umount", "-l"]
                if not tool:
                    command.append(self.mountpoint)
                subprocess.run(command, check=False, capture_output=True)


def boto_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ROOT_KEY,
        aws_secret_access_key=ROOT_SECRET,
        region_name=REGION,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=10,
            read_timeout=600,
        ),
    )


# -- sequential --------------------------------------------------------------------


def write_file(path: str, data: bytes) -> float:
    """Write a fresh file with BLOCK writes, fsync, close; seconds from open to close."""
    view = memoryview(data)
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        for offset in range(0, len(data), BLOCK):
            chunk = view[offset : offset + BLOCK]
            while chunk:
                chunk = chunk[os.write(fd, chunk) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def drop_cache(path: str) -> None:
    """Drop the file's clean pages from the page cache."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_file(path: str, data: bytes, cap_s: float) -> tuple[int, float]:
    """Read a file with BLOCK reads, comparing every byte, until its end or `cap_s`:
    (bytes read, seconds from open to close)."""
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    offset = 0
    try:
        while offset < len(data) and time.perf_counter() - start < cap_s:
            chunk = os.read(fd, BLOCK)
            if not chunk:
                break
            if chunk != data[offset : offset + len(chunk)]:
                raise RuntimeError(f"{path}: other bytes at {offset}")
            offset += len(chunk)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - start
    if offset < len(data) and seconds < cap_s:
        raise RuntimeError(f"{path}: {offset} bytes, {len(data)} were written")
    return offset, seconds


def s3_put(client: Any, key: str, data: bytes) -> float:
    start = time.perf_counter()
    client.put_object(Bucket=BUCKET, Key=key, Body=data)
    return time.perf_counter() - start


def s3_get(client: Any, key: str, data: bytes, cap_s: float) -> tuple[int, float]:
    start = time.perf_counter()
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"]
    offset = 0
    try:
        for chunk in body.iter_chunks(BLOCK):
            if chunk != data[offset : offset + len(chunk)]:
                raise RuntimeError(f"S3 GET {key}: other bytes at {offset}")
            offset += len(chunk)
            if time.perf_counter() - start >= cap_s:
                break
    finally:
        body.close()
    return offset, time.perf_counter() - start


# -- small files -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmallFiles:
    count: int
    create_s: float
    stat_s: float
    unlink_s: float

    @property
    def files_per_s(self) -> float:
        return self.count / (self.create_s + self.stat_s + self.unlink_s)


def small_files(directory: str, count: int, body: bytes, cap_s: float) -> SmallFiles:
    """Create up to `count` files in a new directory (stopping after `cap_s`),
    stat each, unlink each; the directory is removed (not timed)."""
    os.mkdir(directory)
    names = [os.path.join(directory, f"f{i:06d}") for i in range(count)]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    made = 0
    start = time.perf_counter()
    try:
        for name in names:
            fd = os.open(name, flags, 0o644)
            made += 1
            try:
                os.write(fd, body)
            finally:
                os.close(fd)
            if time.perf_counter() - start >= cap_s:
                break
        created = time.perf_counter()
        for name in names[:made]:
            if os.stat(name).st_size != len(body):
                raise RuntimeError(f"{name}: not {len(body)} bytes")
        statted = time.perf_counter()
        for name in names[:made]:
            os.unlink(name)
        unlinked = time.perf_counter()
    except BaseException:
        for name in names[:made]:
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
        raise
    finally:
        try:
            os.rmdir(directory)
        except OSError:
            pass
    return SmallFiles(made, created - start, statted - created, unlinked - statted)


def sync_rate(directory: str, seconds: float = 1.0) -> float:
    """4 KiB O_DIRECT write + fdatasync pairs per second into a 4 MiB file (fresh
    blocks in turn), one thread: the floor under any durable commit here."""
    path = os.path.join(directory, "sync-probe.img")
    block = mmap.mmap(-1, PAGE)  # page-aligned, as O_DIRECT wants
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT | os.O_CLOEXEC, 0o644)
    try:
        os.posix_fallocate(fd, 0, 4 * MiB)
        for offset in range(0, 4 * MiB, PAGE):  # written once: no unwritten extents
            os.pwritev(fd, [block], offset)
        os.fdatasync(fd)
        count = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            os.pwritev(fd, [block], (count * PAGE) % (4 * MiB))
            os.fdatasync(fd)
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        os.close(fd)
        block.close()
        os.unlink(path)


# -- random writes -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Group:
    """Random writes up to and including one fsync."""

    writes: int
    seconds: float
    node: Counters | None  # what the node spent on them (None on ext4)


def random_writes(
    path: str,
    offsets: list[int],
    every: int,
    cap_s: float,
    counters: Callable[[], Counters] | None,
) -> tuple[list[Group], Counters | None]:
    """4 KiB pwrites at `offsets`, an fsync after each `every`, until done or `cap_s`.
    Returns the groups and the node's counters over the whole phase, close included."""
    buffers = [random.Random(i).randbytes(PAGE) for i in range(16)]
    groups: list[Group] = []
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    first = counters() if counters else None
    start = time.perf_counter()
    try:
        done = 0
        while done < len(offsets) and time.perf_counter() - start < cap_s:
            before = counters() if counters else None
            group_start = time.perf_counter()
            stop = min(done + every, len(offsets))
            while done < stop:
                os.pwrite(fd, buffers[done % len(buffers)], offsets[done])
                done += 1
                if time.perf_counter() - start >= cap_s:
                    break
            os.fsync(fd)
            seconds = time.perf_counter() - group_start
            spent = counters() - before if counters and before else None
            writes = done - sum(group.writes for group in groups)
            groups.append(Group(writes, seconds, spent))
    finally:
        os.close(fd)
    whole = counters() - first if counters and first else None
    return groups, whole


def commits(path: str, count: int, counters: Callable[[], Counters]) -> tuple[float, Counters]:
    """`count` utime calls on one file through the mount: one metadata-only WAL
    commit each. (seconds, node counters over them)."""
    before = counters()
    start = time.perf_counter()
    for i in range(count):
        os.utime(path, ns=(i * 1_000_000_000, i * 1_000_000_000))
    seconds = time.perf_counter() - start
    return seconds, counters() - before


# -- the run -----------------------------------------------------------------------


def setup(args: argparse.Namespace, root: str, env: dict[str, str]) -> str:
    """Six device files under ROOT/data/devices, written whole, formatted by the CLI."""
    from objfs.store.device import create_device_file, make_directory

    data_dir = os.path.join(root, "data")
    directory = os.path.join(data_dir, "devices")
    make_directory(directory)
    size = args.device_mib * MiB
    paths = [os.path.join(directory, f"dev{i}.img") for i in range(6)]
    for path in paths:
        create_device_file(path, size)
    start = time.perf_counter()
    if not args.no_precondition:
        precondition(paths, size)
    seconds = time.perf_counter() - start
    subprocess.run(
        [*objfs_command(), "--data", data_dir, "format", *paths],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    done = "written whole" if not args.no_precondition else "fallocated only"
    print(
        f"6 device files of {args.device_mib} MiB under {directory}, {done} ({seconds:.1f} s), "
        "formatted with `objfs format`",
        flush=True,
    )
    return data_dir


@dataclass
class Results:
    rounds: Rounds = field(default_factory=Rounds)
    file_bytes: int = 0
    read_capped: dict[str, int] = field(default_factory=dict)  # rounds cut short, by target
    small_capped: int = 0  # rounds whose mount create pass hit its cap
    small_counts: list[int] = field(default_factory=list)  # files made through the mount
    mount_groups: list[Group] = field(default_factory=list)
    mount_random: Counters | None = None
    ext4_groups: list[Group] = field(default_factory=list)
    commit_count: int = 0
    commit_seconds: float = 0.0
    commit_node: Counters | None = None
    policy: tuple[int, int] = (4, 2)
    node_start_s: float = 0.0


def sequential_round(
    results: Results,
    round_number: int,
    node: Node,
    client: Any,
    mount_dir: str,
    ext4_dir: str,
    data: bytes,
    cap_s: float,
) -> None:
    rounds = results.rounds
    paths = {"mount": os.path.join(mount_dir, "seq.bin"), "ext4": os.path.join(ext4_dir, "seq.bin")}
    targets = ["ext4", "mount", "s3"]
    shift = round_number % len(targets)
    for target in targets[shift:] + targets[:shift]:  # each goes first in turn
        before = node.counters()
        if target == "s3":
            client.delete_object(Bucket=BUCKET, Key=S3_KEY)
            before = node.counters()
            seconds = s3_put(client, S3_KEY, data)
        else:
            if os.path.exists(paths[target]):
                os.unlink(paths[target])
            before = node.counters()
            seconds = write_file(paths[target], data)
        wrote = node.counters() - before
        rounds.add(f"{target}_write", len(data) / seconds / MB)
        if target == "s3":
            read, seconds = s3_get(client, S3_KEY, data, cap_s)
        else:
            drop_cache(paths[target])
            read, seconds = read_file(paths[target], data, cap_s)
        spent = node.counters() - before - wrote
        if read < len(data):
            results.read_capped[target] = results.read_capped.get(target, 0) + 1
        rounds.add(f"{target}_read", read / seconds / MB)
        rounds.add(f"{target}_read_mib", read / MiB)
        if target != "ext4":
            rounds.add(f"{target}_write_cpu_ms_per_mib", wrote.cpu_s * 1000 / (len(data) / MiB))
            rounds.add(f"{target}_write_device_per_byte", wrote.written / len(data))
            rounds.add(f"{target}_read_cpu_ms_per_mib", spent.cpu_s * 1000 / (read / MiB))


def source_state() -> str:
    """Which objfs the node will run: where it is imported from (PYTHONPATH may point
    at an export of one commit) and, in a git checkout, its commit and whether its
    objfs/ differs from that commit."""
    spec = importlib.util.find_spec("objfs")
    if spec is None or spec.origin is None:
        return "objfs not found"
    package = os.path.dirname(spec.origin)
    repo = os.path.dirname(package)

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-C", repo, *argv], capture_output=True, text=True, check=True
        ).stdout

    try:
        if os.path.realpath(git("rev-parse", "--show-toplevel").strip()) != os.path.realpath(repo):
            return f"{package} (not a git checkout)"
        commit = git("rev-parse", "--short", "HEAD").strip()
        changed = git("status", "--porcelain", "--", "objfs").splitlines()
    except (OSError, subprocess.CalledProcessError):
        return f"{package} (not a git checkout)"
    dirty = [line[3:] for line in changed if line.strip()]
    state = f"{package}, commit {commit}"
    return state + (f", uncommitted changes in {', '.join(dirty)}" if dirty else "")


def run(args: argparse.Namespace) -> Results:
    results = Results()
    rounds = results.rounds
    env = {**os.environ, "OBJFS_ROOT_ACCESS_KEY": ROOT_KEY, "OBJFS_ROOT_SECRET_KEY": ROOT_SECRET}
    file_bytes = args.file_mib * MiB
    results.file_bytes = file_bytes
    pattern = os.urandom(min(file_bytes, 64 * MiB))
    data = pattern * (file_bytes // len(pattern)) + pattern[: file_bytes % len(pattern)]
    small_body = random.Random(1).randbytes(args.small_bytes)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    print(f"objfs: {source_state()}", flush=True)
    with scratch_dir(args.dir, "objfs-bench-fuse-") as root:
        data_dir = setup(args, root, env)
        config = os.path.join(root, "objfs.toml")
        with open(config, "w") as file:
            file.write('[s3]\naddress = "127.0.0.1:0"\n\n[node]\nadmin_address = "127.0.0.1:0"\n')
            if os.geteuid() != 0:
                file.write("\n[fuse]\nallow_other = false\n")  # needs user_allow_other
        mountpoint = os.path.join(root, "mnt")
        ext4_dir = os.path.join(root, "ext4")
        os.mkdir(ext4_dir)
        node = Node(data_dir, mountpoint, config, os.path.join(root, "node.log"))
        try:
            results.node_start_s = node.start(env)
            results.policy = node.policy
            print(
                f"node up in {results.node_start_s:.2f} s: S3 on {node.endpoint}, mounted at "
                f"{mountpoint}, {node.policy[0]}+{node.policy[1]}",
                flush=True,
            )
            mount_dir = os.path.join(mountpoint, BUCKET)
            os.mkdir(mount_dir)  # a new bucket
            small_dir = os.path.join(mountpoint, SMALL_BUCKET)
            os.mkdir(small_dir)
            client = boto_client(node.endpoint)

            # Warm-up, not measured: the node's worker threads, buffers, connections.
            warm = data[: min(len(data), 64 * MiB)]
            write_file(os.path.join(mount_dir, "warm.bin"), warm)
            read_file(os.path.join(mount_dir, "warm.bin"), warm, 60.0)
            os.unlink(os.path.join(mount_dir, "warm.bin"))
            s3_put(client, "s3-warm.bin", warm)
            s3_get(client, "s3-warm.bin", warm, 60.0)
            client.delete_object(Bucket=BUCKET, Key="s3-warm.bin")

            for round_number in range(args.repeat):
                sequential_round(
                    results,
                    round_number,
                    node,
                    client,
                    mount_dir,
                    ext4_dir,
                    data,
                    args.read_seconds,
                )
                print(f"sequential round {round_number + 1}/{args.repeat} done", flush=True)
            client.delete_object(Bucket=BUCKET, Key=S3_KEY)

            for round_number in range(args.repeat):
                places = [
                    ("ext4", ext4_dir, float("inf")),
                    ("mount", small_dir, args.small_seconds),
                ]
                if round_number % 2:
                    places.reverse()
                for name, base, cap in places:
                    before = node.counters()
                    small = small_files(
                        os.path.join(base, f"small-{round_number}"), args.files, small_body, cap
                    )
                    spent = node.counters() - before
                    rounds.add(f"{name}_files", small.files_per_s)
                    rounds.add(f"{name}_create", small.count / small.create_s)
                    rounds.add(f"{name}_stat", small.count / small.stat_s)
                    rounds.add(f"{name}_unlink", small.count / small.unlink_s)
                    if name == "mount":
                        results.small_counts.append(small.count)
                        results.small_capped += small.count < args.files
                        rounds.add("mount_files_cpu_us", spent.cpu_s * 1e6 / small.count)
                        rounds.add("mount_files_device_bytes", spent.written / small.count)
                rounds.add("sync_rate", sync_rate(root))
                print(f"small-file round {round_number + 1}/{args.repeat} done", flush=True)

            rng = random.Random(4096)
            offsets = [rng.randrange(file_bytes // PAGE) * PAGE for _ in range(args.random_writes)]
            results.mount_groups, results.mount_random = random_writes(
                os.path.join(mount_dir, "seq.bin"),
                offsets,
                args.fsync_every,
                args.random_seconds,
                node.counters,
            )
            print("random writes through the mount done", flush=True)
            results.ext4_groups, _ = random_writes(
                os.path.join(ext4_dir, "seq.bin"), offsets, args.fsync_every, float("inf"), None
            )
            control = os.path.join(mount_dir, "commit-control")
            with open(control, "wb") as file:
                file.write(small_body)
            results.commit_count = 200 if not args.quick else 100
            results.commit_seconds, results.commit_node = commits(
                control, results.commit_count, node.counters
            )
            os.unlink(control)
        finally:
            try:
                node.stop()
            finally:
                if is_mounted(mountpoint):
                    # Never let the scratch directory's removal walk into a live mount.
                    raise RuntimeError(f"{mountpoint} is still mounted; not removing {root}")
        log = node.log_text()
        if "Traceback" in log or "ERROR" in log:
            print(f"the node logged errors:\n{log[-3000:]}", flush=True)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    return results


# -- the report --------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    value: str
    ratio: str = ""
    target: str = ""
    verdict: str = ""


def met(value: float, target: float, *, at_most: bool = False) -> str:
    ok = value <= target if at_most else value >= target
    return "met" if ok else "MISSED"


def report(args: argparse.Namespace, results: Results) -> None:
    rounds = results.rounds
    mib = args.file_mib
    k, m = results.policy
    rows: list[Row] = []

    def rate(name: str) -> str:
        return rounds.of(name).show(0, "MB/s")

    def capped(target: str) -> str:
        cut = results.read_capped.get(target, 0)
        if not cut:
            return ""
        read = rounds.of(f"{target}_read_mib")
        return (
            f"; cut at {args.read_seconds:g} s in {cut} of {args.repeat} rounds "
            f"({read.median:,.0f} of {mib:,} MiB read)"
        )

    print(f"sequential {mib} MiB, 1 MiB writes (fsync, close) and reads, {args.repeat} rounds:")
    for target, label in (("ext4", "ext4"), ("s3", "S3 boto3"), ("mount", "mount")):
        print_row(f"{label} write", rate(f"{target}_write"))
        print_row(f"{label} read", rate(f"{target}_read") + capped(target))
    for target in ("s3", "mount"):
        print_row(
            f"node CPU per MiB, {target} write",
            rounds.of(f"{target}_write_cpu_ms_per_mib").show(1, "ms"),
        )
        print_row(
            f"node CPU per MiB, {target} read",
            rounds.of(f"{target}_read_cpu_ms_per_mib").show(1, "ms"),
        )
        print_row(
            f"device bytes per byte, {target} write",
            rounds.of(f"{target}_write_device_per_byte").show(2),
        )

    for operation in ("write", "read"):
        for against, label, goal in (
            ("s3", "S3", MOUNT_VS_S3_TARGET),
            ("ext4", "ext4", MOUNT_VS_EXT4_GOAL),
        ):
            ratio = rounds.ratio(f"mount_{operation}", f"{against}_{operation}")
            rows.append(
                Row(
                    f"seq {operation} {mib} MiB: mount / {label}",
                    f"mount {rounds.of(f'mount_{operation}').median:,.0f} MB/s, "
                    f"{label} {rounds.of(f'{against}_{operation}').median:,.0f} MB/s",
                    ratio.show(2),
                    f">= {goal}",
                    met(ratio.median, goal),
                )
            )

    counts = Summary.of([float(c) for c in results.small_counts])
    print(
        f"small files ({args.small_bytes} B): create, stat, unlink of {args.files:,} "
        f"(mount: {counts.median:,.0f} made, cap {args.small_seconds:g} s), {args.repeat} rounds:"
    )
    for name in ("ext4", "mount"):
        for step in ("create", "stat", "unlink"):
            print_row(f"{name} {step}", rounds.of(f"{name}_{step}").show(0, "ops/s"))
        print_row(f"{name} all three", rounds.of(f"{name}_files").show(0, "files/s"))
    print_row("node CPU per file (all three)", rounds.of("mount_files_cpu_us").show(0, "us"))
    assert results.commit_node is not None
    commit_bytes = results.commit_node.written / results.commit_count
    device = rounds.of("mount_files_device_bytes")
    print_row(
        "node device bytes per file (all three)",
        device.show(0, "B") + f"; ~{device.median / commit_bytes:.1f} lone commits' worth",
    )
    print_row("raw 4 KiB write + fdatasync, one thread", rounds.of("sync_rate").show(0, "/s"))
    for step in ("create", "stat", "unlink"):
        print_row(f"mount / ext4, {step}", rounds.ratio(f"mount_{step}", f"ext4_{step}").show(4))
    ratio = rounds.ratio("mount_files", "ext4_files")
    rows.append(
        Row(
            f"small files create+stat+unlink: mount / ext4 (mount made {counts.median:,.0f})",
            f"mount {rounds.of('mount_files').median:,.0f} files/s, "
            f"ext4 {rounds.of('ext4_files').median:,.0f} files/s",
            ratio.show(4),
            f">= {SMALL_FILES_GOAL}",
            met(ratio.median, SMALL_FILES_GOAL),
        )
    )

    groups, whole = results.mount_groups, results.mount_random
    writes = sum(group.writes for group in groups)
    seconds = sum(group.seconds for group in groups)
    ext4_writes = sum(group.writes for group in results.ext4_groups)
    ext4_rate = ext4_writes / sum(group.seconds for group in results.ext4_groups)
    mount_rate = writes / seconds
    print(
        f"4 KiB random writes into the {mib} MiB file, fsync every {args.fsync_every:,} "
        f"(cap {args.random_seconds:g} s):"
    )
    print_row("mount writes done", f"{writes:,} of {args.random_writes:,} in {seconds:.1f} s")
    print_row("mount writes/s, whole phase", f"{mount_rate:,.0f}")
    print_row(
        "mount writes/s per fsync group",
        Summary.of([g.writes / g.seconds for g in groups]).show(0)
        + f"; first {groups[0].writes / groups[0].seconds:,.0f}, "
        f"last {groups[-1].writes / groups[-1].seconds:,.0f}",
    )
    print_row("ext4 writes/s, same offsets", f"{ext4_rate:,.0f} ({ext4_writes:,} writes)")
    assert whole is not None
    amplification = whole.written / (writes * PAGE)
    commit_rate = results.commit_count / results.commit_seconds
    expected = (k + m) / k
    print_row("node CPU per write, whole phase", f"{whole.cpu_s * 1e6 / writes:,.0f} us")
    first, last = groups[0], groups[-1]
    if first.node is not None and last.node is not None:
        print_row(
            "node CPU per write, first / last group",
            f"{first.node.cpu_s * 1e6 / first.writes:,.0f} / "
            f"{last.node.cpu_s * 1e6 / last.writes:,.0f} us",
        )
    print_row("device bytes per write", f"{whole.written / writes:,.0f} B")
    print_row(
        "  beyond (k+m)/k x 4 KiB",
        f"{whole.written / writes - expected * PAGE:,.0f} B per write "
        "(WAL records, block padding, checkpoints)",
    )
    print_row(
        "a lone commit (utime through the mount)",
        f"{commit_rate:,.0f}/s, {commit_bytes:,.0f} device B each, "
        f"{results.commit_node.cpu_s * 1e6 / results.commit_count:,.0f} us node CPU",
    )
    rows.append(
        Row(
            "4 KiB random writes through the mount",
            f"{mount_rate:,.0f} writes/s ({writes:,} in {seconds:.0f} s); ext4 {ext4_rate:,.0f}/s",
            f"{mount_rate / ext4_rate:.4f} of ext4",
            "report",
            "",
        )
    )
    rows.append(
        Row(
            "device bytes / app byte, random 4 KiB writes",
            f"{amplification:.2f} ({whole.written / writes:,.0f} B per 4 KiB write)",
            f"{amplification / expected:.1f}x of (k+m)/k",
            f"near {expected:.2f} (<= {expected * AMPLIFICATION_SLACK:.1f})",
            met(amplification, expected * AMPLIFICATION_SLACK, at_most=True),
        )
    )

    print()
    print("| figure | value (medians) | ratio (median, min-max) | target | |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row.figure} | {row.value} | {row.ratio} | {row.target} | {row.verdict} |")
    print_row("node start (objfs serve to mounted)", f"{results.node_start_s:.2f} s")


def main() -> None:
    args = parse_args()
    if not os.path.exists("/dev/fuse") or not (
        shutil.which("fusermount3") or shutil.which("fusermount")
    ):
        print("skipped: this machine has no /dev/fuse or no fusermount3", flush=True)
        return
    start = time.perf_counter()
    results = run(args)
    report(args, results)
    print(f"took {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
