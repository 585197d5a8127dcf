"""A real block device: format and run a store on a loop device (O_DIRECT, 4 KiB sectors).

Method: `losetup --direct-io=on --sector-size 4096` over a file on the work disk;
skipped with the reason when loop devices cannot be set up (no root, no
/dev/loop-control in a container).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from objfs.config import StoreConfig
from objfs.store import open_store
from objfs.store.device import open_device
from objfs.store.format import format_devices
from objfs.store.fsck import check_open_store


@pytest.fixture
def loop_device(disk_dir: str) -> Iterator[str]:
    if shutil.which("losetup") is None or not os.path.exists("/dev/loop-control"):
        pytest.skip("losetup or /dev/loop-control is not available here")
    backing = os.path.join(disk_dir, "loop.img")
    with open(backing, "wb") as file:
        file.truncate(128 * 1024 * 1024)
    made = subprocess.run(
        ["losetup", "-f", "--show", "--direct-io=on", "--sector-size", "4096", backing],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        os.unlink(backing)
        pytest.skip(f"cannot set up a loop device: {made.stderr.strip()}")
    path = made.stdout.strip()
    try:
        yield path
    finally:
        subprocess.run(["losetup", "-d", path], check=False)
        os.unlink(backing)


async def test_store_on_a_loop_block_device_survives_reopen(loop_device: str) -> None:
    device = await open_device(loop_device)
    assert device.statistics().direct_io
    await format_devices([device])
    await device.aclose()
    config = StoreConfig(devices=(loop_device,))
    payload = os.urandom(3 * 1024 * 1024 + 5)
    async with open_store(config) as store:
        await store.create_bucket("blocks")
        await store.put_object("blocks", "big", payload)
        await store.put_object("blocks", "small", b"tiny")
    async with open_store(config) as store:
        assert await store.get_object("blocks", "big") == payload
        assert await store.get_object("blocks", "small") == b"tiny"
        report = await check_open_store(store, verify_data=True)
        assert report.clean, report.render()
