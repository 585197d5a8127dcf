"""Cluster-wide device indexes: a node numbered N stores, reads, heals and checks as node 0 does.

Goal: in a cluster every node applies every record, so an extent's device index
must name one device cluster-wide: node N's devices are N * 256 + local index
(objfs/store/types.py). A node formatted with a number other than 0 must work
exactly like node 0 with those indexes: its superblocks hold the global index,
its extents and segment ids name it, health, owed masks, scrub, heal, fsck,
`objfs device replace`, metrics and `objfs status` name devices by it, while
the positional fields (the device table, the owed mask's bits, the metadata
devices, devN.img) keep using the local index. Superblocks that mix node
numbers, or name a local index past the node's device count, are refused.

Method: node 3 on six real device files (4+2, 64 KiB fragments, `create_data_dir`)
and on three MemoryDevices (2+1); objects of 1 MiB and more, so they are stored
as stripes, not inline. Devices are deleted, left out, bit-flipped and replaced;
each step asserts on the extents' indexes, the bytes read back, the health
counters, the persisted owed masks, the scrub report and fsck (online and
offline, verifying data). Node 0 is what every other store test formats, so its
unchanged behaviour is covered there; one test here pins that its indexes are
its local ones.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import store_helpers
from store_helpers import payload

from objfs.config import StoreConfig
from objfs.errors import DeviceError, UsageError
from objfs.metrics import Metrics
from objfs.store import Store, open_store
from objfs.store.device import BlockDevice
from objfs.store.format import create_data_dir, format_devices, replace_device
from objfs.store.fsck import check_open_store, run_fsck
from objfs.store.health import Health
from objfs.store.recovery import read_superblock
from objfs.store.superblock import SUPERBLOCK_A_OFFSET_BYTES, SUPERBLOCK_B_OFFSET_BYTES
from objfs.store.testing import MemoryDevice
from objfs.store.types import (
    DEVICES_PER_NODE,
    BucketName,
    KiB,
    MiB,
    ObjectKey,
    device_mask,
    device_node_number,
    devices_in_mask,
    global_device_index,
    local_device_index,
)

BUCKET = "numbered"
segments_of = functools.partial(store_helpers.segments_of, bucket=BUCKET)
NODE = 3
BASE = NODE * DEVICES_PER_NODE  # 768: device index of node 3's local device 0
DEVICE_COUNT = 6
DEVICE_BYTES = 64 * MiB
INDEXES = tuple(range(BASE, BASE + DEVICE_COUNT))
SIZES = {"small": 100, "one-mib": 1 * MiB, "big": 3 * MiB + 7}


@pytest.fixture
def data_dir(disk_dir: str) -> Iterator[str]:
    yield os.path.join(disk_dir, "node3")


def config_for(data_dir: str) -> StoreConfig:
    return StoreConfig(
        data_dir=data_dir,
        ec_policy="4+2",
        fragment_size_bytes=64 * KiB,
        checkpoint_interval_ms=3_600_000,
        scrub_rate_bytes_per_s=0,
    )


def device_file(data_dir: str, local: int) -> str:
    return os.path.join(data_dir, "devices", f"dev{local}.img")


async def put_objects(store: Store, expected: dict[str, bytes], prefix: str) -> None:
    for name, size in SIZES.items():
        key = prefix + name
        expected[key] = payload(key, size)
        await store.put_object(BUCKET, key, expected[key])


async def assert_objects(store: Store, expected: dict[str, bytes]) -> None:
    keys = [info.key for info in store.list_objects(BUCKET, limit=1000).objects]
    assert keys == sorted(expected)
    for key, data in expected.items():
        assert await store.get_object(BUCKET, key) == data, key


def stored_indexes(store: Store) -> set[int]:
    return {f.extent.device_index for s in store.index.referenced_segments() for f in s.fragments}


async def owed_masks(devices: Sequence[BlockDevice]) -> list[int]:
    return [(await read_superblock(device)).owed_devices for device in devices]


async def assert_fsck_clean(store: Store) -> None:
    report = await check_open_store(store, verify_data=True)
    assert report.clean, report.render()


# -- the value helpers and Health --------------------------------------------------


def test_device_index_is_node_number_times_256_plus_local_index() -> None:
    assert global_device_index(0, 5) == 5
    assert global_device_index(3, 2) == 770
    assert global_device_index(255, 63) == 65_343
    assert (device_node_number(770), local_device_index(770)) == (3, 2)
    assert (device_node_number(5), local_device_index(5)) == (0, 5)
    assert device_mask([768, 770]) == 0b101
    assert devices_in_mask(0b101, INDEXES) == {768, 770}
    # A segment id still packs the index above a 48-bit offset, as before.
    assert (770 << 48 | 4096) >> 48 == 770


def test_health_names_devices_globally_and_masks_them_by_local_bit() -> None:
    health = Health(INDEXES[:3], down={769}, owed={770})
    assert health.device_indexes == (768, 769, 770)
    assert health.up == [768, 770]
    assert health.owed == {769, 770}  # a down device is owed too
    assert health.owed_mask == 0b110
    assert health.owed_unpersisted()  # 769 became owed since the mask was read
    health.persisted(0b110)
    assert not health.owed_unpersisted()
    health.healed(770)
    assert health.owed_mask == 0b010
    statistics = health.statistics()
    assert (statistics.device_count, statistics.device_indexes) == (3, (768, 769, 770))
    assert (statistics.down_devices, statistics.owed_devices) == ((769,), (769,))


# -- node 3 on real device files ---------------------------------------------------


async def test_node_3_stores_reads_runs_degraded_replaces_heals_and_reopens(
    data_dir: str,
) -> None:
    """Node 3's six device files are devices 768..773 (dev0..dev5.img), the first
    three its metadata devices. Stripes land on all six by those indexes and read
    back byte-exact. With dev1 (769, metadata) and dev4 (772) deleted the node
    opens degraded with exactly those down and owed (bits 1 and 4 of the mask),
    reads everything and keeps writing; offline fsck names the two. Replacing
    them by index (default paths dev1.img and dev4.img) and healing leaves no
    device owed, a clean scrub and a clean fsck, also after a reopen."""
    superblocks = await create_data_dir(
        data_dir, device_count=DEVICE_COUNT, device_size_bytes=DEVICE_BYTES, node_number=NODE
    )
    assert [sb.device_index for sb in superblocks] == list(INDEXES)
    assert [sb.local_index for sb in superblocks] == list(range(DEVICE_COUNT))
    assert {sb.node_number for sb in superblocks} == {NODE}
    assert [sb.holds_metadata for sb in superblocks] == [True] * 3 + [False] * 3
    assert sorted(os.listdir(os.path.join(data_dir, "devices"))) == [
        f"dev{i}.img" for i in range(DEVICE_COUNT)
    ]
    config = config_for(data_dir)
    expected: dict[str, bytes] = {}
    async with open_store(config, background_jobs=False) as store:
        assert sorted(store.devices) == list(INDEXES)
        assert sorted(store.space.allocators) == list(INDEXES)
        assert store.health.device_indexes == INDEXES
        await store.create_bucket(BUCKET)
        await put_objects(store, expected, "before/")
        one_mib = store.index.current(BucketName(BUCKET), ObjectKey("before/one-mib"))
        assert not any(isinstance(piece.source, bytes) for piece in one_mib.pieces)
        assert stored_indexes(store) == set(INDEXES)
        for segment in segments_of(store, "before/big"):
            assert segment.segment_id >> 48 == segment.fragments[0].extent.device_index
        await assert_objects(store, expected)
        await assert_fsck_clean(store)
    report = await run_fsck(config, verify_data=True, repair=False)
    assert report.clean, report.render()

    lost = (BASE + 1, BASE + 4)
    for index in lost:
        os.unlink(device_file(data_dir, local_device_index(index)))
    async with open_store(config, background_jobs=False) as store:
        health = store.health.statistics()
        assert (health.down_devices, health.owed_devices) == (lost, lost)
        assert sorted(store.devices) == [i for i in INDEXES if i not in lost]
        await assert_objects(store, expected)
        await put_objects(store, expected, "degraded/")
        await assert_objects(store, expected)
        new = segments_of(store, "degraded/big")
        # Every stripe still places one fragment on each lost device: owed to it.
        assert sum(f.extent.device_index in lost for s in new for f in s.fragments) == 2 * len(new)
        assert await owed_masks(list(store.devices.values())) == [0b10010] * 4
        assert (store.health.statistics().unreadable_segments, health.bad_fragments) == (0, 0)
    report = await run_fsck(config, verify_data=True, repair=False)
    assert {f.check for f in report.problems} == {"devices", "owed"}, report.render()
    assert f"devices {list(lost)} are missing" in report.render()
    assert f"devices {list(lost)} may lack fragments" in report.render()

    with pytest.raises(UsageError, match=r"has no device 1: its devices are 768\.\.773"):
        await replace_device(config, 1, None)  # a local index is not this node's index
    for index in lost:
        path, created = await replace_device(config, index, None)
        assert path == device_file(data_dir, local_device_index(index))
        assert created > 0
    async with open_store(config, background_jobs=False) as store:
        assert store.health.statistics().down_devices == ()
        assert store.health.statistics().owed_devices == lost
        heal = await store.scrubber.scrub(devices=set(lost))
        assert heal.clean, heal.render()
        assert heal.healed_devices == list(lost)
        assert heal.fragments_repaired > 0
        assert store.health.statistics().owed_devices == ()
        assert await owed_masks(list(store.devices.values())) == [0] * DEVICE_COUNT
        await assert_objects(store, expected)
        full = await store.scrubber.scrub()
        assert full.clean and full.fragments_damaged == 0, full.render()
        await assert_fsck_clean(store)
    report = await run_fsck(config, verify_data=True, repair=False)
    assert report.clean, report.render()
    async with open_store(config, background_jobs=False) as store:
        assert not store.health.statistics().degraded
        await assert_objects(store, expected)


# -- node 3 on memory devices ------------------------------------------------------


async def test_node_3_heals_a_rotten_fragment_a_left_out_device_and_survives_a_crash() -> None:
    """Three MemoryDevices as node 3 (768..770, 2+1). A flipped bit in a fragment
    on 770 is read around (byte-exact) and healed by a scrub. With 769 left out the
    node runs degraded and owes it what is written meanwhile; given back, the heal
    clears it. After a power cut, recovery replays records naming 768..770."""
    devices = [MemoryDevice(DEVICE_BYTES, path=f"mem{i}") for i in range(3)]
    superblocks = await format_devices(devices, node_number=NODE)
    assert [sb.device_index for sb in superblocks] == [768, 769, 770]
    config = StoreConfig(fragment_size_bytes=256 * KiB, checkpoint_interval_ms=3_600_000)
    expected: dict[str, bytes] = {}
    async with open_store(config, devices=devices, background_jobs=False) as store:
        await store.create_bucket(BUCKET)
        await put_objects(store, expected, "a/")
        assert stored_indexes(store) == {768, 769, 770}
        victim = next(
            f.extent
            for s in segments_of(store, "a/big")
            for f in s.fragments
            if f.extent.device_index == 770
        )
        devices[local_device_index(victim.device_index)].flip_bit(victim.offset_bytes + 100, 3)
        assert await store.get_object(BUCKET, "a/big") == expected["a/big"]
        assert store.health.statistics().bad_fragments >= 1
        report = await store.scrubber.scrub()
        assert report.fragments_repaired >= 1 and report.clean, report.render()
        await assert_fsck_clean(store)

    present = [devices[0], devices[2]]
    async with open_store(config, devices=present, background_jobs=False) as store:
        health = store.health.statistics()
        assert (health.down_devices, health.owed_devices) == ((769,), (769,))
        await assert_objects(store, expected)
        await put_objects(store, expected, "b/")
        await assert_objects(store, expected)
    assert await owed_masks(present) == [0b010, 0b010]
    assert await owed_masks([devices[1]]) == [0]  # it was away when the mask changed

    async with open_store(config, devices=devices, background_jobs=False) as store:
        assert store.health.statistics().owed_devices == (769,)
        heal = await store.scrubber.scrub(devices={769})
        assert heal.clean and heal.healed_devices == [769], heal.render()
        assert store.health.statistics().owed_devices == ()
        await assert_objects(store, expected)
        await put_objects(store, expected, "c/")
        crashed = [device.crash() for device in devices]  # before the final checkpoint
    async with open_store(config, devices=crashed, background_jobs=False) as store:
        assert store.replayed_records > 0
        assert not store.health.statistics().degraded
        await assert_objects(store, expected)
        assert stored_indexes(store) == {768, 769, 770}
        await assert_fsck_clean(store)


async def test_metrics_and_status_name_node_3s_devices_by_their_indexes() -> None:
    devices = [MemoryDevice(DEVICE_BYTES, path=f"mem{i}") for i in range(3)]
    await format_devices(devices, node_number=NODE)
    config = StoreConfig(checkpoint_interval_ms=3_600_000)
    async with open_store(config, devices=[devices[0], devices[2]]) as store:
        metrics = Metrics()
        metrics.watch_store(store)
        text = metrics.render().decode()
        assert 'objfs_device_up{device="768"} 1.0' in text
        assert 'objfs_device_up{device="769"} 0.0' in text
        assert 'objfs_device_free_bytes{device="770",path="mem2"}' in text
        assert 'device="0"' not in text


async def test_node_0_devices_keep_their_local_indexes() -> None:
    """The single-node default: device index == local index, as before clusters."""
    devices = [MemoryDevice(DEVICE_BYTES, path=f"mem{i}") for i in range(3)]
    superblocks = await format_devices(devices)
    assert [(sb.device_index, sb.local_index, sb.node_number) for sb in superblocks] == [
        (0, 0, 0),
        (1, 1, 0),
        (2, 2, 0),
    ]


# -- refused ------------------------------------------------------------------------


async def test_format_refuses_a_node_number_out_of_range(tmp_path: Path) -> None:
    devices = [MemoryDevice(DEVICE_BYTES) for _ in range(2)]
    for number in (-1, 256):
        with pytest.raises(UsageError, match=rf"node number must be 0\.\.255, not {number}"):
            await format_devices(devices, node_number=number)
        with pytest.raises(UsageError, match="node number"):
            await create_data_dir(str(tmp_path), node_number=number)
    assert os.listdir(str(tmp_path)) == []  # refused before anything was made


async def _rewrite_superblock(device: MemoryDevice, device_index: int) -> None:
    superblock = replace(await read_superblock(device), device_index=device_index)
    for offset in (SUPERBLOCK_A_OFFSET_BYTES, SUPERBLOCK_B_OFFSET_BYTES):
        await device.write(offset, superblock.encode())
    await device.flush()


@pytest.mark.parametrize(
    ("device_index", "says"),
    [
        (4 * DEVICES_PER_NODE + 1, "is device 1025 of node number 4, but mem0 is of node number 3"),
        (BASE + 5, r"is device 5 \(index 773\) of a node of only 3 devices"),
        (256 * DEVICES_PER_NODE + 1, "names node number 256; node numbers are 0..255"),
    ],
    ids=["another-node-number", "local-index-past-device-count", "node-number-past-255"],
)
async def test_open_refuses_superblocks_that_do_not_fit_the_nodes_numbering(
    device_index: int, says: str
) -> None:
    devices = [MemoryDevice(DEVICE_BYTES, path=f"mem{i}") for i in range(3)]
    await format_devices(devices, node_number=NODE)
    await _rewrite_superblock(devices[1], device_index)
    config = StoreConfig(checkpoint_interval_ms=3_600_000)
    with pytest.raises(DeviceError, match=says):
        async with open_store(config, devices=devices):
            pass


def test_objfs_format_node_number_on_the_command_line(disk_dir: str) -> None:
    """`objfs format --node-number 3` makes devices 768.., and `serve --once` and
    fsck take them; a number past 255 is one line of usage error, no traceback."""
    data = os.path.join(disk_dir, "data")

    def objfs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "objfs", "--data", data, *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    bad = objfs("format", "--node-number", "256")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "objfs: node number must be 0..255, not 256"
    assert not os.path.exists(data)
    made = objfs("format", "--device-count", "2", "--device-size", "64M", "--node-number", "3")
    assert made.returncode == 0, made.stderr
    assert "node number 3: device indexes 768..769" in made.stdout
    served = objfs("serve", "--once")
    assert served.returncode == 0, served.stderr
    assert "indexes:    devices 768..769 (node number 3)" in served.stdout
    checked = objfs("fsck", "--verify-data")
    assert checked.returncode == 0 and "fsck: clean" in checked.stdout, checked.stdout
