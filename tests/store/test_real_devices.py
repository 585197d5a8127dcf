"""The core promises hold on real device files opened with O_DIRECT, and bad devices are refused.

Goal: what the in-memory tests show also holds where users meet the store: device
files in a data directory, opened with O_DIRECT on a disk filesystem. Objects are
read back after a close and reopen, offline fsck (with data verification) is
clean, and the devices a store must not use are refused with a DeviceError that
names the file and says why: one already in use, one on a filesystem that
refuses O_DIRECT, one from another node, one of a newer format.

Method: `create_data_dir` makes preallocated device files under `disk_dir` (ext4,
where O_DIRECT works); `open_store(StoreConfig(data_dir=...))` opens them itself.
Every test removes its files at the end.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest

from objfs.config import StoreConfig
from objfs.errors import DeviceError
from objfs.store import open_store
from objfs.store.device import create_device_file, open_device_sync
from objfs.store.format import create_data_dir
from objfs.store.fsck import run_fsck
from objfs.store.superblock import (
    SUPERBLOCK_A_OFFSET_BYTES,
    SUPERBLOCK_B_OFFSET_BYTES,
    decode_superblock,
)
from objfs.store.types import BLOCK_SIZE_BYTES, MiB

DEVICE_BYTES = 256 * MiB
BUCKET = "bkt"


@pytest.fixture
def data_dir(disk_dir: str) -> Iterator[str]:
    """A data directory on disk; everything under `disk_dir` is removed afterwards."""
    yield os.path.join(disk_dir, "node")
    shutil.rmtree(disk_dir, ignore_errors=True)


@pytest.fixture
def shm_dir() -> Iterator[str]:
    """A directory on tmpfs, removed afterwards."""
    path = os.path.join("/dev/shm", f"objfs-test-{uuid.uuid4().hex}")
    os.makedirs(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def device_path(data_dir: str, name: str = "dev0.img") -> str:
    return os.path.join(data_dir, "devices", name)


async def test_objects_survive_close_and_reopen_on_o_direct_device_files(data_dir: str) -> None:
    await create_data_dir(data_dir, device_count=2, device_size_bytes=DEVICE_BYTES)
    config = StoreConfig(data_dir=data_dir)
    big = os.urandom(5 * 1000 * 1000 + 17)  # unaligned, several 1 MiB segments
    small = {f"small/{size}": os.urandom(size) for size in (0, 1, 4095, 4096, 4097, 100_000)}
    streamed = os.urandom(3 * MiB + 5)
    async with open_store(config) as store:
        assert sorted(store.statistics().devices) == [
            device_path(data_dir, "dev0.img"),
            device_path(data_dir, "dev1.img"),
        ]
        assert all(device.statistics().direct_io for device in store.devices.values())
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "big", big)
        for key, data in small.items():
            await store.put_object(BUCKET, key, data)
        async with store.open_writer(BUCKET, "streamed") as writer:
            for start in range(0, len(streamed), 100_003):
                await writer.write(streamed[start : start + 100_003])
            await writer.commit()
        assert await store.get_object(BUCKET, "big") == big
        free = store.space.free_bytes
        infos = {key: store.head_object(BUCKET, key) for key in ["big", "streamed", *small]}
    async with open_store(config) as store:
        assert store.replayed_records == 0, "the close wrote a final checkpoint"
        assert await store.get_object(BUCKET, "big") == big
        assert await store.get_object(BUCKET, "streamed") == streamed
        for key, data in small.items():
            assert await store.get_object(BUCKET, key) == data, key
        for key, info in infos.items():
            assert store.head_object(BUCKET, key) == info
        async with store.open_reader(BUCKET, "big") as reader:
            start = 1 * MiB - 3  # a read straddling a segment boundary, at an odd offset
            assert await reader.read(start, 10) == big[start : start + 10]
        # Checkpoint bodies may take a few blocks more after the close; data takes none.
        assert free - 64 * BLOCK_SIZE_BYTES <= store.space.free_bytes <= free
        await store.delete_object(BUCKET, "big")
    report = await run_fsck(config, verify_data=True, repair=False)
    assert report.clean, report.render()
    assert report.objects == 1 + len(small)
    assert report.verified_bytes == len(streamed) + sum(
        len(data) for data in small.values() if len(data) > 4096
    )


async def test_opening_a_data_dir_twice_at_once_fails_with_device_in_use(data_dir: str) -> None:
    await create_data_dir(data_dir, device_count=2, device_size_bytes=DEVICE_BYTES)
    config = StoreConfig(data_dir=data_dir)
    async with open_store(config) as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "k", b"first opener's")
        with pytest.raises(DeviceError, match="in use") as caught:
            async with open_store(config):
                pass
        assert "dev0.img" in str(caught.value)
        assert await store.get_object(BUCKET, "k") == b"first opener's"
    async with open_store(config) as store:  # free again once the first one closed
        assert await store.get_object(BUCKET, "k") == b"first opener's"


async def test_failed_open_releases_the_devices_it_already_opened(data_dir: str) -> None:
    await create_data_dir(data_dir, device_count=2, device_size_bytes=DEVICE_BYTES)
    config = StoreConfig(data_dir=data_dir)
    holder = open_device_sync(device_path(data_dir, "dev1.img"))  # another process's lock
    try:
        with pytest.raises(DeviceError, match="in use") as caught:
            async with open_store(config):
                pass
        assert "dev1.img" in str(caught.value)
    finally:
        await holder.aclose()
    # dev0.img was opened (and locked) before dev1.img failed: it must be free again.
    async with open_store(config) as store:
        assert store.list_buckets() == []


async def test_filesystem_refusing_o_direct_is_named_with_the_buffered_io_way_out(
    data_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem that refuses O_DIRECT (open fails with EINVAL), simulated on any kernel."""
    os.makedirs(data_dir)
    path = os.path.join(data_dir, "dev0.img")
    create_device_file(path, 16 * MiB)
    real_open = os.open

    def refuse_direct(file: str, flags: int, *args: int) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument", file)
        return real_open(file, flags, *args)

    monkeypatch.setattr(os, "open", refuse_direct)
    with pytest.raises(DeviceError) as caught:
        open_device_sync(path)
    message = str(caught.value)
    assert path in message
    assert "O_DIRECT" in message
    assert "buffered_io" in message
    device = open_device_sync(path, buffered=True)
    monkeypatch.undo()
    try:
        assert not device.statistics().direct_io
        assert device.size_bytes == 16 * MiB
    finally:
        await device.aclose()


def tmpfs_accepts_o_direct(directory: str) -> bool:
    probe = os.path.join(directory, "probe")
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    finally:
        if os.path.exists(probe):
            os.unlink(probe)
    os.close(fd)
    return True


def test_device_file_on_tmpfs_is_refused_naming_o_direct_and_buffered_io(shm_dir: str) -> None:
    if tmpfs_accepts_o_direct(shm_dir):
        pytest.skip("this kernel's tmpfs accepts O_DIRECT (Linux 6.6+); simulated above")
    path = os.path.join(shm_dir, "dev0.img")
    create_device_file(path, 16 * MiB)
    with pytest.raises(DeviceError) as caught:
        open_device_sync(path)
    assert "O_DIRECT" in str(caught.value) and "buffered_io" in str(caught.value)


async def test_store_on_tmpfs_works_with_buffered_io(shm_dir: str) -> None:
    path = os.path.join(shm_dir, "dev0.img")
    create_device_file(path, 16 * MiB)
    device = open_device_sync(path, buffered=True)
    try:
        assert not device.statistics().direct_io
        await device.write_many([(8192, b"hello")], flush=True)
        assert await device.read(8192, 5) == b"hello"
        assert await device.read(8192 + 5, 3) == bytes(3)  # padded to the block with zeros
    finally:
        await device.aclose()
    data_dir = os.path.join(shm_dir, "node")
    await create_data_dir(data_dir, device_count=2, device_size_bytes=32 * MiB, buffered=True)
    config = StoreConfig(data_dir=data_dir, buffered_io=True)
    data = os.urandom(2 * MiB + 1)
    async with open_store(config) as store:
        assert not any(device.statistics().direct_io for device in store.devices.values())
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "k", data)
    async with open_store(config) as store:
        assert await store.get_object(BUCKET, "k") == data
    report = await run_fsck(config, verify_data=True, repair=False)
    assert report.clean, report.render()


async def test_device_file_of_another_node_is_refused_naming_the_file(
    data_dir: str, disk_dir: str
) -> None:
    await create_data_dir(data_dir, device_count=2, device_size_bytes=DEVICE_BYTES)
    other_dir = os.path.join(disk_dir, "other-node")
    await create_data_dir(other_dir, device_count=1, device_size_bytes=16 * MiB)
    config = StoreConfig(data_dir=data_dir)
    async with open_store(config) as store:
        await store.create_bucket(BUCKET)
        await store.put_object(BUCKET, "k", b"mine")
    foreign = device_path(data_dir, "dev2.img")
    shutil.copyfile(device_path(other_dir, "dev0.img"), foreign)
    with pytest.raises(DeviceError) as caught:
        async with open_store(config):
            pass
    assert foreign in str(caught.value)
    assert "belongs to node" in str(caught.value)
    with pytest.raises(DeviceError) as caught:
        await run_fsck(config, verify_data=False, repair=False)
    assert foreign in str(caught.value)
    os.unlink(foreign)
    async with open_store(config) as store:  # nothing was changed, and nothing is held
        assert await store.get_object(BUCKET, "k") == b"mine"


def write_superblocks(path: str, block: bytes) -> None:
    """Write `block` over both superblock copies of a device file, durably."""
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset in (SUPERBLOCK_A_OFFSET_BYTES, SUPERBLOCK_B_OFFSET_BYTES):
            os.pwrite(fd, block, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_superblock_block(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read(BLOCK_SIZE_BYTES)


async def test_superblock_of_a_newer_format_version_is_refused_saying_the_version(
    data_dir: str,
) -> None:
    await create_data_dir(data_dir, device_count=2, device_size_bytes=DEVICE_BYTES)
    config = StoreConfig(data_dir=data_dir)
    async with open_store(config) as store:
        await store.create_bucket(BUCKET)
    patched = device_path(data_dir, "dev0.img")
    original = read_superblock_block(patched)
    superblock = decode_superblock(original, path=patched)
    write_superblocks(patched, replace(superblock, format_version=99).encode())
    with pytest.raises(DeviceError, match="version 99") as caught:
        async with open_store(config):
            pass
    assert patched in str(caught.value)
    with pytest.raises(DeviceError, match="version 99"):
        await run_fsck(config, verify_data=False, repair=False)
    write_superblocks(patched, original)  # the refusal changed nothing: restored, it opens
    async with open_store(config) as store:
        assert [info.name for info in store.list_buckets()] == [BUCKET]
