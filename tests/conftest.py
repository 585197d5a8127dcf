"""Shared fixtures: stores on in-memory devices and on real O_DIRECT device files."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest

from objfs.config import StoreConfig
from objfs.store import Store, open_store
from objfs.store.format import format_devices
from objfs.store.fsck import check_open_store
from objfs.store.testing import MemoryDevice

WORK_DIR = os.environ.get("OBJFS_TEST_DIR", "/var/tmp/objfs-tests")


@pytest.fixture
def memory_devices() -> list[MemoryDevice]:
    return [MemoryDevice(64 * 1024 * 1024, path=f"mem{i}") for i in range(3)]


@pytest.fixture
def small_config() -> StoreConfig:
    return StoreConfig(fragment_size_bytes=256 * 1024, checkpoint_interval_ms=3_600_000)


@pytest.fixture
async def store(
    memory_devices: list[MemoryDevice], small_config: StoreConfig
) -> AsyncIterator[Store]:
    """A recovered store on three in-memory devices; fsck must be clean at the end."""
    await format_devices(memory_devices)
    async with open_store(small_config, devices=memory_devices) as opened:
        yield opened
        report = await check_open_store(opened, verify_data=True)
        assert report.clean, report.render()


@pytest.fixture
def disk_dir() -> Iterator[str]:
    """A fresh directory on a disk filesystem (O_DIRECT works there, unlike tmpfs),
    removed afterwards; unique even when several pytest sessions run at once."""
    os.makedirs(WORK_DIR, exist_ok=True)
    path = tempfile.mkdtemp(dir=WORK_DIR)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
