"""A full store, seen through the mount and S3: what still works, and what df says.

Goal: on a store out of room, a PUT gets a clean S3 error (not 500); rm, mv,
chmod and S3 DeleteObject still work, with the file open or not, since they
only free space or change metadata; and `df` (statvfs) reports as available
what a user can still write: free space less the space kept for checkpoints,
less parity.

Method: a node with three 48 MiB device files (2+1) mounted, as in
test_fuse_edges.py. A test fills the store straight through the Store API on
the node's loop (1 MiB objects until NoSpace, then small inline ones until the
index may grow no more), checks that writing through the mount now fails with
ENOSPC, does what it tests, and deletes its fillers.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
from botocore.exceptions import ClientError
from fuse_node import BUCKET, Mounted, mounted_node
from mount_helpers import delete_many, errno_of, prefix_of, read_file, s3_missing, write_file

from objfs.errors import NoSpace

DEVICE_BYTES = 48 << 20
MiB = 1 << 20


@pytest.fixture(scope="module")
def mounted() -> Iterator[Mounted]:
    """conftest's node, on small devices."""
    with mounted_node(device_size_bytes=DEVICE_BYTES) as running:
        yield running


def fill(mounted: Mounted, prefix: str, *, index: bool = True) -> list[str]:
    """Put 1 MiB objects under `prefix` until the store says NoSpace, then (with
    `index`) 4000-byte inline ones until it says so again; the keys stored."""
    store = mounted.node.store
    keys: list[str] = []

    async def put_until_full(size: int) -> None:
        data = os.urandom(size)
        while True:
            key = f"{prefix}{len(keys):05d}"
            try:
                await store.put_object(BUCKET, key, data)
            except NoSpace:
                return
            keys.append(key)

    trio.from_thread.run(put_until_full, MiB, trio_token=mounted.node.token)
    if index:
        trio.from_thread.run(put_until_full, 4000, trio_token=mounted.node.token)
    return keys


# -- 1. a PUT to a full store -----------------------------------------------------------


def test_a_put_to_a_full_store_is_a_clean_s3_error(mounted: Mounted, workdir: str, s3: Any) -> None:
    """NoSpace from the core is the S3 error its table names (XObjfsStorageFull,
    507: SDKs do not retry it as they retry 503), for a PUT of several segments
    into full data space and for a small one once the index may grow no more:
    never an InternalError (500)."""
    key = prefix_of(workdir) + "more"
    keys = fill(mounted, prefix_of(workdir) + "fill/", index=False)
    try:
        assert_put_refused(s3, key, os.urandom(8 * MiB))
        keys += fill(mounted, prefix_of(workdir) + "index/")
        assert_put_refused(s3, key, b"small")
        assert s3_missing(s3, key)
    finally:
        delete_many(mounted, keys)


def assert_put_refused(s3: Any, key: str, body: bytes) -> None:
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    response = caught.value.response
    assert response["Error"]["Code"] == "XObjfsStorageFull", response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 507


# -- 2. what frees space or changes metadata works on a full store ------------------------


@contextmanager
def store_full(mounted: Mounted, workdir: str) -> Iterator[None]:
    """The store filled (keys under workdir/fill/), so that a new file in the mount
    gets ENOSPC, until the block ends."""
    keys = fill(mounted, prefix_of(workdir) + "fill/")
    try:
        probe = os.path.join(workdir, "probe")
        assert errno_of(lambda: write_file(probe, b"x")) == errno.ENOSPC
        yield
    finally:
        delete_many(mounted, keys)


def test_rm_and_mv_work_on_a_full_store(mounted: Mounted, workdir: str) -> None:
    """rm and mv free space or change names only: they work on a store that
    refuses every write, also in a directory S3 made (which keeps itself by
    getting its marker when its last name goes) and across directories; and so
    does an S3 DeleteObject."""
    s3 = mounted.s3()
    prefix = prefix_of(workdir)
    for name in ("made/a", "made/b", "made/c", "gone/a"):
        s3.put_object(Bucket=BUCKET, Key=prefix + name, Body=name.encode())
    write_file(os.path.join(workdir, "plain"), b"plain")
    made = os.path.join(workdir, "made")
    with store_full(mounted, workdir):
        os.rename(os.path.join(made, "a"), os.path.join(made, "a2"))
        os.rename(os.path.join(made, "a2"), os.path.join(workdir, "a3"))
        os.unlink(os.path.join(made, "b"))
        os.rename(os.path.join(made, "c"), os.path.join(workdir, "c2"))  # its last name
        assert os.listdir(made) == []
        os.rmdir(made)
        os.unlink(os.path.join(workdir, "gone", "a"))  # its last name too
        os.rmdir(os.path.join(workdir, "gone"))
        os.unlink(os.path.join(workdir, "plain"))
        assert read_file(os.path.join(workdir, "a3")) == b"made/a"
        assert read_file(os.path.join(workdir, "c2")) == b"made/c"
        s3.delete_object(Bucket=BUCKET, Key=prefix + "a3")
        assert s3_missing(s3, prefix + "a3")
    assert sorted(os.listdir(workdir)) == ["c2"]


def test_rm_and_mv_over_an_open_file_work_on_a_full_store(mounted: Mounted, workdir: str) -> None:
    """An open file unlinked or renamed over is set aside for its readers, by a
    copy: a full store refused the copy, so rm and mv said ENOSPC. The
    descriptors still read their files after."""
    data = {name: os.urandom(100_000) for name in ("open", "target")}
    for name, content in data.items():
        write_file(os.path.join(workdir, name), content)
    write_file(os.path.join(workdir, "source"), b"source")
    fds = {name: os.open(os.path.join(workdir, name), os.O_RDONLY) for name in data}
    try:
        with store_full(mounted, workdir):
            assert os.read(fds["open"], 10) == data["open"][:10]
            os.unlink(os.path.join(workdir, "open"))
            os.rename(os.path.join(workdir, "source"), os.path.join(workdir, "target"))
            for name, fd in fds.items():
                assert os.pread(fd, len(data[name]) + 1, 0) == data[name]
                assert os.fstat(fd).st_nlink == 0
    finally:
        for fd in fds.values():
            os.close(fd)
    assert sorted(os.listdir(workdir)) == ["target"]
    assert read_file(os.path.join(workdir, "target")) == b"source"


def test_metadata_changes_work_on_a_full_store(mounted: Mounted, workdir: str) -> None:
    """chmod, utime and xattrs change metadata only: they work on a full store, on
    a file and on a directory S3 made (no marker yet)."""
    s3 = mounted.s3()
    s3.put_object(Bucket=BUCKET, Key=prefix_of(workdir) + "made/a", Body=b"a")
    directory = os.path.join(workdir, "made")
    path = os.path.join(directory, "a")
    with store_full(mounted, workdir):
        for target in (path, directory):
            os.chmod(target, 0o700)
            assert stat.S_IMODE(os.stat(target).st_mode) == 0o700
            os.utime(target, ns=(1_000_000_000, 2_000_000_000))
            assert os.stat(target).st_mtime_ns == 2_000_000_000
            os.setxattr(target, b"user.k", b"v")
            assert os.getxattr(target, b"user.k") == b"v"


def test_rm_and_mv_of_a_file_being_written_work_on_a_full_store(
    mounted: Mounted, workdir: str
) -> None:
    """Writes an open file still holds in memory are stored before it is unlinked
    or renamed; on a full store that fails, and the rm or mv failed with it
    (ENOSPC). Now they go on, and the lost writes are told at close, as a
    failed writeback is."""
    fds = {
        name: os.open(os.path.join(workdir, name), os.O_CREAT | os.O_WRONLY, 0o644)
        for name in ("unlinked", "renamed")
    }
    closed: dict[str, int] = {}
    try:
        with store_full(mounted, workdir):
            for fd in fds.values():
                os.write(fd, os.urandom(MiB))  # gathered in memory, not stored yet
            os.unlink(os.path.join(workdir, "unlinked"))
            os.rename(os.path.join(workdir, "renamed"), os.path.join(workdir, "moved"))
            for name, fd in fds.items():
                closed[name] = close_errno(fd)
            assert closed == {"unlinked": errno.ENOSPC, "renamed": errno.ENOSPC}
    finally:
        for name, fd in fds.items():
            if name not in closed:
                close_errno(fd)
    assert sorted(os.listdir(workdir)) == ["moved"]


def close_errno(fd: int) -> int:
    """Close `fd` (it is closed even when close() fails); the errno it failed with, or 0."""
    try:
        os.close(fd)
    except OSError as exc:
        return exc.errno or 0
    return 0


# -- 3. what df says --------------------------------------------------------------------


def test_df_says_what_can_still_be_written(mounted: Mounted, workdir: str) -> None:
    """statvfs's f_bavail is what a user can still write: free space less the
    space kept for checkpoints, less parity. It counted that reserve as free:
    df said megabytes were available on a store whose every write failed."""
    before = os.statvfs(workdir)
    assert 0 < before.f_bavail <= before.f_bfree <= before.f_blocks
    assert before.f_blocks * before.f_frsize < 3 * DEVICE_BYTES * 2 // 3  # less parity (2+1)
    available = before.f_bavail * before.f_frsize
    keys = fill(mounted, prefix_of(workdir) + "data/", index=False)
    try:
        stored = len(keys) * MiB
        assert stored <= available < stored + 2 * MiB  # one more PUT at most
        after = os.statvfs(workdir)
        assert after.f_bavail * after.f_frsize < 2 * MiB
        keys += fill(mounted, prefix_of(workdir) + "index/")  # down to the reserve
        full = os.statvfs(workdir)
        assert full.f_bavail == 0 < full.f_bfree
    finally:
        delete_many(mounted, keys)
    # Free again, less what the reserve grew by: it follows the records logged since
    # the last checkpoint, which the fill and its deletes added.
    assert 0 < os.statvfs(workdir).f_bavail <= before.f_bavail
