"""Attributes through the mount (as root): chmod, chown, times with nanoseconds
(UTIME_NOW/UTIME_OMIT too), the parent directory's times, statfs, and the
attributes S3 shows as x-amz-meta-* the way s3fs does."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from typing import Any

import pytest
from fuse_node import BUCKET, Mounted
from mount_helpers import (
    AT_SYMLINK_NOFOLLOW,
    UTIME_NOW,
    UTIME_OMIT,
    key_of,
    prefix_of,
    s3_objects,
    utimensat,
    write_file,
)

OLD_NS = 1_000_000_000_123_456_789  # 2001-09-09, with nanoseconds
CLOCK_TICK_NS = 20_000_000  # the kernel's coarse clock may lag time.time_ns() by a tick

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="chown to other users needs root")


def test_chmod(mounted: Mounted, workdir: str, s3: Any) -> None:
    path = os.path.join(workdir, "f")
    write_file(path, b"bytes stay")
    head = s3.head_object(Bucket=BUCKET, Key=key_of(mounted, path))
    for mode in (0o600, 0o4755, 0o2711, 0o444, 0o7777, 0o000):
        os.chmod(path, mode)
        info = os.stat(path)
        assert info.st_mode == stat.S_IFREG | mode
    d = os.path.join(workdir, "d")
    os.mkdir(d)
    os.chmod(d, 0o1777)
    assert os.stat(d).st_mode == stat.S_IFDIR | 0o1777
    with open(path, "rb") as file:  # root reads a 0000 file
        assert file.read() == b"bytes stay"
    after = s3.head_object(Bucket=BUCKET, Key=key_of(mounted, path))
    assert (after["ETag"], after["ContentLength"]) == (head["ETag"], head["ContentLength"])


def test_chmod_of_an_s3_made_file_and_directory(mounted: Mounted, workdir: str, s3: Any) -> None:
    prefix = prefix_of(workdir)
    s3.put_object(Bucket=BUCKET, Key=prefix + "bare/obj", Body=b"from s3")
    bare, obj = os.path.join(workdir, "bare"), os.path.join(workdir, "bare", "obj")
    os.chmod(obj, 0o600)
    os.chmod(bare, 0o700)  # a directory with no marker gets one to hold its mode
    assert os.stat(obj).st_mode == stat.S_IFREG | 0o600
    assert os.stat(bare).st_mode == stat.S_IFDIR | 0o700
    assert prefix + "bare/" in s3_objects(s3, prefix)
    with open(obj, "rb") as file:
        assert file.read() == b"from s3"


@root_only
def test_chown(workdir: str) -> None:
    path = os.path.join(workdir, "owned")
    write_file(path, b"x")
    os.chown(path, 1234, 5678)
    info = os.stat(path)
    assert (info.st_uid, info.st_gid) == (1234, 5678)
    os.chown(path, -1, 42)  # -1 keeps the owner
    info = os.stat(path)
    assert (info.st_uid, info.st_gid) == (1234, 42)
    os.chown(path, 7, -1)
    info = os.stat(path)
    assert (info.st_uid, info.st_gid) == (7, 42)
    d = os.path.join(workdir, "d")
    os.mkdir(d)
    os.chown(d, 99, 98)
    assert (os.stat(d).st_uid, os.stat(d).st_gid) == (99, 98)


@root_only
def test_lchown_changes_the_link_not_its_target(workdir: str) -> None:
    target, link = os.path.join(workdir, "target"), os.path.join(workdir, "link")
    write_file(target, b"t")
    os.symlink("target", link)
    os.lchown(link, 555, 556)
    assert (os.lstat(link).st_uid, os.lstat(link).st_gid) == (555, 556)
    assert (os.stat(target).st_uid, os.stat(target).st_gid) == (os.getuid(), os.getgid())


@pytest.mark.parametrize(
    ("atime_ns", "mtime_ns"),
    [
        (1_600_000_000_123_456_789, 1_500_000_000_987_654_321),
        (1, 999_999_999),
        (4_102_444_800_000_000_001, 4_102_444_800_999_999_999),  # 2100
    ],
)
def test_utime_with_nanoseconds(workdir: str, atime_ns: int, mtime_ns: int) -> None:
    path = os.path.join(workdir, "timed")
    write_file(path, b"t")
    os.utime(path, ns=(atime_ns, mtime_ns))
    info = os.stat(path)
    assert (info.st_atime_ns, info.st_mtime_ns) == (atime_ns, mtime_ns)
    d = os.path.join(workdir, "d")
    os.mkdir(d)
    os.utime(d, ns=(atime_ns, mtime_ns))
    info = os.stat(d)
    assert (info.st_atime_ns, info.st_mtime_ns) == (atime_ns, mtime_ns)


def test_utimensat_now_and_omit(workdir: str) -> None:
    path = os.path.join(workdir, "f")
    write_file(path, b"t")
    os.utime(path, ns=(OLD_NS, OLD_NS + 1))
    # atime omitted, mtime given
    utimensat(path, (0, UTIME_OMIT), (1_234_567_890, 42))
    info = os.stat(path)
    assert info.st_atime_ns == OLD_NS
    assert info.st_mtime_ns == 1_234_567_890_000_000_042
    # atime now, mtime omitted (the kernel's clock for "now" is coarse: a tick early)
    before = time.time_ns() - CLOCK_TICK_NS
    utimensat(path, (0, UTIME_NOW), (0, UTIME_OMIT))
    after = time.time_ns()
    info = os.stat(path)
    assert before <= info.st_atime_ns <= after
    assert info.st_mtime_ns == 1_234_567_890_000_000_042
    # both omitted: nothing changes (but the call succeeds)
    utimensat(path, (0, UTIME_OMIT), (0, UTIME_OMIT))
    assert os.stat(path).st_mtime_ns == 1_234_567_890_000_000_042
    # both now (utime(path) with no times)
    os.utime(path, ns=(OLD_NS, OLD_NS))
    before = time.time_ns() - CLOCK_TICK_NS
    os.utime(path)
    after = time.time_ns()
    info = os.stat(path)
    assert before <= info.st_atime_ns <= after
    assert before <= info.st_mtime_ns <= after


def test_utimensat_of_a_symlink_itself(workdir: str) -> None:
    target, link = os.path.join(workdir, "target"), os.path.join(workdir, "link")
    write_file(target, b"t")
    os.utime(target, ns=(OLD_NS, OLD_NS))
    os.symlink("target", link)
    utimensat(link, (1_111, 1), (2_222, 2), AT_SYMLINK_NOFOLLOW)
    info = os.lstat(link)
    assert (info.st_atime_ns, info.st_mtime_ns) == (1_111_000_000_001, 2_222_000_000_002)
    assert os.stat(target).st_mtime_ns == OLD_NS


def changes_ctime(path: str, change: Callable[[], object]) -> bool:
    """Does `change()` move the ctime of `path` to now?"""
    os.utime(path, ns=(OLD_NS, OLD_NS))  # ctime is now; wait for the clock to move on
    before = time.time_ns()
    while time.time_ns() == before:
        pass
    before = time.time_ns()
    change()
    return os.lstat(path).st_ctime_ns >= before


@root_only
def test_ctime_moves_with_every_change(workdir: str) -> None:
    path = os.path.join(workdir, "f")
    write_file(path, b"t")
    assert changes_ctime(path, lambda: os.chmod(path, 0o640))
    assert changes_ctime(path, lambda: os.chown(path, 10, 10))
    assert changes_ctime(path, lambda: os.utime(path, ns=(5, 5)))
    assert changes_ctime(path, lambda: os.truncate(path, 100))
    assert changes_ctime(path, lambda: write_file(path, b"rewritten"))
    info = os.stat(path)
    assert info.st_ctime_ns >= info.st_mtime_ns


def test_ctime_moves_with_xattr_changes(workdir: str) -> None:
    path = os.path.join(workdir, "f")
    write_file(path, b"t")
    assert changes_ctime(path, lambda: os.setxattr(path, "user.c", b"v"))
    assert changes_ctime(path, lambda: os.removexattr(path, "user.c"))


def test_mtime_moves_on_write_and_truncate_not_on_read(workdir: str) -> None:
    path = os.path.join(workdir, "f")
    write_file(path, b"0123456789")
    os.utime(path, ns=(OLD_NS, OLD_NS))
    with open(path, "rb") as file:
        assert file.read() == b"0123456789"
    assert os.stat(path).st_mtime_ns == OLD_NS
    before = time.time_ns()
    with open(path, "r+b") as file:
        file.seek(5)
        file.write(b"x")
    assert os.stat(path).st_mtime_ns >= before
    os.utime(path, ns=(OLD_NS, OLD_NS))
    before = time.time_ns()
    os.truncate(path, 3)
    assert os.stat(path).st_mtime_ns >= before


def parent_touched(parent: str, change: Callable[[], object]) -> bool:
    """Does `change()` move the mtime and ctime of the directory `parent` to now?"""
    os.utime(parent, ns=(OLD_NS, OLD_NS))
    before = time.time_ns()
    change()
    info = os.stat(parent)
    return info.st_mtime_ns >= before and info.st_ctime_ns >= before


def test_parent_directory_times(workdir: str) -> None:
    d = os.path.join(workdir, "d")
    other = os.path.join(workdir, "other")
    os.mkdir(d)
    os.mkdir(other)
    f = os.path.join(d, "f")
    assert parent_touched(d, lambda: write_file(f, b"new"))
    assert parent_touched(d, lambda: os.mkdir(os.path.join(d, "sub")))
    assert parent_touched(d, lambda: os.rmdir(os.path.join(d, "sub")))
    assert parent_touched(d, lambda: os.symlink("f", os.path.join(d, "l")))
    assert parent_touched(d, lambda: os.link(f, os.path.join(d, "hard")))
    assert parent_touched(d, lambda: os.mkfifo(os.path.join(d, "p")))
    assert parent_touched(d, lambda: os.rename(f, os.path.join(d, "g")))
    assert parent_touched(d, lambda: os.unlink(os.path.join(d, "l")))
    # a rename between directories touches both
    os.utime(other, ns=(OLD_NS, OLD_NS))
    assert parent_touched(d, lambda: os.rename(os.path.join(d, "g"), os.path.join(other, "g")))
    assert os.stat(other).st_mtime_ns > OLD_NS
    # changing a file's bytes or attributes leaves its directory alone
    os.utime(other, ns=(OLD_NS, OLD_NS))
    write_file(os.path.join(other, "g"), b"rewritten")
    os.chmod(os.path.join(other, "g"), 0o600)
    assert os.stat(other).st_mtime_ns == OLD_NS


def test_statfs(mounted: Mounted, workdir: str) -> None:
    vfs = os.statvfs(workdir)
    assert vfs.f_bsize > 0
    assert vfs.f_frsize > 0
    assert vfs.f_blocks > 0
    assert 0 < vfs.f_bfree <= vfs.f_blocks
    assert 0 < vfs.f_bavail <= vfs.f_blocks
    assert vfs.f_namemax == 255
    assert vfs.f_files > 0
    assert vfs.f_ffree > 0
    # the store's devices, less the parity: 3 devices of 256 MiB hold less than 768 MiB
    total = vfs.f_blocks * vfs.f_frsize
    assert 64 << 20 < total < 768 << 20
    # writing 16 MiB takes free space
    path = os.path.join(workdir, "space")
    write_file(path, os.urandom(16 << 20))
    after = os.statvfs(workdir)
    assert after.f_bfree * after.f_frsize <= vfs.f_bfree * vfs.f_frsize - (8 << 20)
    os.unlink(path)


def test_block_counts(workdir: str) -> None:
    path = os.path.join(workdir, "blocks")
    write_file(path, b"x" * 10_000)
    info = os.stat(path)
    assert info.st_blocks * 512 >= 10_000
    assert info.st_blksize > 0


@root_only
def test_posix_attributes_seen_over_s3(mounted: Mounted, workdir: str, s3: Any) -> None:
    """As s3fs: x-amz-meta-mode (decimal, with the type bits), -uid, -gid, -mtime (s)."""
    path = os.path.join(workdir, "attrs.txt")
    write_file(path, b"attrs")
    os.chmod(path, 0o640)
    os.chown(path, 1000, 1001)
    os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_123_000_000_000))
    head = s3.head_object(Bucket=BUCKET, Key=key_of(mounted, path))
    meta = head["Metadata"]
    assert int(meta["mode"]) == stat.S_IFREG | 0o640
    assert (int(meta["uid"]), int(meta["gid"])) == (1000, 1001)
    assert float(meta["mtime"]) == 1_600_000_123
    get = s3.get_object(Bucket=BUCKET, Key=key_of(mounted, path))
    assert get["Metadata"] == meta
    assert get["Body"].read() == b"attrs"
    d = os.path.join(workdir, "dir")
    os.mkdir(d, 0o750)
    meta = s3.head_object(Bucket=BUCKET, Key=key_of(mounted, d) + "/")["Metadata"]
    assert int(meta["mode"]) == stat.S_IFDIR | 0o750
    link = os.path.join(workdir, "link")
    os.symlink("attrs.txt", link)
    meta = s3.head_object(Bucket=BUCKET, Key=key_of(mounted, link))["Metadata"]
    assert stat.S_ISLNK(int(meta["mode"]))


def test_objects_from_s3_get_default_attributes(mounted: Mounted, workdir: str, s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key=prefix_of(workdir) + "plain", Body=b"p")
    info = os.stat(os.path.join(workdir, "plain"))
    assert info.st_mode == stat.S_IFREG | 0o644
    assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())
    assert info.st_nlink == 1
    last_modified = s3.head_object(Bucket=BUCKET, Key=prefix_of(workdir) + "plain")
    assert abs(info.st_mtime - last_modified["LastModified"].timestamp()) < 1.0


def test_s3_copy_keeps_the_posix_attributes(mounted: Mounted, workdir: str, s3: Any) -> None:
    prefix = prefix_of(workdir)
    path = os.path.join(workdir, "a")
    write_file(path, b"a")
    os.chmod(path, 0o600)
    if os.geteuid() == 0:
        os.chown(path, 1000, 1001)
    s3.copy_object(Bucket=BUCKET, Key=prefix + "b", CopySource=f"{BUCKET}/{prefix}a")
    original, copy = os.stat(path), os.stat(os.path.join(workdir, "b"))
    assert copy.st_mode == original.st_mode == stat.S_IFREG | 0o600
    assert (copy.st_uid, copy.st_gid) == (original.st_uid, original.st_gid)


@root_only
def test_s3fs_style_attributes_put_over_s3_are_used(
    mounted: Mounted, workdir: str, s3: Any
) -> None:
    metadata = {
        "mode": str(stat.S_IFREG | 0o700),
        "uid": "1000",
        "gid": "1001",
        "mtime": "1600000000",
    }
    key = prefix_of(workdir) + "restored"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"r", Metadata=metadata)
    info = os.stat(os.path.join(workdir, "restored"))
    head = s3.head_object(Bucket=BUCKET, Key=key)["Metadata"]
    assert int(head["mode"]) == info.st_mode
    assert (int(head["uid"]), int(head["gid"])) == (info.st_uid, info.st_gid)
    assert float(head["mtime"]) == info.st_mtime
    assert info.st_mode == stat.S_IFREG | 0o700
    assert (info.st_uid, info.st_gid) == (1000, 1001)
    assert info.st_mtime == 1_600_000_000


def test_an_mtime_given_alone_over_s3_is_the_files_and_moves_with_it(
    mounted: Mounted, workdir: str, s3: Any
) -> None:
    """rclone keeps a file's mtime as x-amz-meta-mtime (seconds with nanoseconds)
    and no mode: the mount shows that mtime with its default mode and owner, and
    a write through the mount moves what S3 shows, so that a client comparing
    size and mtime sees the change (it did not: the old mtime stayed)."""
    key = prefix_of(workdir) + "synced"
    path = os.path.join(workdir, "synced")
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"original", Metadata={"mtime": "1600000000.5"})
    info = os.stat(path)
    assert info.st_mtime_ns == 1_600_000_000_500_000_000
    assert info.st_mode == stat.S_IFREG | 0o644
    assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())
    assert s3.head_object(Bucket=BUCKET, Key=key)["Metadata"] == {"mtime": "1600000000.5"}
    with open(path, "r+b") as file:  # the same size: only the mtime tells
        file.write(b"ORIG")
    info = os.stat(path)
    assert info.st_mtime_ns > 1_700_000_000 * 10**9
    head = s3.head_object(Bucket=BUCKET, Key=key)["Metadata"]
    seconds, nanoseconds = divmod(info.st_mtime_ns, 10**9)
    assert head == {"mtime": f"{seconds}.{nanoseconds:09d}".rstrip("0").rstrip(".")}
    # A copy onto itself with a new mtime (rclone touch) keeps a mode set in the mount.
    os.chmod(path, 0o600)
    s3.copy_object(
        Bucket=BUCKET,
        Key=key,
        CopySource={"Bucket": BUCKET, "Key": key},
        Metadata={"mtime": "1500000000"},
        MetadataDirective="REPLACE",
    )
    info = os.stat(path)
    assert (info.st_mtime_ns, info.st_mode) == (1_500_000_000 * 10**9, stat.S_IFREG | 0o600)
    assert s3.head_object(Bucket=BUCKET, Key=key)["Metadata"]["mtime"] == "1500000000"
    with open(path, "rb") as file:
        assert file.read() == b"ORIGinal"


def test_s3fs_attributes_of_a_multipart_upload_are_used(
    mounted: Mounted, workdir: str, s3: Any
) -> None:
    key = prefix_of(workdir) + "big"
    metadata = {"mode": str(stat.S_IFREG | 0o751), "mtime": "1600000000"}
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key, Metadata=metadata)["UploadId"]
    etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=b"x")["ETag"]
    s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key=key,
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    info = os.stat(os.path.join(workdir, "big"))
    assert (info.st_mode, info.st_mtime_ns) == (stat.S_IFREG | 0o751, 1_600_000_000 * 10**9)
    assert s3.head_object(Bucket=BUCKET, Key=key)["Metadata"] == metadata
