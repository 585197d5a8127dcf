"""objfs.store.superblock — the header of every device: identity, geometry, regions.

Owns the superblock's byte layout (docs/format.md, "Superblock") and the rule
that places the regions on a device. It encodes and decodes; the device module
does the reading and writing. A device of another cluster or node, or of a newer
format, is refused with a message that names it and says why.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

import crc32c

from objfs.errors import DeviceError
from objfs.store.types import (
    BLOCK_SIZE_BYTES,
    GiB,
    MiB,
    device_node_number,
    devices_in_mask,
    local_device_index,
)

MAGIC = b"OBJFS\x00SB"
FORMAT_VERSION = 2  # 2: the device table and the owed-heal mask
MAX_DEVICES = 64  # per node: the owed-heal mask is one u64

# Fixed places in the first MiB of every device (docs/format.md, "Device layout").
SUPERBLOCK_A_OFFSET_BYTES = 0
CHECKPOINT_SLOT_OFFSETS_BYTES = (4 * 1024, 8 * 1024)  # pointer slots 0 and 1
SUPERBLOCK_B_OFFSET_BYTES = 64 * 1024  # far from copy A, so one bad spot cannot take both
HEADER_REGION_BYTES = 1 * MiB  # the WAL region starts here
REGION_ALIGNMENT_BYTES = 1 * MiB
MIN_DEVICE_BYTES = 16 * MiB

# magic, format_version, flags, cluster, node, device uuids, device_index, device_count,
# metadata_copies, block_size, device_size, wal_offset, wal_size, data_offset,
# data_size, created_ns, owed_devices; then data_size of each device by local index
# (u64 each); then crc32c of all of it.
_LAYOUT = struct.Struct("<8sII16s16s16sIIII7Q")
_DATA_SIZE = struct.Struct("<Q")
_CRC = struct.Struct("<I")
SUPERBLOCK_BYTES = _LAYOUT.size + _CRC.size  # plus 8 bytes per device


@dataclass(frozen=True, slots=True)
class Superblock:
    cluster_id: uuid.UUID
    node_id: uuid.UUID
    device_id: uuid.UUID
    # Cluster-wide: node_number * DEVICES_PER_NODE + local index (objfs/store/types.py).
    # The local index, 0 .. device_count-1, is what the positional fields below
    # use: the device table, the owed mask and holds_metadata. Node 0 (a single
    # node, or a cluster's first) has device_index == local index.
    device_index: int
    device_count: int
    metadata_copies: int  # local devices 0 .. metadata_copies-1 hold the WAL and checkpoints
    device_size_bytes: int
    wal_offset_bytes: int
    wal_size_bytes: int
    data_offset_bytes: int
    data_size_bytes: int
    created_ns: int
    # The data region size of every device of the node, by local index: a device
    # that is missing still has its space map, so writes can place (owed)
    # fragments on it.
    data_sizes: tuple[int, ...] = ()
    # Bit i set: the node's device of local index i may lack fragments written
    # while it was down, and must be healed before it counts as whole again
    # (docs/concurrency.md, "Heal").
    owed_devices: int = 0
    format_version: int = FORMAT_VERSION
    block_size_bytes: int = BLOCK_SIZE_BYTES

    @property
    def format_stamp(self) -> int:
        """A 32-bit value unique to one format of one node: seeds WAL frame checksums."""
        identity = (
            self.cluster_id.bytes + self.node_id.bytes + self.created_ns.to_bytes(8, "little")
        )
        return int(crc32c.crc32c(identity))

    @property
    def local_index(self) -> int:
        """The device's index within its node, 0 .. device_count-1."""
        return local_device_index(self.device_index)

    @property
    def node_number(self) -> int:
        """The number of the node in its cluster (0: a single node)."""
        return device_node_number(self.device_index)

    @property
    def node_device_indexes(self) -> tuple[int, ...]:
        """The cluster-wide indexes of every device of the node, by local index."""
        base = self.device_index - self.local_index
        return tuple(base + i for i in range(self.device_count))

    @property
    def owed_indexes(self) -> set[int]:
        """The cluster-wide indexes of the devices the owed mask names."""
        return devices_in_mask(self.owed_devices, self.node_device_indexes)

    @property
    def holds_metadata(self) -> bool:
        return self.local_index < self.metadata_copies

    def encode(self) -> bytes:
        assert len(self.data_sizes) == self.device_count, "one data size per device"
        body = _LAYOUT.pack(
            MAGIC,
            self.format_version,
            0,
            self.cluster_id.bytes,
            self.node_id.bytes,
            self.device_id.bytes,
            self.device_index,
            self.device_count,
            self.metadata_copies,
            self.block_size_bytes,
            self.device_size_bytes,
            self.wal_offset_bytes,
            self.wal_size_bytes,
            self.data_offset_bytes,
            self.data_size_bytes,
            self.created_ns,
            self.owed_devices,
        )
        body += b"".join(_DATA_SIZE.pack(size) for size in self.data_sizes)
        block = body + _CRC.pack(crc32c.crc32c(body))
        return block + bytes(BLOCK_SIZE_BYTES - len(block))


class NotASuperblock(Exception):
    """The block holds no objfs superblock (blank, foreign or damaged)."""


def decode_superblock(block: bytes, *, path: str) -> Superblock:
    """Decode one superblock copy.

    Raises:
        NotASuperblock: no magic or a bad checksum (the caller tries the other copy).
        DeviceError: a valid superblock of a format this code cannot read.
    """
    if len(block) < SUPERBLOCK_BYTES or block[:8] != MAGIC:
        raise NotASuperblock(f"{path}: no objfs superblock")
    version = struct.unpack_from("<I", block, 8)[0]
    if version > FORMAT_VERSION:
        raise DeviceError(
            f"{path}: formatted with objfs format version {version}; this objfs reads "
            f"version {FORMAT_VERSION}. Upgrade objfs to open it."
        )
    if version < FORMAT_VERSION:
        raise DeviceError(
            f"{path}: formatted with objfs format version {version}, from before erasure "
            f"coding; this objfs reads version {FORMAT_VERSION}. Copy the data out with the "
            "old objfs and format again."
        )
    fields = _LAYOUT.unpack_from(block)
    device_count = fields[7]
    if not 1 <= device_count <= MAX_DEVICES:
        raise NotASuperblock(f"{path}: superblock names {device_count} devices")
    table_end = _LAYOUT.size + device_count * _DATA_SIZE.size
    (stored_crc,) = _CRC.unpack_from(block, table_end)
    if crc32c.crc32c(block[:table_end]) != stored_crc:
        raise NotASuperblock(f"{path}: superblock checksum mismatch")
    data_sizes = tuple(size for (size,) in _DATA_SIZE.iter_unpack(block[_LAYOUT.size : table_end]))
    if fields[9] != BLOCK_SIZE_BYTES:
        raise DeviceError(f"{path}: block size {fields[9]} is not supported")
    return Superblock(
        format_version=version,
        cluster_id=uuid.UUID(bytes=fields[3]),
        node_id=uuid.UUID(bytes=fields[4]),
        device_id=uuid.UUID(bytes=fields[5]),
        device_index=fields[6],
        device_count=fields[7],
        metadata_copies=fields[8],
        block_size_bytes=fields[9],
        device_size_bytes=fields[10],
        wal_offset_bytes=fields[11],
        wal_size_bytes=fields[12],
        data_offset_bytes=fields[13],
        data_size_bytes=fields[14],
        created_ns=fields[15],
        owed_devices=fields[16],
        data_sizes=data_sizes,
    )


def default_wal_size_bytes(device_size_bytes: int) -> int:
    """1/32 of the device, between 8 MiB and 1 GiB, in whole MiB.

    Example: a 2 GiB device gets a 64 MiB WAL; a 100 MiB one gets 8 MiB.
    """
    size = min(max(device_size_bytes // 32, 8 * MiB), 1 * GiB)
    return size - size % REGION_ALIGNMENT_BYTES


def plan_layout(
    device_size_bytes: int, *, wal_size_bytes: int | None = None
) -> tuple[int, int, int, int]:
    """Place the regions of a device: (wal_offset, wal_size, data_offset, data_size).

    Raises:
        DeviceError: the device is too small for a header, a WAL and some data.
    """
    if device_size_bytes < MIN_DEVICE_BYTES:
        raise DeviceError(
            f"device of {device_size_bytes} bytes is too small (at least {MIN_DEVICE_BYTES})"
        )
    wal_size = (
        wal_size_bytes if wal_size_bytes is not None else default_wal_size_bytes(device_size_bytes)
    )
    if wal_size % REGION_ALIGNMENT_BYTES or wal_size < 1 * MiB:
        raise DeviceError(f"WAL size {wal_size} must be a whole number of MiB, at least 1 MiB")
    data_offset = HEADER_REGION_BYTES + wal_size
    data_size = device_size_bytes - data_offset
    data_size -= data_size % REGION_ALIGNMENT_BYTES
    if data_size < 4 * MiB:
        raise DeviceError(
            f"device of {device_size_bytes} bytes leaves no room for data after a "
            f"{wal_size}-byte WAL"
        )
    return HEADER_REGION_BYTES, wal_size, data_offset, data_size
