"""objfs.store.recovery — opening a store: devices, newest checkpoint, WAL tail, free space.

The procedure (docs/format.md, "Recovery"):
1. Read every device's superblock (copy A, else B); all must belong to one node,
   with no device index twice. Devices may be missing (the node opens degraded
   when its policy allows: objfs/store/opening.py).
2. Read both checkpoint slots of every metadata device; try pointers newest first
   and load the first whose body reads back with the right checksum from any copy.
3. Scan the WAL of every metadata device from that checkpoint; the longest valid
   chain wins, its records are applied, and shorter copies are rewritten from it.
4. Free space = data regions minus every extent the index or a pointer references.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import crc32c
import trio

from objfs.errors import Corrupted, DeviceError, ObjfsError
from objfs.store.checkpoint import CheckpointPointer, decode_body, decode_pointer
from objfs.store.device import BlockDevice, WriteData, round_down, write_parallel
from objfs.store.extents import ExtentAllocator
from objfs.store.index import ObjectIndex
from objfs.store.superblock import (
    CHECKPOINT_SLOT_OFFSETS_BYTES,
    SUPERBLOCK_A_OFFSET_BYTES,
    SUPERBLOCK_B_OFFSET_BYTES,
    NotASuperblock,
    Superblock,
    decode_superblock,
)
from objfs.store.types import BLOCK_SIZE_BYTES, MAX_NODE_NUMBER, Extent
from objfs.store.wal import ScanResult, scan

log = logging.getLogger(__name__)


@dataclass
class Recovered:
    superblocks: dict[int, Superblock]
    index: ObjectIndex
    pointers: dict[int, CheckpointPointer]  # slot -> newest valid pointer seen in it
    chosen: CheckpointPointer  # the checkpoint the index was loaded from
    max_generation: int  # the next checkpoint's generation is one more
    reserved: list[Extent]  # every extent any valid pointer names
    next_lsn: int
    tail_position: int
    head_position: int
    tail_block: bytes
    replayed: int


class NoSuperblock(DeviceError):
    """Neither superblock copy of a device can be read and decoded: the device is
    blank, foreign, damaged or failing (a node may run without it)."""


async def read_superblock(device: BlockDevice) -> Superblock:
    """Copy A, or copy B if A is damaged.

    Raises:
        NoSuperblock: neither copy is an objfs superblock, or neither can be read.
        DeviceError: a superblock of another format version.
    """
    for offset in (SUPERBLOCK_A_OFFSET_BYTES, SUPERBLOCK_B_OFFSET_BYTES):
        try:
            return decode_superblock(await device.read(offset, BLOCK_SIZE_BYTES), path=device.path)
        except NotASuperblock:
            if offset == SUPERBLOCK_A_OFFSET_BYTES:
                log.warning("%s: superblock copy A is damaged; using copy B", device.path)
        except OSError as exc:
            if offset == SUPERBLOCK_B_OFFSET_BYTES:
                raise NoSuperblock(f"{device.path}: superblock unreadable: {exc}") from exc
            log.warning("%s: superblock copy A unreadable (%s); using copy B", device.path, exc)
    raise NoSuperblock(
        f"{device.path}: not an objfs device (no valid superblock); run objfs format"
    )


def check_identity(devices: Sequence[BlockDevice], superblocks: Sequence[Superblock]) -> list[int]:
    """All devices belong to one node, with one node number, and no device index
    is there twice.

    Returns the (cluster-wide) indexes of the node's devices that are not among
    `devices`.

    Raises:
        DeviceError: naming the device that does not fit and why.
    """
    first, first_path = superblocks[0], devices[0].path
    seen: dict[int, str] = {}
    for device, superblock in zip(devices, superblocks, strict=True):
        if (superblock.cluster_id, superblock.node_id) != (first.cluster_id, first.node_id):
            raise DeviceError(
                f"{device.path}: belongs to node {superblock.node_id} of cluster "
                f"{superblock.cluster_id}, not to node {first.node_id} like {first_path}"
            )
        if superblock.node_number > MAX_NODE_NUMBER:
            raise DeviceError(
                f"{device.path}: its device index {superblock.device_index} names node number "
                f"{superblock.node_number}; node numbers are 0..{MAX_NODE_NUMBER}"
            )
        if superblock.node_number != first.node_number:
            raise DeviceError(
                f"{device.path}: is device {superblock.device_index} of node number "
                f"{superblock.node_number}, but {first_path} is of node number "
                f"{first.node_number} (all devices of a node share its number)"
            )
        if superblock.local_index >= superblock.device_count:
            raise DeviceError(
                f"{device.path}: is device {superblock.local_index} (index "
                f"{superblock.device_index}) of a node of only {superblock.device_count} devices"
            )
        if superblock.device_index in seen:
            raise DeviceError(
                f"{device.path}: is device {superblock.device_index}, "
                f"like {seen[superblock.device_index]}"
            )
        if superblock.holds_metadata and (
            superblock.wal_offset_bytes,
            superblock.wal_size_bytes,
            superblock.metadata_copies,
        ) != (first.wal_offset_bytes, first.wal_size_bytes, first.metadata_copies):
            raise DeviceError(
                f"{device.path}: its WAL region or metadata copies differ from {first_path}'s "
                "(all metadata devices of a node must share one WAL geometry)"
            )
        if (superblock.device_count, superblock.data_sizes) != (
            first.device_count,
            first.data_sizes,
        ):
            raise DeviceError(
                f"{device.path}: its device table differs from {first_path}'s "
                "(a device of an older incarnation of this node?)"
            )
        if superblock.device_size_bytes > device.size_bytes:
            raise DeviceError(
                f"{device.path}: formatted for {superblock.device_size_bytes} bytes but "
                f"holds only {device.size_bytes}"
            )
        seen[superblock.device_index] = device.path
    return sorted(set(first.node_device_indexes) - set(seen))


def data_regions(superblocks: dict[int, Superblock]) -> dict[int, tuple[int, int]]:
    """[start, end) of the data region of every device of the node, by cluster-wide
    index, from the device table: missing devices included (every device's data
    region starts at the same offset, after one WAL geometry)."""
    first = superblocks[min(superblocks)]
    start = first.data_offset_bytes
    return {
        i: (start, start + size)
        for i, size in zip(first.node_device_indexes, first.data_sizes, strict=True)
    }


async def read_pointers(
    devices: dict[int, BlockDevice], metadata: Sequence[int]
) -> list[CheckpointPointer]:
    """Every valid pointer block in the slots of the metadata devices."""
    found = []
    for device_index in metadata:
        blocks = await devices[device_index].read_many(
            [(offset, BLOCK_SIZE_BYTES) for offset in CHECKPOINT_SLOT_OFFSETS_BYTES]
        )
        for block in blocks:
            pointer = decode_pointer(block)
            if pointer is not None:
                found.append(pointer)
    return found


async def read_body(devices: dict[int, BlockDevice], pointer: CheckpointPointer) -> bytes | None:
    """The body from the first copy whose checksum matches, or None."""
    for copy in pointer.copies:
        if copy[0].device_index not in devices:
            continue  # the device is missing
        try:
            parts = await devices[copy[0].device_index].read_many(
                [(e.offset_bytes, e.length_bytes) for e in copy]
            )
        except (OSError, ObjfsError) as exc:
            log.warning("checkpoint %d: copy unreadable: %s", pointer.generation, exc)
            continue
        body = b"".join(parts)[: pointer.body_bytes]
        if len(body) == pointer.body_bytes and crc32c.crc32c(body) == pointer.body_crc32c:
            return body
        log.warning(
            "checkpoint %d: copy on device %d fails its checksum",
            pointer.generation,
            copy[0].device_index,
        )
    return None


async def load_checkpoint(
    devices: dict[int, BlockDevice], pointers: list[CheckpointPointer]
) -> tuple[CheckpointPointer, ObjectIndex]:
    """The newest checkpoint that reads back whole, as an index.

    Raises:
        Corrupted: no pointer leads to a readable body.
    """
    for pointer in sorted(pointers, key=lambda p: p.generation, reverse=True):
        body = await read_body(devices, pointer)
        if body is None:
            log.error("checkpoint %d is damaged; falling back to an older one", pointer.generation)
            continue
        try:
            lsn, snapshot = await trio.to_thread.run_sync(decode_body, body)
        except Corrupted as exc:
            log.error("checkpoint %d does not parse (%s); falling back", pointer.generation, exc)
            continue
        if lsn != pointer.lsn:
            log.error("checkpoint %d holds LSN %d, not %d", pointer.generation, lsn, pointer.lsn)
            continue
        try:
            index = await trio.to_thread.run_sync(ObjectIndex.from_snapshot, snapshot)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            # Decoded, but not an index this objfs could have written (keys of the
            # wrong type, say): as damaged as a bad checksum.
            log.error(
                "checkpoint %d is not a valid index (%r); falling back", pointer.generation, exc
            )
            continue
        return pointer, index
    raise Corrupted(
        f"no readable checkpoint on devices {sorted(devices)} "
        f"({len(pointers)} pointers found, none with an intact body)"
    )


async def scan_mirrors(
    devices: dict[int, BlockDevice],
    metadata: Sequence[int],
    superblock: Superblock,
    pointer: CheckpointPointer,
) -> dict[int, ScanResult]:
    """Each readable WAL mirror's chain of records after `pointer`, by device index."""
    scans: dict[int, ScanResult] = {}
    for device_index in metadata:
        try:
            scans[device_index] = await scan(
                devices[device_index],
                superblock.wal_offset_bytes,
                superblock.wal_size_bytes,
                start_position=pointer.wal_start,
                start_lsn=pointer.lsn + 1,
                salt=superblock.format_stamp,
            )
        except (OSError, ObjfsError) as exc:
            log.warning("WAL copy on device %d unreadable: %s", device_index, exc)
    return scans


async def replay_wal(
    devices: dict[int, BlockDevice],
    metadata: Sequence[int],
    superblock: Superblock,
    pointer: CheckpointPointer,
    index: ObjectIndex,
    *,
    writable: bool = True,
) -> tuple[ScanResult, int]:
    """Apply the longest valid WAL chain after `pointer`; if `writable`, bring shorter
    copies up to it.

    Returns the scan and the device index of the copy that won.
    """
    scans = await scan_mirrors(devices, metadata, superblock, pointer)
    if not scans:
        raise Corrupted("no WAL copy can be read")
    winner = max(scans, key=lambda i: (scans[i].next_lsn, -i))
    best = scans[winner]
    for item in best.records:
        try:
            index.apply(item.record)
        except ObjfsError:
            pass  # it failed the same way when it was first applied: nothing changed then either
    for device_index, result in scans.items():
        if result.next_lsn != best.next_lsn and writable:
            log.warning(
                "WAL copy on device %d ends at LSN %d, copy on device %d at %d; repairing",
                device_index,
                result.next_lsn - 1,
                winner,
                best.next_lsn - 1,
            )
            await copy_wal(
                devices[winner],
                devices[device_index],
                superblock,
                pointer.wal_start,
                best.end_position,
            )
    return best, winner


async def seal_tail(
    devices: Sequence[BlockDevice],
    superblock: Superblock,
    tail: int,
    head: int,
    tail_block: bytes,
) -> None:
    """Zero, on every mirror, the ring space that the last batch may have written.

    A batch that never completed can have left valid frames after the tail on
    some mirror (a device may write blocks out of order, and one mirror may lag
    behind another). If a later chain ever reached one of them with the matching
    LSN, its record would be replayed over extents reused meanwhile. A batch is at
    most an eighth of the ring plus a frame; one that wrapped also skipped up to
    a record's worth before its WRAP frame: a quarter of the ring and three blocks
    cover both. The seal never reaches the head's blocks.
    """
    size = superblock.wal_size_bytes
    start = round_down(tail)
    end = min(start + size // 4 + 3 * BLOCK_SIZE_BYTES, head + size - 2 * BLOCK_SIZE_BYTES)
    writes: list[tuple[int, WriteData]] = []
    position = start
    while position < end:
        physical = position % size
        length = min(end - position, size - physical)
        data = bytes(length)
        if position == start:
            data = tail_block + data[len(tail_block) :]
        writes.append((superblock.wal_offset_bytes + physical, data))
        position += length
    if writes:
        await write_parallel([(device, writes) for device in devices])


async def copy_wal(
    source: BlockDevice, target: BlockDevice, superblock: Superblock, start: int, end: int
) -> None:
    """Copy the WAL bytes of logical positions [start, end) from one mirror to another."""
    size = superblock.wal_size_bytes
    position = round_down(start)
    while position < end:
        physical = position % size
        length = min(end - position, size - physical, 8 * 1024 * 1024)
        length = max(length, 1)
        data = await source.read(superblock.wal_offset_bytes + physical, length)
        await target.write(superblock.wal_offset_bytes + physical, data)
        position += length
    await target.flush()


def rebuild_allocators(
    superblocks: dict[int, Superblock],
    index: ObjectIndex,
    reserved: list[Extent],
    *,
    foreign_devices: bool = False,
) -> dict[int, ExtentAllocator]:
    """All data space minus what the index and the checkpoint pointers reference.

    `foreign_devices`: a cluster node's index names other nodes' devices too;
    those are left to their nodes.

    Raises:
        Corrupted: two references claim the same blocks, or one lies outside its device.
    """
    return rebuild_allocators_from_ranges(
        data_regions(superblocks), index, reserved, foreign_devices=foreign_devices
    )


def rebuild_allocators_from_ranges(
    regions: dict[int, tuple[int, int]],
    index: ObjectIndex,
    reserved: list[Extent],
    *,
    foreign_devices: bool = False,
) -> dict[int, ExtentAllocator]:
    """`rebuild_allocators` over explicit data regions (device index -> [start, end))."""
    used: dict[int, list[Extent]] = {i: [] for i in regions}
    extents = list(reserved)
    extents.extend(index.referenced_extents())
    for extent in extents:
        if extent.device_index not in used:
            if foreign_devices:
                continue
            raise Corrupted(f"{extent} is on a device this node does not have")
        used[extent.device_index].append(extent)
    try:
        return {
            i: ExtentAllocator.with_used(i, start, end, used[i])
            for i, (start, end) in regions.items()
        }
    except ValueError as exc:
        raise Corrupted(f"space map cannot be rebuilt: {exc}") from exc


async def recover(
    devices: dict[int, BlockDevice], superblocks: dict[int, Superblock], *, writable: bool = True
) -> Recovered:
    """Steps 2-4 of the procedure above, for devices that passed `check_identity`.

    With `writable` False nothing is written (no mirror repair, no tail seal).

    Raises:
        Corrupted: every metadata device is missing, or none has a readable checkpoint.
    """
    first = superblocks[min(superblocks)]
    metadata = [i for i in sorted(superblocks) if superblocks[i].holds_metadata]
    if not metadata:
        copies = first.node_device_indexes[: first.metadata_copies]
        raise Corrupted(
            f"all {first.metadata_copies} metadata devices ({copies[0]}..{copies[-1]}) "
            "are missing: the WAL and checkpoints live only on them"
        )
    pointers = await read_pointers(devices, metadata)
    chosen, index = await load_checkpoint(devices, pointers)
    result, winner = await replay_wal(devices, metadata, first, chosen, index, writable=writable)
    newest_per_slot: dict[int, CheckpointPointer] = {}
    for pointer in pointers:
        held = newest_per_slot.get(pointer.slot)
        if held is None or pointer.generation > held.generation:
            newest_per_slot[pointer.slot] = pointer
    # The loaded checkpoint is what its slot must hold, even if a newer (damaged)
    # pointer was seen there: rewriting that one would erase the only good checkpoint.
    newest_per_slot[chosen.slot] = chosen
    if writable:
        # Mirrors may disagree on a slot (a pointer write that reached only some):
        # make every mirror hold the same two pointers, so the bodies of the
        # superseded ones can be freed without a later recovery finding them.
        await write_parallel(
            [
                (
                    devices[i],
                    [
                        (CHECKPOINT_SLOT_OFFSETS_BYTES[s], p.encode())
                        for s, p in newest_per_slot.items()
                    ],
                )
                for i in metadata
            ]
        )
        pointers = list(newest_per_slot.values())
    reserved: dict[tuple[int, int, int], Extent] = {}
    for pointer in pointers:
        for extent in pointer.extents():
            reserved[(extent.device_index, extent.offset_bytes, extent.length_bytes)] = extent
    # The WAL must keep what the fallback checkpoint (the other slot) would replay.
    other = newest_per_slot.get(1 - chosen.slot)
    head = chosen.wal_start
    if other is not None and other.generation < chosen.generation:
        head = min(head, other.wal_start)
    tail = result.end_position
    tail_block = b""
    if tail % BLOCK_SIZE_BYTES:
        physical = tail % first.wal_size_bytes
        tail_block = await devices[winner].read(
            first.wal_offset_bytes + round_down(physical), physical - round_down(physical)
        )
    if writable:
        await seal_tail([devices[i] for i in metadata], first, tail, head, tail_block)
    return Recovered(
        superblocks=superblocks,
        index=index,
        pointers=newest_per_slot,
        chosen=chosen,
        max_generation=max(p.generation for p in newest_per_slot.values()),
        reserved=list(reserved.values()),
        next_lsn=result.next_lsn,
        tail_position=tail,
        head_position=head,
        tail_block=tail_block,
        replayed=len(result.records),
    )
