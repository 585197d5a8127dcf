"""The index's packed forms: versions and segments round-trip exactly, and the raw
scan used by recovery finds the same references and sizes as decoding does.

Method: pack awkward versions (inline, shared and multi-fragment segments, delete
markers, POSIX attributes) and compare.
"""

from __future__ import annotations

from objfs.store.index import version_segments
from objfs.store.packing import (
    pack_segment,
    pack_versions,
    scan_packed,
    segment_extents,
    unpack_segment,
    unpack_versions,
)
from objfs.store.types import (
    Extent,
    Fragment,
    ObjectVersion,
    Piece,
    PosixAttrs,
    Segment,
    VersionId,
)

SHARED = Segment(9000, (Fragment(Extent(2, 1 << 44, 12288), 9000, 0xFFFFFFFF),))
WIDE = Segment(
    100, (Fragment(Extent(0, 4096, 4096), 50, 1), Fragment(Extent(1, 8192, 4096), 50, 2))
)
VERSIONS = (
    ObjectVersion(
        VersionId("v2"),
        20_000,
        7,
        None,
        "text/x",
        (("a", "b"),),
        (),
        PosixAttrs(0o100600, 1, 2, 3, 4, 5),
        (Piece(0, 10, b"0123456789"), Piece(100, 9000, SHARED), Piece(19_000, 50, WIDE, 50)),
    ),
    ObjectVersion(VersionId("v1"), 0, 6, None, delete_marker=True),
    ObjectVersion(VersionId("null"), 9000, 5, "e", pieces=(Piece(0, 9000, SHARED),)),
)


def test_versions_round_trip() -> None:
    assert unpack_versions(pack_versions(VERSIONS)) == VERSIONS
    assert unpack_versions(pack_versions(())) == ()


def test_segments_round_trip_and_give_their_extents() -> None:
    for segment in (SHARED, WIDE):
        packed = pack_segment(segment)
        assert unpack_segment(packed) == segment
        assert list(segment_extents(packed)) == [f.extent for f in segment.fragments]


def test_raw_scan_finds_what_decoding_finds() -> None:
    count, logical, references = scan_packed(pack_versions(VERSIONS))
    assert count == 3
    assert logical == 20_000 + 0 + 9000
    expected = [s for v in VERSIONS for s in version_segments(v)]
    assert [segment_id for segment_id, _ in references] == [s.segment_id for s in expected]
    assert [unpack_segment(packed) for _, packed in references] == expected
