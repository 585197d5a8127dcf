"""objfs.store.checkpoint — whole-index checkpoints: body encoding and the A/B pointer slots.

A checkpoint body is the index at one LSN, written into extents of the data
region (one copy on each metadata device). A pointer block in slot 0 or 1 of each
metadata device names the body, its checksum, and the WAL position to replay from;
the newest valid pointer wins and the other slot is the fallback (LevelDB's
MANIFEST/CURRENT, in two fixed places). Encoding here is pure; the store does I/O.
"""

from __future__ import annotations

import itertools
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import crc32c
import msgpack

from objfs.errors import Corrupted
from objfs.store.index import Snapshot
from objfs.store.records import DECODE_ERRORS
from objfs.store.types import (
    BLOCK_SIZE_BYTES,
    BucketInfo,
    BucketName,
    Extent,
    Versioning,
)

POINTER_MAGIC = b"OBJFS\x00CP"
BODY_FORMAT = 2  # 2: each key's versions as one packed blob (packing.py)
# A body that also lists moved segments (the pointer still says BODY_FORMAT): an
# objfs from before moves refuses it rather than read the old locations.
MOVED_BODY_FORMAT = 3

# pointer := magic[8] | version u32 | slot u32 | generation u64 | lsn u64 | wal_start u64
#            | body_bytes u64 | body_crc32c u32 | copy_count u32
#            | copy* | crc32c u32 (of everything before it)
# copy    := device_index u32 | extent_count u32 | (offset u64 | length u64)*
_POINTER_HEAD = struct.Struct("<8sIIQQQQII")
_COPY_HEAD = struct.Struct("<II")
_EXTENT = struct.Struct("<QQ")
_CRC = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class CheckpointPointer:
    """Where a checkpoint lives and what it covers.

    `lsn` is the last record the body includes; replay starts at WAL position
    `wal_start` with record `lsn + 1`. `generation` orders checkpoints: newest wins.
    """

    slot: int
    generation: int
    lsn: int
    wal_start: int
    body_bytes: int
    body_crc32c: int
    copies: tuple[tuple[Extent, ...], ...]  # per copy: its extents, on one device

    def extents(self) -> Iterator[Extent]:
        for copy in self.copies:
            yield from copy

    def encode(self) -> bytes:
        parts = [
            _POINTER_HEAD.pack(
                POINTER_MAGIC,
                BODY_FORMAT,
                self.slot,
                self.generation,
                self.lsn,
                self.wal_start,
                self.body_bytes,
                self.body_crc32c,
                len(self.copies),
            )
        ]
        for copy in self.copies:
            parts.append(_COPY_HEAD.pack(copy[0].device_index if copy else 0, len(copy)))
            parts.extend(_EXTENT.pack(e.offset_bytes, e.length_bytes) for e in copy)
        body = b"".join(parts)
        block = body + _CRC.pack(crc32c.crc32c(body))
        if len(block) > BLOCK_SIZE_BYTES:
            raise ValueError("checkpoint pointer does not fit in one block (too many extents)")
        return block + bytes(BLOCK_SIZE_BYTES - len(block))


def max_extents_per_pointer(copies: int) -> int:
    spare = BLOCK_SIZE_BYTES - _POINTER_HEAD.size - _CRC.size - copies * _COPY_HEAD.size
    return spare // _EXTENT.size


def decode_pointer(block: bytes) -> CheckpointPointer | None:
    """The pointer in a slot block, or None if the slot is blank or damaged."""
    if block[:8] != POINTER_MAGIC:
        return None
    try:
        (_, version, slot, generation, lsn, wal_start, body_bytes, body_crc, copy_count) = (
            _POINTER_HEAD.unpack_from(block, 0)
        )
        offset = _POINTER_HEAD.size
        copies = []
        for _ in range(copy_count):
            device_index, extent_count = _COPY_HEAD.unpack_from(block, offset)
            offset += _COPY_HEAD.size
            extents = []
            for _ in range(extent_count):
                start, length = _EXTENT.unpack_from(block, offset)
                offset += _EXTENT.size
                extents.append(Extent(device_index, start, length))
            copies.append(tuple(extents))
        (stored_crc,) = _CRC.unpack_from(block, offset)
    except struct.error:
        return None
    if crc32c.crc32c(block[:offset]) != stored_crc or version != BODY_FORMAT:
        return None
    return CheckpointPointer(slot, generation, lsn, wal_start, body_bytes, body_crc, tuple(copies))


# body := msgpack stream: [format, lsn, bucket_count, object_count]
#         then bucket_count times [name, owner, created_ns, versioning]
#         then object_count times [bucket, key, [version, ...]]   (key order)
#         then, in format 3, [moved_count] and moved_count times
#              [segment_id, packed segment]   (segments moved since written)


def encode_body(snapshot: Snapshot, lsn: int) -> bytes:
    """Serialise a snapshot. Pure CPU: run it in a worker thread for large indexes."""
    packer = msgpack.Packer(use_bin_type=True)
    body_format = MOVED_BODY_FORMAT if snapshot.moved else BODY_FORMAT
    parts = [packer.pack([body_format, lsn, len(snapshot.buckets), len(snapshot.keys)])]
    for info in snapshot.buckets:
        fields = [info.name, info.owner, info.created_ns, info.versioning.value]
        if info.settings:
            fields.append([[k, v] for k, v in info.settings])
        parts.append(packer.pack(fields))
    for (bucket, key), packed in snapshot.items():
        parts.append(packer.pack([bucket, key, packed]))
    if snapshot.moved:
        parts.append(packer.pack([len(snapshot.moved)]))
        parts.extend(packer.pack([i, packed]) for i, packed in snapshot.moved.items())
    return b"".join(parts)


def decode_body(body: bytes) -> tuple[int, Snapshot]:
    """(lsn, snapshot) from a body whose checksum matched.

    Raises:
        Corrupted: the body does not parse.
    """
    try:
        unpacker = msgpack.Unpacker(raw=False, use_list=True, max_buffer_size=len(body) + 1)
        unpacker.feed(body)
        body_format, lsn, bucket_count, object_count = unpacker.unpack()
        if body_format not in (BODY_FORMAT, MOVED_BODY_FORMAT):
            raise Corrupted(f"checkpoint body format {body_format} is not readable")
        buckets = []
        for _ in range(bucket_count):
            fields = unpacker.unpack()
            name, owner, created_ns, versioning = fields[:4]
            settings = tuple((k, v) for k, v in fields[4]) if len(fields) > 4 else ()
            buckets.append(
                BucketInfo(BucketName(name), owner, created_ns, Versioning(versioning), settings)
            )
        # Keys and values straight into their final containers: no list of a
        # million (key, versions) pairs to throw away, whose holes would stay in
        # the heap between the index's objects.
        intern = sys.intern
        keys: list[tuple[str, str]] = []
        values: dict[tuple[str, str], bytes] = {}
        for bucket, key, packed in itertools.islice(unpacker, object_count):
            if not isinstance(packed, bytes) or not isinstance(key, str):
                raise Corrupted(f"checkpoint body entry {bucket!r}/{key!r} is not key + versions")
            index_key = (intern(bucket), key)
            keys.append(index_key)
            values[index_key] = packed
        if len(keys) != object_count or len(values) != object_count:
            raise Corrupted(f"checkpoint body holds {len(keys)} keys, not {object_count}")
        moved: dict[int, bytes] = {}
        if body_format == MOVED_BODY_FORMAT:
            (moved_count,) = unpacker.unpack()
            for segment_id, packed in itertools.islice(unpacker, moved_count):
                if not isinstance(segment_id, int) or not isinstance(packed, bytes):
                    raise Corrupted(f"checkpoint body: moved segment {segment_id!r} is malformed")
                moved[segment_id] = packed
            if len(moved) != moved_count:
                raise Corrupted(
                    f"checkpoint body holds {len(moved)} moved segments, not {moved_count}"
                )
    except DECODE_ERRORS as exc:
        raise Corrupted(f"checkpoint body does not parse: {exc!r}") from exc
    return lsn, Snapshot(tuple(buckets), keys, values, moved)
