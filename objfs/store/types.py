"""objfs.store.types — the frozen value types of the core.

Everything here is plain immutable data: what the index holds, what records carry
and what the Store API returns. No I/O, no behaviour beyond small derived
properties. See docs/glossary.md for the words (extent, segment, fragment, piece).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NewType

BucketName = NewType("BucketName", str)
ObjectKey = NewType("ObjectKey", str)
VersionId = NewType("VersionId", str)
Lsn = NewType("Lsn", int)  # WAL sequence number
SegmentId = int  # Segment.segment_id: device index << 48 | offset of its first fragment as written

# Device indexes are cluster-wide (docs/cluster.md): every node applies every
# record, so the index an Extent names must mean one device everywhere. A device's
# index is node_number * DEVICES_PER_NODE + its local index (0 .. device_count-1).
# A single node is node 0, so its indexes are its local ones: stores formatted
# before clusters existed are node 0 and read unchanged.
DEVICES_PER_NODE = 256
MAX_NODE_NUMBER = 255


def global_device_index(node_number: int, local_index: int) -> int:
    """The cluster-wide index of device `local_index` of node `node_number`."""
    assert 0 <= node_number <= MAX_NODE_NUMBER and 0 <= local_index < DEVICES_PER_NODE
    return node_number * DEVICES_PER_NODE + local_index


def local_device_index(device_index: int) -> int:
    """The device's index within its node: what positional encodings use (the
    superblock's device table and owed mask, holds_metadata, devN.img)."""
    return device_index % DEVICES_PER_NODE


def device_node_number(device_index: int) -> int:
    """The number of the node that holds the device."""
    return device_index // DEVICES_PER_NODE


def device_mask(device_indexes: Iterable[int]) -> int:
    """The devices as a superblock's owed mask: bit i for local index i."""
    mask = 0
    for index in device_indexes:
        mask |= 1 << local_device_index(index)
    return mask


def devices_in_mask(mask: int, device_indexes: Iterable[int]) -> set[int]:
    """Those of `device_indexes` (one node's) whose bit is set in `mask`."""
    return {i for i in device_indexes if mask >> local_device_index(i) & 1}


KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
BLOCK_SIZE_BYTES = 4 * KiB  # the unit of every device I/O and allocation

NULL_VERSION = VersionId("null")  # the version of a key written while versioning was never on


class Versioning(enum.Enum):
    """A bucket's versioning state (S3: unset, Enabled, Suspended)."""

    DISABLED = 0
    ENABLED = 1
    SUSPENDED = 2


@dataclass(frozen=True, slots=True)
class Extent:
    """A run of blocks on one device: where bytes live."""

    device_index: int
    offset_bytes: int
    length_bytes: int

    @property
    def end_bytes(self) -> int:
        return self.offset_bytes + self.length_bytes


@dataclass(frozen=True, slots=True)
class Fragment:
    """One stored fragment of a segment: its extent and the CRC32C of its bytes.

    `size_bytes` is how many bytes at the start of the extent are the fragment;
    the rest of the extent (up to the next block) is padding.
    """

    extent: Extent
    size_bytes: int
    crc32c: int


@dataclass(frozen=True, slots=True)
class Segment:
    """Bytes written once and never changed: the unit of storage and of sharing.

    A segment is one stripe: `data_fragments` (k) data fragments and the rest
    parity, each on its own device, stored with `scheme` (objfs/store/erasure.py);
    any k intact fragments give back its bytes. With k = 1 every fragment is a
    whole copy (one fragment: no redundancy). A segment is identified by the
    extent of its first fragment as first written (extents are never used twice
    while referenced). A segment moved to other extents (`MoveSegment`, a cluster
    node leaving) keeps that identity in `origin`, and the first block of its
    first extent stays reserved while it is referenced, so no other segment can
    be given the same id.
    """

    size_bytes: int
    fragments: tuple[Fragment, ...]
    data_fragments: int = 1
    scheme: int = 0  # erasure.SCHEME_*; 0: whole copies
    origin: int = -1  # the segment id of a moved segment; -1: its first fragment's

    @property
    def segment_id(self) -> int:
        """Device index and offset of the first fragment in one int (offsets < 2**48):
        an int key costs half a tuple key, and the index holds one per segment."""
        if self.origin >= 0:
            return self.origin
        first = self.fragments[0].extent
        return (first.device_index << 48) | first.offset_bytes


@dataclass(frozen=True, slots=True)
class Piece:
    """A logical byte range of an object, taken from a range of a source.

    The source is a stored `Segment` or inline `bytes` (small objects live in
    their WAL record). Bytes of an object that no piece covers read as zeros.

    Example: piece(offset_bytes=4096, length_bytes=100, source_offset_bytes=10)
    serves object bytes [4096, 4196) from source bytes [10, 110).
    """

    offset_bytes: int
    length_bytes: int
    source: Segment | bytes
    source_offset_bytes: int = 0

    @property
    def end_bytes(self) -> int:
        return self.offset_bytes + self.length_bytes


UNSET_MODE = 0  # PosixAttrs.mode not set (a set mode always has permission or type bits)
UNSET_ID = -1  # PosixAttrs.uid / gid not set


@dataclass(frozen=True, slots=True)
class PosixAttrs:
    """POSIX attributes of an object written through the mount, or given with it
    over S3 (s3fs's and rclone's x-amz-meta-mode/-uid/-gid/-mtime); None when
    never set. A mode of UNSET_MODE or an id of UNSET_ID is not set: the mount
    shows its own default (an S3 client sent an mtime and no mode)."""

    mode: int
    uid: int
    gid: int
    rdev: int = 0
    atime_ns: int = 0
    ctime_ns: int = 0
    # A modification time set apart from the version's (utimens, an s3fs mtime);
    # None: the version's mtime is the file's. Any write of the bytes ends it.
    mtime_ns: int | None = None


@dataclass(frozen=True, slots=True)
class ObjectVersion:
    """One version of one key: metadata and the pieces that make its bytes."""

    version_id: VersionId
    size_bytes: int
    mtime_ns: int
    etag: str | None  # hex MD5 for single writes; None when not (yet) known
    content_type: str = "application/octet-stream"
    metadata: tuple[tuple[str, str], ...] = ()  # user metadata, sorted by name
    checksums: tuple[tuple[str, str], ...] = ()  # e.g. ("crc32c", base64) as sent by S3 clients
    posix: PosixAttrs | None = None
    pieces: tuple[Piece, ...] = ()
    delete_marker: bool = False


@dataclass(frozen=True, slots=True)
class ComposeSource:
    """A byte range of a version of a key, for `Store.compose_object`."""

    bucket: str
    key: str
    version_id: str | None = None  # None: the current version
    offset_bytes: int = 0
    length_bytes: int | None = None  # None: to the end


@dataclass(frozen=True, slots=True)
class BucketInfo:
    name: BucketName
    owner: str
    created_ns: int
    versioning: Versioning = Versioning.DISABLED
    # Settings a face keeps for the bucket as opaque bytes by name (the S3 face:
    # "acl", "tagging", "cors"), sorted by name.
    settings: tuple[tuple[str, bytes], ...] = ()

    def setting(self, name: str) -> bytes | None:
        return dict(self.settings).get(name)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What head/list return about the current (or a named) version of a key."""

    bucket: BucketName
    key: ObjectKey
    version_id: VersionId
    size_bytes: int
    mtime_ns: int
    etag: str | None
    content_type: str
    metadata: tuple[tuple[str, str], ...]
    checksums: tuple[tuple[str, str], ...]
    posix: PosixAttrs | None
    is_latest: bool = True
    delete_marker: bool = False
    links: tuple[str, ...] = ()  # every key of its hard link group (store/links.py), or ()


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a listing: objects and common prefixes, both in key order."""

    objects: tuple[ObjectInfo, ...]
    common_prefixes: tuple[str, ...]
    is_truncated: bool
    next_start_after: str | None  # pass as start_after to get the next page


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """What a delete did: removed a version, or added a delete marker."""

    version_id: VersionId | None
    delete_marker: bool


@dataclass(frozen=True, slots=True)
class Change:
    """A committed change as a face sees it (`Store.watch`): which names of a bucket
    it touched. No keys and no prefixes: the bucket itself (created, deleted, a
    setting). A prefix stands for every key under it (a renamed directory)."""

    bucket: BucketName
    keys: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    buckets: int
    objects: int
    versions: int
    logical_bytes: int
    device_bytes: int
    free_bytes: int
    available_bytes: int  # of free_bytes, what new data may take (Space.available_bytes)
    wal_bytes_used: int
    wal_bytes_total: int
    last_lsn: int
    checkpoint_lsn: int
    devices: tuple[str, ...] = field(default=())


def object_info(
    bucket: str, key: str, version: ObjectVersion, *, is_latest: bool = True
) -> ObjectInfo:
    """What the faces see of one version of a key."""
    return ObjectInfo(
        bucket=BucketName(bucket),
        key=ObjectKey(key),
        version_id=version.version_id,
        size_bytes=version.size_bytes,
        mtime_ns=version.mtime_ns,
        etag=version.etag,
        content_type=version.content_type,
        metadata=version.metadata,
        checksums=version.checksums,
        posix=version.posix,
        is_latest=is_latest,
        delete_marker=version.delete_marker,
        links=_link_names(version.metadata),
    )


def _link_names(metadata: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    for name, value in metadata:
        if name == "l:links":  # store/links.py LINKS (which imports this module)
            return tuple(json.loads(value))
    return ()
