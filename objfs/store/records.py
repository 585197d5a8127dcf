"""objfs.store.records — every change of the index, as a typed record, and its encoding.

A record carries everything its application needs (times, version ids, fragment
locations), so applying it is a pure function of the index and the record: the
WAL replays it, and the cluster's Raft log will carry the same records. The
payload of each type is a msgpack array whose layout is frozen once released; a
changed layout gets a new type number and the old decoder stays (Garage v08/v09).
See docs/format.md, "Records".
"""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from objfs.errors import Corrupted
from objfs.store.types import (
    BucketName,
    Change,
    Extent,
    Fragment,
    ObjectKey,
    ObjectVersion,
    Piece,
    PosixAttrs,
    Segment,
    SegmentId,
    VersionId,
    Versioning,
)

# What decoding bytes of the wrong shape can raise (a payload or checkpoint body
# that is not what this objfs wrote): all of it means Corrupted, never a crash.
DECODE_ERRORS = (
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    AttributeError,
    msgpack.UnpackException,
)


class RecordType(enum.IntEnum):
    WRAP = 1  # WAL only: the next record starts at the beginning of the WAL region
    CREATE_BUCKET = 2
    DELETE_BUCKET = 3
    SET_BUCKET_VERSIONING = 4
    PUT_VERSION = 5
    DELETE_OBJECT = 6
    RENAME_KEY = 7
    RENAME_PREFIX = 8
    WRITE_AT = 9
    TRUNCATE = 10
    SET_ATTRIBUTES = 11
    SET_BUCKET_SETTING = 12
    LINK_KEY = 13
    EXCHANGE = 14
    MOVE_SEGMENT = 15
    PUT_VERSION_IF = 16  # a PUT_VERSION with conditions (If-Match ETags, shared
    # segments): a decoder that ignored them would apply a put its writer saw refused


@dataclass(frozen=True, slots=True)
class Wrap:
    pass


@dataclass(frozen=True, slots=True)
class CreateBucket:
    name: BucketName
    owner: str
    created_ns: int


@dataclass(frozen=True, slots=True)
class DeleteBucket:
    name: BucketName


@dataclass(frozen=True, slots=True)
class SetBucketVersioning:
    name: BucketName
    versioning: Versioning


@dataclass(frozen=True, slots=True)
class SetBucketSetting:
    """Set (or, with None, remove) one named setting of a bucket."""

    name: BucketName
    setting: str
    value: bytes | None


@dataclass(frozen=True, slots=True)
class PutVersion:
    """Install a version of a key: a new object, an overwrite, or a copy.

    A version with id "null" replaces the key's null version; any other id is
    added as the newest. With `if_none_match` the put fails if the key has a
    current (non-delete-marker) version (O_EXCL, If-None-Match: *). With
    `if_match` it fails unless the current version's ETag is one of these ("*":
    any current version; If-Match). `shared` names the segments the version
    shares by reference with others (a copy, a Complete): it fails (NoSuchKey)
    unless each is still referenced, for a source deleted before the record
    applied has had its space freed, on some cluster nodes perhaps reused.
    """

    bucket: BucketName
    key: ObjectKey
    version: ObjectVersion
    if_none_match: bool = False
    if_match: tuple[str, ...] | None = None
    shared: tuple[SegmentId, ...] = ()


@dataclass(frozen=True, slots=True)
class DeleteObject:
    """Remove `version_id`, or (when None) the current version.

    When `marker` is set the current version is not removed: the marker becomes
    the newest version (versioned buckets); a "null" marker replaces the null version.
    """

    bucket: BucketName
    key: ObjectKey
    version_id: VersionId | None
    marker: ObjectVersion | None
    time_ns: int = 0  # when (for directory times, index.py); 0 in records written before


@dataclass(frozen=True, slots=True)
class RenameKey:
    """Move every version of `source_key` to `target_key` (replacing it unless `no_replace`)."""

    bucket: BucketName
    source_key: ObjectKey
    target_key: ObjectKey
    no_replace: bool = False
    time_ns: int = 0


@dataclass(frozen=True, slots=True)
class RenamePrefix:
    """Move every key under `source_prefix` to `target_prefix` in one step.

    The target must hold no key under it except, at most, the marker key equal to
    `target_prefix` itself (an empty directory), which is replaced.
    """

    bucket: BucketName
    source_prefix: str
    target_prefix: str
    time_ns: int = 0


@dataclass(frozen=True, slots=True)
class WriteAt:
    """Splice new pieces into the current version of a key (a write in place).

    `pieces` are in object coordinates; they replace whatever covered their
    ranges. The size grows to `max(size, end of the last piece)`. The ETag becomes
    unknown (None) until someone sets it.
    """

    bucket: BucketName
    key: ObjectKey
    pieces: tuple[Piece, ...]
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class Truncate:
    bucket: BucketName
    key: ObjectKey
    size_bytes: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class SetAttributes:
    """Change metadata of the current version in place; None leaves a field as it is."""

    bucket: BucketName
    key: ObjectKey
    posix: PosixAttrs | None = None
    metadata: tuple[tuple[str, str], ...] | None = None
    content_type: str | None = None
    mtime_ns: int | None = None
    etag: str | None = None
    # Applied only if the current version's mtime is still this (PreconditionFailed
    # if not): a face that read the bytes to set their ETag must not set it on newer ones.
    if_mtime_ns: int | None = None


@dataclass(frozen=True, slots=True)
class LinkKey:
    """Make `target_key` a hard link of `source_key`: one more name of the same
    bytes and attributes (links.py). The target must have no current version;
    `version_id` is the id its version gets."""

    bucket: BucketName
    source_key: ObjectKey
    target_key: ObjectKey
    version_id: VersionId
    time_ns: int = 0


@dataclass(frozen=True, slots=True)
class Exchange:
    """Swap two names in one step (RENAME_EXCHANGE): each a key (a file) or a
    prefix ending in "/" (a directory, with every key under it); a file and a
    directory may swap. Both must exist, and neither may hold the other."""

    bucket: BucketName
    first: str
    second: str
    time_ns: int


@dataclass(frozen=True, slots=True)
class MoveSegment:
    """The bytes of segment `segment_id` are now stored as `storage` (written
    before the record, like a new segment's): every version that reads the
    segment reads the new fragments, and the old ones are freed. The segment
    keeps its id (`storage.origin`). Fails if nothing references the segment any
    more (then the new fragments are freed) or if the sizes differ. A cluster
    uses it to move fragments off a node that leaves (docs/cluster.md)."""

    segment_id: int
    storage: Segment


Record = (
    Wrap
    | CreateBucket
    | DeleteBucket
    | SetBucketVersioning
    | SetBucketSetting
    | PutVersion
    | DeleteObject
    | RenameKey
    | RenamePrefix
    | WriteAt
    | Truncate
    | SetAttributes
    | LinkKey
    | Exchange
    | MoveSegment
)


def new_segments(record: Record) -> list[Segment]:
    """The segments a record puts into the index (a new version, a write in place)."""
    if isinstance(record, PutVersion):
        pieces: tuple[Piece, ...] = record.version.pieces
    elif isinstance(record, WriteAt):
        pieces = record.pieces
    elif isinstance(record, MoveSegment):
        return [record.storage]
    else:
        return []
    return [piece.source for piece in pieces if isinstance(piece.source, Segment)]


def change_of(record: Record) -> Change | None:
    """What a face needs to know of an applied record (None: nothing a face shows)."""
    match record:
        case CreateBucket(name) | DeleteBucket(name):
            return Change(name)
        case SetBucketVersioning(name) | SetBucketSetting(name):
            return Change(name)
        case PutVersion(bucket, key) | DeleteObject(bucket, key):
            return Change(bucket, (key,))
        case WriteAt(bucket, key) | Truncate(bucket, key) | SetAttributes(bucket, key):
            return Change(bucket, (key,))
        case RenameKey(bucket, source, target) | LinkKey(bucket, source, target):
            return Change(bucket, (source, target))
        case RenamePrefix(bucket, source, target):
            return Change(bucket, (), (source, target))
        case Exchange(bucket, first, second):
            names = (first, second, first.rstrip("/"), second.rstrip("/"))
            return Change(bucket, names, tuple(n.rstrip("/") + "/" for n in (first, second)))
    return None


# -- value encodings (shared with checkpoints) --------------------------------------
# A segment: [size, [[device, offset, length, fragment_size, crc32c], ...]]
#            + [data_fragments, scheme] when it is erasure-coded (k > 1) or moved
#            + [origin] when it was moved (its segment id)
# A piece:   [offset, length, source_offset, source] with source = bytes | segment
# A version: [version_id, size, mtime_ns, etag, content_type, metadata, checksums,
#             posix | nil, delete_marker, [piece, ...]]
# posix:     [mode, uid, gid, rdev, atime_ns, ctime_ns] + [mtime_ns] when set apart


def encode_segment(segment: Segment) -> list[Any]:
    encoded = [
        segment.size_bytes,
        [
            [
                f.extent.device_index,
                f.extent.offset_bytes,
                f.extent.length_bytes,
                f.size_bytes,
                f.crc32c,
            ]
            for f in segment.fragments
        ],
    ]
    if segment.data_fragments != 1 or segment.scheme != 0 or segment.origin >= 0:
        encoded += [segment.data_fragments, segment.scheme]
    if segment.origin >= 0:
        encoded.append(segment.origin)
    return encoded


def decode_segment(raw: list[Any]) -> Segment:
    # Positional arguments and list comprehensions: this runs once per stored
    # segment at every recovery, and keywords and generators cost a third more.
    fragments = tuple([Fragment(Extent(f[0], f[1], f[2]), f[3], f[4]) for f in raw[1]])
    if len(raw) == 2:
        return Segment(raw[0], fragments)
    if len(raw) == 4:
        return Segment(raw[0], fragments, raw[2], raw[3])
    return Segment(raw[0], fragments, raw[2], raw[3], raw[4])


def encode_piece(piece: Piece) -> list[Any]:
    source = piece.source if isinstance(piece.source, bytes) else encode_segment(piece.source)
    return [piece.offset_bytes, piece.length_bytes, piece.source_offset_bytes, source]


def decode_piece(raw: list[Any]) -> Piece:
    source = raw[3] if isinstance(raw[3], bytes) else decode_segment(raw[3])
    return Piece(raw[0], raw[1], source, raw[2])


def encode_posix(posix: PosixAttrs | None) -> list[int] | None:
    if posix is None:
        return None
    fields = [posix.mode, posix.uid, posix.gid, posix.rdev, posix.atime_ns, posix.ctime_ns]
    return fields if posix.mtime_ns is None else [*fields, posix.mtime_ns]


def decode_posix(raw: list[int] | None) -> PosixAttrs | None:
    return None if raw is None else PosixAttrs(*raw)


def _pairs(raw: list[list[str]]) -> tuple[tuple[str, str], ...]:
    if not raw:
        return ()  # the common case, and the one shared empty tuple
    return tuple([(sys.intern(name), value) for name, value in raw])


def encode_version(version: ObjectVersion) -> list[Any]:
    return [
        version.version_id,
        version.size_bytes,
        version.mtime_ns,
        version.etag,
        version.content_type,
        [list(pair) for pair in version.metadata],
        [list(pair) for pair in version.checksums],
        encode_posix(version.posix),
        version.delete_marker,
        [encode_piece(piece) for piece in version.pieces],
    ]


def decode_version(raw: list[Any], *, pieces: bool = True) -> ObjectVersion:
    """A version from its record encoding; without `pieces` its piece list is left
    empty (listings need the rest only, and a file written in place has thousands)."""
    # Version ids ("null" mostly) and content types repeat across millions of
    # versions: interned, they are one string each instead of one per version.
    return ObjectVersion(
        VersionId(sys.intern(raw[0])),
        raw[1],
        raw[2],
        raw[3],
        sys.intern(raw[4]),
        _pairs(raw[5]),
        _pairs(raw[6]),
        None if raw[7] is None else PosixAttrs(*raw[7]),
        tuple([decode_piece(piece) for piece in raw[9]]) if pieces else (),
        raw[8],
    )


def _optional_pairs(raw: list[list[str]] | None) -> tuple[tuple[str, str], ...] | None:
    return None if raw is None else _pairs(raw)


def _fields(record: Record) -> list[Any]:
    match record:
        case Wrap():
            return []
        case CreateBucket(name, owner, created_ns):
            return [name, owner, created_ns]
        case DeleteBucket(name):
            return [name]
        case SetBucketVersioning(name, versioning):
            return [name, versioning.value]
        case SetBucketSetting(name, setting, value):
            return [name, setting, value]
        case PutVersion(bucket, key, version, if_none_match, if_match, shared):
            fields = [bucket, key, encode_version(version), if_none_match]
            if if_match is None and not shared:
                return fields
            return [*fields, None if if_match is None else list(if_match), list(shared)]
        case DeleteObject(bucket, key, version_id, marker, time_ns):
            marker_fields = None if marker is None else encode_version(marker)
            return [bucket, key, version_id, marker_fields, time_ns]
        case RenameKey(bucket, source_key, target_key, no_replace, time_ns):
            return [bucket, source_key, target_key, no_replace, time_ns]
        case RenamePrefix(bucket, source_prefix, target_prefix, time_ns):
            return [bucket, source_prefix, target_prefix, time_ns]
        case WriteAt(bucket, key, pieces, mtime_ns):
            return [bucket, key, [encode_piece(piece) for piece in pieces], mtime_ns]
        case Truncate(bucket, key, size_bytes, mtime_ns):
            return [bucket, key, size_bytes, mtime_ns]
        case SetAttributes(bucket, key, posix, metadata, content_type, mtime_ns, etag, if_mtime):
            return [
                bucket,
                key,
                encode_posix(posix),
                None if metadata is None else [list(pair) for pair in metadata],
                content_type,
                mtime_ns,
                etag,
                if_mtime,
            ]
        case LinkKey(bucket, source_key, target_key, version_id, time_ns):
            return [bucket, source_key, target_key, version_id, time_ns]
        case Exchange(bucket, first, second, time_ns):
            return [bucket, first, second, time_ns]
        case MoveSegment(segment_id, storage):
            return [segment_id, encode_segment(storage)]
    raise AssertionError(f"unknown record {record!r}")


_TYPES: Final[dict[type, RecordType]] = {
    Wrap: RecordType.WRAP,
    CreateBucket: RecordType.CREATE_BUCKET,
    DeleteBucket: RecordType.DELETE_BUCKET,
    SetBucketVersioning: RecordType.SET_BUCKET_VERSIONING,
    SetBucketSetting: RecordType.SET_BUCKET_SETTING,
    PutVersion: RecordType.PUT_VERSION,
    DeleteObject: RecordType.DELETE_OBJECT,
    RenameKey: RecordType.RENAME_KEY,
    RenamePrefix: RecordType.RENAME_PREFIX,
    WriteAt: RecordType.WRITE_AT,
    Truncate: RecordType.TRUNCATE,
    SetAttributes: RecordType.SET_ATTRIBUTES,
    LinkKey: RecordType.LINK_KEY,
    Exchange: RecordType.EXCHANGE,
    MoveSegment: RecordType.MOVE_SEGMENT,
}


def encode_record(record: Record) -> tuple[RecordType, bytes]:
    """The record's type and msgpack payload."""
    record_type = _TYPES[type(record)]
    if isinstance(record, PutVersion) and (record.if_match is not None or record.shared):
        record_type = RecordType.PUT_VERSION_IF
    return record_type, msgpack.packb(_fields(record), use_bin_type=True)


def _build(record_type: RecordType, f: list[Any]) -> Record:
    match record_type:
        case RecordType.WRAP:
            return Wrap()
        case RecordType.CREATE_BUCKET:
            return CreateBucket(BucketName(f[0]), f[1], f[2])
        case RecordType.DELETE_BUCKET:
            return DeleteBucket(BucketName(f[0]))
        case RecordType.SET_BUCKET_VERSIONING:
            return SetBucketVersioning(BucketName(f[0]), Versioning(f[1]))
        case RecordType.SET_BUCKET_SETTING:
            return SetBucketSetting(BucketName(f[0]), f[1], f[2])
        case RecordType.PUT_VERSION:
            return PutVersion(BucketName(f[0]), ObjectKey(f[1]), decode_version(f[2]), f[3])
        case RecordType.PUT_VERSION_IF:
            if_match = None if f[4] is None else tuple(f[4])
            return PutVersion(
                BucketName(f[0]), ObjectKey(f[1]), decode_version(f[2]), f[3], if_match, tuple(f[5])
            )
        case RecordType.DELETE_OBJECT:
            marker = None if f[3] is None else decode_version(f[3])
            version_id = None if f[2] is None else VersionId(f[2])
            return DeleteObject(BucketName(f[0]), ObjectKey(f[1]), version_id, marker, _at(f, 4))
        case RecordType.RENAME_KEY:
            return RenameKey(BucketName(f[0]), ObjectKey(f[1]), ObjectKey(f[2]), f[3], _at(f, 4))
        case RecordType.RENAME_PREFIX:
            return RenamePrefix(BucketName(f[0]), f[1], f[2], _at(f, 3))
        case RecordType.WRITE_AT:
            pieces = tuple(decode_piece(piece) for piece in f[2])
            return WriteAt(BucketName(f[0]), ObjectKey(f[1]), pieces, f[3])
        case RecordType.TRUNCATE:
            return Truncate(BucketName(f[0]), ObjectKey(f[1]), f[2], f[3])
        case RecordType.SET_ATTRIBUTES:
            return SetAttributes(
                BucketName(f[0]),
                ObjectKey(f[1]),
                decode_posix(f[2]),
                _optional_pairs(f[3]),
                f[4],
                f[5],
                f[6],
                f[7] if len(f) > 7 else None,  # added after the first layout: optional
            )
        case RecordType.LINK_KEY:
            return LinkKey(
                BucketName(f[0]), ObjectKey(f[1]), ObjectKey(f[2]), VersionId(f[3]), _at(f, 4)
            )
        case RecordType.EXCHANGE:
            return Exchange(BucketName(f[0]), f[1], f[2], f[3])
        case RecordType.MOVE_SEGMENT:
            return MoveSegment(f[0], decode_segment(f[1]))
    raise AssertionError(record_type)


def _at(fields: list[Any], position: int) -> Any:
    """A field appended to a layout after it was first written: 0 when absent."""
    return fields[position] if len(fields) > position else 0


def decode_record(record_type: int, payload: bytes) -> Record:
    """Decode a payload whose frame checksum already matched.

    Raises:
        Corrupted: an unknown type or a payload that does not fit its type (a
            record written by a newer objfs, or a bug).
    """
    try:
        kind = RecordType(record_type)
        return _build(kind, msgpack.unpackb(payload, raw=False, use_list=True))
    except DECODE_ERRORS as exc:
        raise Corrupted(f"record of type {record_type} cannot be decoded: {exc}") from exc
