"""objfs.store.packing — the compact in-memory forms the index keeps: packed versions
and packed segments.

A key's versions are kept as one msgpack blob (the record encoding of each
version) and decoded when asked for; a referenced segment as a struct. A tree of
small frozen objects per version cost ~1.4 KiB per object; the blobs cost a few
hundred bytes, and a checkpoint writes and reads them without decoding. Pure.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import msgpack

from objfs.store.extents import subtract_extents
from objfs.store.records import decode_version, encode_version
from objfs.store.types import (
    BLOCK_SIZE_BYTES,
    Extent,
    Fragment,
    ObjectVersion,
    Segment,
    SegmentId,
)

Versions = tuple[ObjectVersion, ...]  # newest first

# segment := size u64 | data_fragments u8 | scheme u8 | origin i64 | fragment*
# fragment := device u32 | offset u64 | length u64 | size u64 | crc32c u32
_SIZE = struct.Struct("<QBBq")
_FRAGMENT = struct.Struct("<IQQQI")


def pack_versions(versions: Versions) -> bytes:
    packed: bytes = msgpack.packb([encode_version(v) for v in versions], use_bin_type=True)
    return packed


def unpack_versions(packed: bytes) -> Versions:
    return tuple([decode_version(v) for v in msgpack.unpackb(packed, raw=False, use_list=True)])


def unpack_heads(packed: bytes) -> Versions:
    """The versions without their pieces (for listings: sizes, ETags, markers)."""
    raw = msgpack.unpackb(packed, raw=False, use_list=True)
    return tuple([decode_version(v, pieces=False) for v in raw])


def pack_segment(segment: Segment) -> bytes:
    parts = [_SIZE.pack(segment.size_bytes, segment.data_fragments, segment.scheme, segment.origin)]
    for f in segment.fragments:
        e = f.extent
        parts.append(
            _FRAGMENT.pack(e.device_index, e.offset_bytes, e.length_bytes, f.size_bytes, f.crc32c)
        )
    return b"".join(parts)


def unpack_segment(packed: bytes) -> Segment:
    size, data_fragments, scheme, origin = _SIZE.unpack_from(packed)
    fragments = tuple(
        Fragment(Extent(d, o, n), s, c)
        for d, o, n, s, c in _FRAGMENT.iter_unpack(packed[_SIZE.size :])
    )
    return Segment(size, fragments, data_fragments, scheme, origin)


def segment_extents(packed: bytes) -> Iterator[Extent]:
    """The extents a packed segment holds, without building the segment: its
    fragments' and, for a moved segment whose id's block no fragment starts at,
    that block (kept so that no new segment is given the same id)."""
    covered = False
    origin = _SIZE.unpack_from(packed)[3]
    for device, offset, length, _, _ in _FRAGMENT.iter_unpack(packed[_SIZE.size :]):
        covered = covered or (device << 48 | offset) == origin
        yield Extent(device, offset, length)
    if origin >= 0 and not covered:
        yield id_block(origin)


def id_block(segment_id: SegmentId) -> Extent:
    """The first block of the extent a segment id names."""
    return Extent(segment_id >> 48, segment_id & ((1 << 48) - 1), BLOCK_SIZE_BYTES)


def held_beyond(packed: bytes, other: bytes | None = None) -> Segment:
    """The extents packed segment `packed` holds and `other` (the same segment at
    another time: before or after a move) does not, as fragments of a segment
    with its id: what the space map frees, or takes, for it."""
    segment = unpack_segment(packed)
    extents: Iterable[Extent] = segment_extents(packed)
    if other is not None:
        extents = subtract_extents(extents, segment_extents(other))
    fragments = tuple(Fragment(e, e.length_bytes, 0) for e in extents)
    return replace(segment, fragments=fragments, origin=segment.segment_id)


def scan_packed(packed: bytes) -> tuple[int, int, list[tuple[SegmentId, bytes]]]:
    """(versions, logical bytes, [(segment id, packed segment) per reference]) of a
    packed blob, without building version objects (recovery walks a million)."""
    raw_versions = msgpack.unpackb(packed, raw=False, use_list=True)
    logical = 0
    segments: list[tuple[SegmentId, bytes]] = []
    for raw_version in raw_versions:
        logical += raw_version[1]
        for raw_piece in raw_version[9]:
            source: Any = raw_piece[3]
            if isinstance(source, bytes):
                continue
            size, fragments = source[0], source[1]
            shape = (source[2], source[3]) if len(source) > 2 else (1, 0)
            origin = source[4] if len(source) > 4 else -1
            first = fragments[0]
            parts = [_SIZE.pack(size, *shape, origin)]
            parts.extend(_FRAGMENT.pack(*f) for f in fragments)
            segment_id = origin if origin >= 0 else (first[0] << 48) | first[1]
            segments.append((segment_id, b"".join(parts)))
    return len(raw_versions), logical, segments
