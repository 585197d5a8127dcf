"""objfs.store.format — `objfs format`: give blank devices an identity and an empty store.

Writes, on every device, both superblock copies and blank checkpoint slots, and
on each metadata device an empty checkpoint (generation 1, LSN 0) so that a store
always has a checkpoint to start from. Refuses a device that already holds objfs
data unless forced. `adopt_device` gives one new device the identity of a missing
one (`objfs device replace`).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace

import crc32c
import trio

from objfs.config import StoreConfig
from objfs.errors import DeviceError, UsageError
from objfs.store.checkpoint import CheckpointPointer, encode_body
from objfs.store.device import (
    BlockDevice,
    WriteData,
    check_durable_filesystem,
    create_device_file,
    free_disk_bytes,
    make_directory,
    open_available,
    open_device,
    open_devices,
    round_up,
    write_parallel,
)
from objfs.store.erasure import default_shape
from objfs.store.index import Snapshot
from objfs.store.recovery import NoSuperblock, check_identity, read_superblock
from objfs.store.superblock import (
    CHECKPOINT_SLOT_OFFSETS_BYTES,
    MAX_DEVICES,
    SUPERBLOCK_A_OFFSET_BYTES,
    SUPERBLOCK_B_OFFSET_BYTES,
    NotASuperblock,
    Superblock,
    decode_superblock,
    plan_layout,
)
from objfs.store.types import (
    BLOCK_SIZE_BYTES,
    MAX_NODE_NUMBER,
    Extent,
    GiB,
    device_mask,
    global_device_index,
    local_device_index,
)

DEFAULT_DEVICE_COUNT = 6  # 4+2 erasure coding: any two device files may be lost
BASE_METADATA_COPIES = 3


def default_metadata_copies(device_count: int, parity_fragments: int | None = None) -> int:
    """WAL and checkpoint mirrors: three, or m+1 when the node keeps more parity
    (metadata must survive whatever data survives), never more than the devices."""
    if parity_fragments is None:
        parity_fragments = default_shape(device_count)[1]
    return min(device_count, max(BASE_METADATA_COPIES, parity_fragments + 1))


async def format_devices(
    devices: Sequence[BlockDevice],
    *,
    node_number: int = 0,
    metadata_copies: int | None = None,
    parity_fragments: int | None = None,
    wal_size_bytes: int | None = None,
    force: bool = False,
) -> list[Superblock]:
    """Format open devices as one node's store. Device i gets local index i, so
    device index node_number * 256 + i (objfs/store/types.py): a single node is
    node 0; `objfs cluster join` formats a joining node with the number the
    cluster gave it.

    Raises:
        UsageError: no devices, too many, or a node number out of range.
        DeviceError: a device holds objfs data (without `force`) or is too small.
    """
    check_node_number(node_number)
    if not devices:
        raise UsageError("format needs at least one device")
    if len(devices) > MAX_DEVICES:
        raise UsageError(f"a node has at most {MAX_DEVICES} devices, not {len(devices)}")
    copies = metadata_copies or default_metadata_copies(len(devices), parity_fragments)
    if not 1 <= copies <= len(devices):
        raise UsageError(f"metadata copies must be 1..{len(devices)}, not {copies}")
    if not force:
        for device in devices:
            await _refuse_if_formatted(device)
    cluster_id, node_id, created_ns = uuid.uuid4(), uuid.uuid4(), time.time_ns()
    superblocks = []
    # One WAL geometry for every device: the mirrors must be byte-for-byte alike.
    smallest = min(device.size_bytes for device in devices)
    wal_size = plan_layout(smallest, wal_size_bytes=wal_size_bytes)[1]
    layouts = [plan_layout(device.size_bytes, wal_size_bytes=wal_size) for device in devices]
    data_sizes = tuple(layout[3] for layout in layouts)
    for index, device in enumerate(devices):
        wal_offset, wal_size, data_offset, data_size = layouts[index]
        superblocks.append(
            Superblock(
                cluster_id=cluster_id,
                node_id=node_id,
                device_id=uuid.uuid4(),
                device_index=global_device_index(node_number, index),
                device_count=len(devices),
                metadata_copies=copies,
                device_size_bytes=device.size_bytes,
                wal_offset_bytes=wal_offset,
                wal_size_bytes=wal_size,
                data_offset_bytes=data_offset,
                data_size_bytes=data_size,
                created_ns=created_ns,
                data_sizes=data_sizes,
            )
        )
    body = encode_body(Snapshot.of((), []), 0)
    body_extents = [
        Extent(sb.device_index, sb.data_offset_bytes, round_up(len(body)))
        for sb in superblocks[:copies]
    ]
    pointer = CheckpointPointer(
        slot=0,
        generation=1,
        lsn=0,
        wal_start=0,
        body_bytes=len(body),
        body_crc32c=crc32c.crc32c(body),
        copies=tuple((extent,) for extent in body_extents),
    )
    blank = bytes(BLOCK_SIZE_BYTES)
    # Three phases, each flushed before the next, so a power cut at any point
    # leaves either the old store (untouched), nothing openable, or the new store:
    # 1. erase the old superblocks (a half-rewritten old store must not open);
    # 2. write the empty store: pointer slots, WAL start, the empty checkpoint;
    # 3. write the superblocks: now the device is a store.
    await write_parallel(
        [
            (device, [(SUPERBLOCK_A_OFFSET_BYTES, blank), (SUPERBLOCK_B_OFFSET_BYTES, blank)])
            for device in devices
        ]
    )
    jobs = []
    for device, superblock in zip(devices, superblocks, strict=True):
        writes: list[tuple[int, WriteData]] = [
            (CHECKPOINT_SLOT_OFFSETS_BYTES[1], blank),
            (superblock.wal_offset_bytes, blank),
        ]
        if superblock.holds_metadata:
            writes.append((superblock.data_offset_bytes, body))
            writes.append((CHECKPOINT_SLOT_OFFSETS_BYTES[0], pointer.encode()))
        else:
            writes.append((CHECKPOINT_SLOT_OFFSETS_BYTES[0], blank))
        jobs.append((device, writes))
    await write_parallel(jobs)
    await write_parallel(
        [
            (
                device,
                [
                    (SUPERBLOCK_A_OFFSET_BYTES, sb.encode()),
                    (SUPERBLOCK_B_OFFSET_BYTES, sb.encode()),
                ],
            )
            for device, sb in zip(devices, superblocks, strict=True)
        ]
    )
    return superblocks


def check_node_number(node_number: int) -> None:
    """Raises UsageError unless `node_number` is one a cluster can give (0..255)."""
    if not 0 <= node_number <= MAX_NODE_NUMBER:
        raise UsageError(f"node number must be 0..{MAX_NODE_NUMBER}, not {node_number}")


async def _refuse_if_formatted(device: BlockDevice) -> None:
    for offset in (SUPERBLOCK_A_OFFSET_BYTES, SUPERBLOCK_B_OFFSET_BYTES):
        try:
            superblock = decode_superblock(
                await device.read(offset, BLOCK_SIZE_BYTES), path=device.path
            )
        except NotASuperblock:
            continue
        raise DeviceError(
            f"{device.path}: already holds objfs data (node {superblock.node_id}, device "
            f"{superblock.device_index}); format with --force to erase it"
        )


def default_device_size_bytes(data_dir: str, device_count: int) -> int:
    """Device files for the embedded default: a quarter of the free disk, 1..16 GiB each."""
    make_directory(data_dir)
    share = free_disk_bytes(data_dir) // 4 // device_count
    return max(1 * GiB, min(16 * GiB, share - share % GiB))


async def create_data_dir(
    data_dir: str,
    *,
    device_count: int = DEFAULT_DEVICE_COUNT,
    device_size_bytes: int | None = None,
    buffered: bool = False,
    wal_size_bytes: int | None = None,
    node_number: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[Superblock]:
    """Create and format the embedded default: preallocated device files in `data_dir`
    (devices/devN.img, N the local index), as node `node_number` of a cluster
    (0: a single node); `progress(files made, files)` after each."""
    check_node_number(node_number)
    # Before any file is made (opening the devices would refuse them too, too late).
    await trio.to_thread.run_sync(lambda: check_durable_filesystem(data_dir, buffered=buffered))
    size = device_size_bytes
    if size is None:
        size = await trio.to_thread.run_sync(default_device_size_bytes, data_dir, device_count)
    directory = os.path.join(data_dir, "devices")
    await trio.to_thread.run_sync(make_directory, directory)
    paths = [os.path.join(directory, f"dev{index}.img") for index in range(device_count)]
    for made, path in enumerate(paths, 1):
        await trio.to_thread.run_sync(create_device_file, path, size)
        if progress is not None:
            progress(made, len(paths))
    devices = await open_devices(paths, buffered=buffered)
    try:
        return await format_devices(devices, node_number=node_number, wal_size_bytes=wal_size_bytes)
    finally:
        for device in devices:
            await device.aclose()


async def adopt_device(
    devices: Sequence[BlockDevice], target: BlockDevice, device_index: int, *, force: bool = False
) -> Superblock:
    """Make `target` device `device_index` (cluster-wide, as `objfs status` names
    it) of the node that `devices` belong to, in place of one that is missing or
    lost its superblocks, and mark it owed: the next open heals every fragment it
    should hold (fragments already on it that still match their checksums are kept).

    Crash-safe in this order: the owed bit goes into the superblocks of the node's
    devices first, then the new device gets its blank checkpoint slots and WAL
    start, then its superblock (both copies, flushed).

    Raises:
        UsageError: the index is not one this node is missing.
        DeviceError: the target is too small, or holds objfs data (without `force`).
    """
    superblocks = [await read_superblock(device) for device in devices]
    if not superblocks:
        raise UsageError("no device of the node could be read: nothing to adopt into")
    missing = check_identity(list(devices), superblocks)
    first = superblocks[0]
    _check_missing(first, device_index, missing)
    data_size = first.data_sizes[local_device_index(device_index)]
    needed = first.data_offset_bytes + data_size
    if target.size_bytes < needed:
        raise DeviceError(
            f"{target.path}: holds {target.size_bytes} bytes; device {device_index} needs "
            f"at least {needed}"
        )
    if not force:
        await _refuse_if_formatted(target)
    owed = first.owed_devices | device_mask([device_index])
    for superblock in superblocks:
        owed |= superblock.owed_devices
    for offset in (SUPERBLOCK_A_OFFSET_BYTES, SUPERBLOCK_B_OFFSET_BYTES):
        await write_parallel(
            [
                (device, [(offset, replace(superblock, owed_devices=owed).encode())])
                for device, superblock in zip(devices, superblocks, strict=True)
            ]
        )
    adopted = replace(
        first,
        device_id=uuid.uuid4(),
        device_index=device_index,
        device_size_bytes=target.size_bytes,
        data_size_bytes=data_size,
        owed_devices=owed,
    )
    blank = bytes(BLOCK_SIZE_BYTES)
    await write_parallel(
        [
            (
                target,
                [
                    (SUPERBLOCK_A_OFFSET_BYTES, blank),
                    (SUPERBLOCK_B_OFFSET_BYTES, blank),
                    (CHECKPOINT_SLOT_OFFSETS_BYTES[0], blank),
                    (CHECKPOINT_SLOT_OFFSETS_BYTES[1], blank),
                    (adopted.wal_offset_bytes, blank),
                ],
            )
        ]
    )
    await write_parallel(
        [
            (
                target,
                [
                    (SUPERBLOCK_A_OFFSET_BYTES, adopted.encode()),
                    (SUPERBLOCK_B_OFFSET_BYTES, adopted.encode()),
                ],
            )
        ]
    )
    return adopted


def _check_missing(first: Superblock, device_index: int, missing: list[int]) -> None:
    """Raises UsageError unless `device_index` is one of the node's missing devices."""
    if device_index not in first.node_device_indexes:
        indexes = first.node_device_indexes
        raise UsageError(
            f"node {first.node_id} has no device {device_index}: its devices are "
            f"{indexes[0]}..{indexes[-1]}"
        )
    if device_index not in missing:
        raise UsageError(
            f"device {device_index} of node {first.node_id} is present; only a missing "
            f"device can be replaced (missing: {missing or 'none'})"
        )


async def replace_device(
    config: StoreConfig, device_index: int, path: str | None, *, force: bool = False
) -> tuple[str, int]:
    """`objfs device replace`: adopt the device at `path` (default: the data
    directory's devN.img, N its local index, created if missing) as the node's
    missing device `device_index` (cluster-wide, as `objfs status` names it).
    Every check runs before anything is created or written.

    Returns the path and the size of the file it created (0: it existed).

    Raises:
        UsageError: the index is present, the path is another device of the node
            or not among the configured devices, or no device of the node opens.
        DeviceError: as `adopt_device`.
    """
    if path is None:
        if config.devices:
            raise UsageError("the config lists devices: name the new device's path")
        local = local_device_index(device_index)
        path = os.path.join(config.data_dir, "devices", f"dev{local}.img")
    elif config.devices and path not in config.devices:
        raise UsageError(f"{path} is not in store.devices: add it there first")
    paths = list(config.device_paths())
    if path not in paths and await trio.Path(path).exists():
        paths.append(path)
    opened = await open_available(paths, buffered=config.buffered_io)
    try:
        node: list[tuple[BlockDevice, Superblock]] = []
        for candidate in opened:
            try:
                node.append((candidate, await read_superblock(candidate)))
            except NoSuperblock:
                continue  # blank or damaged: not a device of the node now
        if not node:
            raise UsageError("no device of the node could be read")
        devices = [device for device, _ in node]
        superblocks = [superblock for _, superblock in node]
        missing = check_identity(devices, superblocks)
        first = superblocks[0]
        _check_missing(first, device_index, missing)
        for device, superblock in node:
            if device.path == path:
                raise UsageError(
                    f"{path} is device {superblock.device_index} of this node; "
                    "replace only a missing device, with a new or blank one"
                )
        created = 0
        if not await trio.Path(path).exists():
            needed = first.data_offset_bytes + first.data_sizes[local_device_index(device_index)]
            size = max(needed, max(device.size_bytes for device in devices))
            await trio.to_thread.run_sync(create_device_file, path, size)
            created = size
        target = next((d for d in opened if d.path == path), None)
        if target is None:
            target = await open_device(path, buffered=config.buffered_io)
            opened.append(target)
        await adopt_device(devices, target, device_index, force=force)
        return path, created
    finally:
        for device in opened:
            await device.aclose()
