"""Records and on-disk headers round-trip exactly; damage is detected, not misread.

Method: encode/decode every record type with awkward values; flip bytes in
superblocks and checkpoint pointers and check they are refused.
"""

from __future__ import annotations

import dataclasses
import uuid

import msgpack
import pytest

from objfs.errors import Corrupted, DeviceError, NoSuchKey
from objfs.store.checkpoint import CheckpointPointer, decode_body, decode_pointer, encode_body
from objfs.store.index import ObjectIndex
from objfs.store.records import (
    CreateBucket,
    DeleteBucket,
    DeleteObject,
    MoveSegment,
    PutVersion,
    Record,
    RecordType,
    RenameKey,
    RenamePrefix,
    SetAttributes,
    SetBucketVersioning,
    Truncate,
    Wrap,
    WriteAt,
    decode_record,
    encode_record,
)
from objfs.store.superblock import (
    SUPERBLOCK_BYTES,
    NotASuperblock,
    Superblock,
    decode_superblock,
    plan_layout,
)
from objfs.store.types import (
    BucketName,
    Extent,
    Fragment,
    GiB,
    MiB,
    ObjectKey,
    ObjectVersion,
    Piece,
    PosixAttrs,
    Segment,
    VersionId,
    Versioning,
)

SEGMENT = Segment(5000, (Fragment(Extent(1, 1 << 40, 8192), 5000, 0xFFFFFFFF),))
VERSION = ObjectVersion(
    version_id=VersionId("0001abc"),
    size_bytes=10_000,
    mtime_ns=2**62,
    etag=None,
    content_type="text/plain; charset=ü",
    metadata=(("a", "1"), ("ß", "\u2603")),
    checksums=(("crc32c", "AAAAAA=="),),
    posix=PosixAttrs(0o100644, 1000, 1000, 0, 1, 2),
    pieces=(Piece(0, 5, b"\x00\xffabc"), Piece(100, 4000, SEGMENT, 1000)),
)
B, K = BucketName("bucket"), ObjectKey("dir/ключ")

ALL_RECORDS: list[Record] = [
    Wrap(),
    CreateBucket(B, "owner", 123),
    DeleteBucket(B),
    SetBucketVersioning(B, Versioning.SUSPENDED),
    PutVersion(B, K, VERSION, True),
    PutVersion(B, K, VERSION, False, ("*", "abc-2")),
    PutVersion(B, K, VERSION, True, None, (SEGMENT.segment_id, 7)),
    DeleteObject(B, K, VersionId("v1"), None),
    DeleteObject(B, K, None, dataclasses.replace(VERSION, delete_marker=True, pieces=())),
    RenameKey(B, K, ObjectKey("other"), True),
    RenamePrefix(B, "a/", "b/"),
    WriteAt(B, K, VERSION.pieces, 77),
    Truncate(B, K, 0, 78),
    SetAttributes(B, K, posix=VERSION.posix, metadata=(), etag="e"),
    SetAttributes(B, K),
    MoveSegment(SEGMENT.segment_id, dataclasses.replace(SEGMENT, origin=SEGMENT.segment_id)),
]


@pytest.mark.parametrize("record", ALL_RECORDS, ids=lambda r: type(r).__name__)
def test_every_record_type_round_trips(record: Record) -> None:
    record_type, payload = encode_record(record)
    assert decode_record(record_type, payload) == record


def test_a_put_version_with_conditions_has_a_type_of_its_own() -> None:
    """An objfs that knows only PUT_VERSION refuses it (Corrupted), rather than
    dropping the conditions and applying a put its writer saw refused."""
    assert encode_record(PutVersion(B, K, VERSION, True))[0] == RecordType.PUT_VERSION
    unconditional = msgpack.unpackb(encode_record(PutVersion(B, K, VERSION))[1])
    for record in [
        PutVersion(B, K, VERSION, if_match=("e",)),
        PutVersion(B, K, VERSION, shared=(1,)),
    ]:
        record_type, payload = encode_record(record)
        assert record_type == RecordType.PUT_VERSION_IF
        assert msgpack.unpackb(payload)[:4] == unconditional


def test_a_copy_whose_source_was_deleted_before_it_landed_is_refused() -> None:
    """In a cluster a delete frees a segment's fragments on every node as it
    applies, and they may be written over at once: a copy by reference (or a
    multipart Complete) committed after it must not name them again."""
    index = ObjectIndex()
    index.apply(CreateBucket(B, "o", 1))
    index.apply(PutVersion(B, K, VERSION))
    copy = PutVersion(B, ObjectKey("copy"), VERSION, shared=(SEGMENT.segment_id,))
    freed = index.apply(DeleteObject(B, K, VERSION.version_id, None))
    assert [s.segment_id for s in freed] == [SEGMENT.segment_id]
    with pytest.raises(NoSuchKey):
        index.apply(copy)
    assert index.versions(B, ObjectKey("copy")) == () and index.references(SEGMENT.segment_id) == 0
    index.apply(PutVersion(B, K, VERSION))  # while it is referenced, the copy lands
    index.apply(copy)
    assert index.references(SEGMENT.segment_id) == 2


def test_unknown_record_type_is_corrupted_not_a_crash() -> None:
    with pytest.raises(Corrupted):
        decode_record(250, b"\x90")
    with pytest.raises(Corrupted):
        decode_record(5, b"\x91\x01")  # a PUT_VERSION payload of the wrong shape


def superblock() -> Superblock:
    wal_offset, wal_size, data_offset, data_size = plan_layout(2 * GiB)
    return Superblock(
        cluster_id=uuid.uuid4(),
        node_id=uuid.uuid4(),
        device_id=uuid.uuid4(),
        device_index=2,
        device_count=3,
        metadata_copies=3,
        device_size_bytes=2 * GiB,
        wal_offset_bytes=wal_offset,
        wal_size_bytes=wal_size,
        data_offset_bytes=data_offset,
        data_size_bytes=data_size,
        created_ns=42,
        data_sizes=(data_size, data_size + 4 * MiB, data_size),
        owed_devices=0b101,
    )


def test_plan_layout_of_a_2_gib_device() -> None:
    assert plan_layout(2 * GiB) == (1 * MiB, 64 * MiB, 65 * MiB, 2 * GiB - 65 * MiB)


def test_superblock_round_trips_and_any_flipped_byte_is_refused() -> None:
    sb = superblock()
    block = sb.encode()
    assert decode_superblock(block, path="d") == sb
    covered = SUPERBLOCK_BYTES + 8 * sb.device_count  # the device table too
    for position in range(covered):  # every byte the checksum covers, and itself
        damaged = bytearray(block)
        damaged[position] ^= 0x40
        with pytest.raises((NotASuperblock, DeviceError)):
            decode_superblock(bytes(damaged), path="d")


def test_newer_format_version_is_refused_with_a_message_naming_it() -> None:
    block = dataclasses.replace(superblock(), format_version=99).encode()
    with pytest.raises(DeviceError, match="version 99"):
        decode_superblock(block, path="/dev/x")


def test_checkpoint_pointer_round_trips_and_damage_reads_as_blank() -> None:
    pointer = CheckpointPointer(
        slot=1,
        generation=7,
        lsn=99,
        wal_start=12345,
        body_bytes=10,
        body_crc32c=3,
        copies=((Extent(0, 4096, 8192), Extent(0, 65536, 4096)), (Extent(1, 4096, 12288),)),
    )
    block = pointer.encode()
    assert decode_pointer(block) == pointer
    damaged = bytearray(block)
    damaged[30] ^= 1
    assert decode_pointer(bytes(damaged)) is None
    assert decode_pointer(bytes(4096)) is None


def test_checkpoint_body_round_trips_an_index() -> None:
    index = ObjectIndex()
    index.apply(CreateBucket(B, "o", 1))
    index.apply(PutVersion(B, K, VERSION))
    lsn, snapshot = decode_body(encode_body(index.snapshot(), 5))
    assert lsn == 5
    restored = ObjectIndex.from_snapshot(snapshot)
    assert restored.current(B, K) == VERSION
    assert restored.references(SEGMENT.segment_id) == 1


def test_checkpoint_body_keeps_where_moved_segments_are() -> None:
    """A moved segment's new storage survives a checkpoint: versions still name
    the old one, and the restored index gives the new one, under the same id."""
    index = ObjectIndex()
    index.apply(CreateBucket(B, "o", 1))
    index.apply(PutVersion(B, K, VERSION))
    storage = Segment(5000, (Fragment(Extent(2, 1 << 20, 8192), 5000, 7),))
    freed = index.apply(MoveSegment(SEGMENT.segment_id, storage))
    # The old extent goes back but for its first block, which stays the id's.
    assert [f.extent for s in freed for f in s.fragments] == [Extent(1, (1 << 40) + 4096, 4096)]
    assert [s.segment_id for s in freed] == [SEGMENT.segment_id]
    _, snapshot = decode_body(encode_body(index.snapshot(), 9))
    restored = ObjectIndex.from_snapshot(snapshot)
    moved = restored.current(B, K).pieces[1].source
    assert isinstance(moved, Segment)
    assert moved.fragments == storage.fragments and moved.segment_id == SEGMENT.segment_id
    assert sorted(restored.referenced_extents(), key=lambda e: e.device_index) == [
        Extent(1, 1 << 40, 4096),
        Extent(2, 1 << 20, 8192),
    ]
    [dropped] = restored.apply(DeleteObject(B, K, VERSION.version_id, None))
    assert {f.extent for f in dropped.fragments} == {
        Extent(1, 1 << 40, 4096),
        Extent(2, 1 << 20, 8192),
    }
    assert list(restored.referenced_extents()) == []
    assert restored.moved_count() == 0
