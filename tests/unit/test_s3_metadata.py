"""s3fs's and rclone's attributes in user metadata (objfs.s3.metadata), both ways."""

from __future__ import annotations

import pytest

from objfs.s3.metadata import posix_from, posix_headers
from objfs.store import PosixAttrs
from objfs.store.types import (
    UNSET_ID,
    UNSET_MODE,
    BucketName,
    ObjectInfo,
    ObjectKey,
    VersionId,
)


def info(posix: PosixAttrs | None, metadata: dict[str, str] | None = None) -> ObjectInfo:
    return ObjectInfo(
        bucket=BucketName("b"),
        key=ObjectKey("k"),
        version_id=VersionId("null"),
        size_bytes=1,
        mtime_ns=1_700_000_000_000_000_000,
        etag="e",
        content_type="text/plain",
        metadata=tuple(sorted((metadata or {}).items())),
        checksums=(),
        posix=posix,
    )


@pytest.mark.parametrize(
    ("mtime", "ns", "shown"),
    [
        ("1600000000", 1_600_000_000 * 10**9, "1600000000"),
        ("1600000000.5", 1_600_000_000_500_000_000, "1600000000.5"),
        ("1600000000.123456789", 1_600_000_000_123_456_789, "1600000000.123456789"),
        ("1600000000.1234567891", 1_600_000_000_123_456_789, "1600000000.123456789"),  # cut
        ("1600000000.000", 1_600_000_000 * 10**9, "1600000000"),
    ],
)
def test_an_mtime_alone_is_taken_exactly_and_shown_back(mtime: str, ns: int, shown: str) -> None:
    kept, posix = posix_from({"mtime": mtime, "color": "blue"})
    assert kept == {"color": "blue"}
    assert posix is not None and posix.mtime_ns == ns
    assert (posix.mode, posix.uid, posix.gid) == (UNSET_MODE, UNSET_ID, UNSET_ID)
    assert posix_headers(info(posix, kept)) == {"x-amz-meta-mtime": shown}


@pytest.mark.parametrize(
    "metadata",
    [
        {"mtime": "soon"},
        {"mtime": "1e9"},
        {"mtime": "-5"},
        {"mtime": "1.2.3"},
        {"mtime": "1."},
        {"mode": "0", "mtime": "1"},
        {"mode": "rwx"},
        {"uid": str(1 << 32)},
        {"gid": "-2"},
        {"mtime": "9" * 30},
    ],
)
def test_values_that_are_not_attributes_stay_metadata(metadata: dict[str, str]) -> None:
    assert posix_from(dict(metadata)) == (metadata, None)


def test_attributes_not_given_are_the_bases() -> None:
    base = PosixAttrs(0o100600, 1000, 1001, 0, 5, 6, 7)
    kept, posix = posix_from({"mtime": "2", "x": "y"}, base)
    assert kept == {"x": "y"}
    assert posix == PosixAttrs(0o100600, 1000, 1001, 0, 5, 6, 2 * 10**9)
    assert posix_from({"x": "y"}, base) == ({"x": "y"}, base)


def test_s3fs_attributes_show_as_s3fs_writes_them() -> None:
    posix = PosixAttrs(0o100640, 1000, 1001, 0, 5, 6, None)
    assert posix_headers(info(posix)) == {
        "x-amz-meta-mode": str(0o100640),
        "x-amz-meta-uid": "1000",
        "x-amz-meta-gid": "1001",
        "x-amz-meta-mtime": "1700000000",  # the version's, when none was set apart
    }
    assert posix_headers(info(None)) == {}
