"""objfs.store.packing — the compact in-memory forms the index keeps: packed versions
and packed segments.

A key's versions are kept as one msgpack blob (the record encoding of each
version) and decoded when asked for; a referenced segment as a struct. A tree of
small frozen objects per version cost ~1.4 KiB per object; the blobs cost a few
hundred bytes, and a checkpoint writes and reads them without decoding. Pure.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import msgpack

from objfs.store.records import decode_version, encode_version
from objfs.store.types import Extent, Fragment, ObjectVersion, Segment, SegmentId

Versions = tuple[ObjectVersion, ...]  # newest first

# segment := size u64 | data_fragments u8 | scheme u8 | fragment*
# fragment := device u32 | offset u64 | length u64 | size u64 | crc32c u32
_SIZE = struct.Struct("<QBB")
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
    parts = [_SIZE.pack(segment.size_bytes, segment.data_fragments, segment.scheme)]
    for f in segment.fragments:
        e = f.extent
        parts.append(
            _FRAGMENT.pack(e.device_index, e.offset_bytes, e.length_bytes, f.size_bytes, f.crc32c)
        )
    return b"".join(parts)


def unpack_segment(packed: bytes) -> Segment:
    size, data_fragments, scheme = _SIZE.unpack_from(packed)
    fragments = tuple(
        Fragment(Extent(d, o, n), s, c)
        for d, o, n, s, c in _FRAGMENT.iter_unpack(packed[_SIZE.size :])
    )
    return Segment(size, fragments, data_fragments, scheme)


def segment_extents(packed: bytes) -> Iterator[Extent]:
    """The extents of a packed segment's fragments, without building the segment."""
    for device, offset, length, _, _ in _FRAGMENT.iter_unpack(packed[_SIZE.size :]):
        yield Extent(device, offset, length)


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
            first = fragments[0]
            parts = [_SIZE.pack(size, *shape)]
            parts.extend(_FRAGMENT.pack(*f) for f in fragments)
            segments.append(((first[0] << 48) | first[1], b"".join(parts)))
    return len(raw_versions), logical, segments
