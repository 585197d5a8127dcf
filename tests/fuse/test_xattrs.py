"""Extended attributes through the mount: user.NAME is S3's x-amz-meta-NAME both
ways; other names and binary values round-trip and S3 does not show them."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest
from fuse_node import BUCKET, Mounted
from mount_helpers import ENOATTR, errno_of, key_of, prefix_of, s3_get, s3_objects, write_file


def user_xattrs(path: str) -> list[str]:
    return sorted(name for name in os.listxattr(path) if name.startswith("user."))


def test_set_get_list_remove(workdir: str) -> None:
    path = os.path.join(workdir, "f")
    write_file(path, b"content")
    assert user_xattrs(path) == []
    os.setxattr(path, "user.foo", b"bar")
    os.setxattr(path, "user.other", b"1")
    assert os.getxattr(path, "user.foo") == b"bar"
    assert user_xattrs(path) == ["user.foo", "user.other"]
    os.setxattr(path, "user.foo", b"changed")  # replace
    assert os.getxattr(path, "user.foo") == b"changed"
    os.removexattr(path, "user.foo")
    assert user_xattrs(path) == ["user.other"]
    assert errno_of(lambda: os.getxattr(path, "user.foo")) == ENOATTR
    assert errno_of(lambda: os.removexattr(path, "user.foo")) == ENOATTR
    assert errno_of(lambda: os.getxattr(path, "user.never")) == ENOATTR
    with open(path, "rb") as file:
        assert file.read() == b"content"


def test_user_xattr_is_s3_metadata(mounted: Mounted, workdir: str, s3: Any) -> None:
    path = os.path.join(workdir, "f.txt")
    write_file(path, b"tagged")
    head = s3.head_object(Bucket=BUCKET, Key=key_of(mounted, path))
    os.setxattr(path, "user.foo", b"bar")
    os.setxattr(path, "user.project-id", b"42 and some words")
    after = s3.head_object(Bucket=BUCKET, Key=key_of(mounted, path))
    assert after["Metadata"]["foo"] == "bar"
    assert after["Metadata"]["project-id"] == "42 and some words"
    assert (after["ETag"], after["ContentLength"]) == (head["ETag"], head["ContentLength"])
    os.removexattr(path, "user.foo")
    assert "foo" not in s3.head_object(Bucket=BUCKET, Key=key_of(mounted, path))["Metadata"]


def test_s3_metadata_is_user_xattrs(mounted: Mounted, workdir: str, s3: Any) -> None:
    key = prefix_of(workdir) + "from-s3"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"b", Metadata={"color": "blue", "a-b": "c d"})
    path = os.path.join(workdir, "from-s3")
    assert user_xattrs(path) == ["user.a-b", "user.color"]
    assert os.getxattr(path, "user.color") == b"blue"
    assert os.getxattr(path, "user.a-b") == b"c d"
    # S3 replaces the metadata (copy onto itself): the mount sees the new set at once
    s3.copy_object(
        Bucket=BUCKET,
        Key=key,
        CopySource={"Bucket": BUCKET, "Key": key},
        Metadata={"color": "red"},
        MetadataDirective="REPLACE",
    )
    assert user_xattrs(path) == ["user.color"]
    assert os.getxattr(path, "user.color") == b"red"
    # a mount-side change keeps the rest of the S3 metadata
    os.setxattr(path, "user.size", b"large")
    metadata = s3.head_object(Bucket=BUCKET, Key=key)["Metadata"]
    assert (metadata["color"], metadata["size"]) == ("red", "large")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("user.bin", bytes(range(256))),
        ("user.nul", b"\x00\x00a\x00"),
        ("user.empty", b""),
        ("user.utf8", "ünïcødé".encode()),
        ("user.MixedCase", b"S3 lower-cases names: kept aside"),
        ("user.big", os.urandom(16 * 1024)),
        ("trusted.root-only", b"\x01\x02"),
    ],
)
def test_values_and_names_round_trip(
    mounted: Mounted, workdir: str, s3: Any, name: str, value: bytes
) -> None:
    if name.startswith("trusted.") and os.geteuid() != 0:
        pytest.skip("trusted.* needs root")
    path = os.path.join(workdir, "f")
    write_file(path, b"x")
    os.setxattr(path, name, value)
    assert os.getxattr(path, name) == value
    assert name in os.listxattr(path)
    head = s3.head_object(Bucket=BUCKET, Key=key_of(mounted, path))  # still a valid HEAD
    assert head["ContentLength"] == 1
    if name == "user.empty":
        return  # an empty text value may show as empty metadata, or not at all
    assert name.removeprefix("user.").lower() not in head["Metadata"]  # not S3-safe text
    os.removexattr(path, name)
    assert name not in os.listxattr(path)


def test_xattrs_on_directories(mounted: Mounted, workdir: str, s3: Any) -> None:
    d = os.path.join(workdir, "d")
    os.mkdir(d)
    os.setxattr(d, "user.kind", b"folder")
    assert os.getxattr(d, "user.kind") == b"folder"
    marker = key_of(mounted, d) + "/"
    assert s3.head_object(Bucket=BUCKET, Key=marker)["Metadata"]["kind"] == "folder"
    # a directory S3 made by a prefix gets a marker to hold them
    s3.put_object(Bucket=BUCKET, Key=prefix_of(workdir) + "bare/k", Body=b"k")
    bare = os.path.join(workdir, "bare")
    os.setxattr(bare, "user.kind", b"bare")
    assert os.getxattr(bare, "user.kind") == b"bare"
    assert prefix_of(workdir) + "bare/" in s3_objects(s3, prefix_of(workdir))


def test_xattrs_survive_writes_and_renames(mounted: Mounted, workdir: str, s3: Any) -> None:
    path = os.path.join(workdir, "f")
    write_file(path, b"first")
    os.setxattr(path, "user.keep", b"me")
    os.setxattr(path, "user.bin", b"\xff\x00")
    with open(path, "r+b") as file:
        file.seek(2)
        file.write(b"ZZZZZZ")
    os.truncate(path, 4)
    os.rename(path, os.path.join(workdir, "g"))
    moved = os.path.join(workdir, "g")
    assert os.getxattr(moved, "user.keep") == b"me"
    assert os.getxattr(moved, "user.bin") == b"\xff\x00"
    d = os.path.join(workdir, "d")
    os.mkdir(d)
    os.setxattr(d, "user.dir", b"yes")
    os.rename(moved, os.path.join(d, "g"))
    os.rename(d, os.path.join(workdir, "e"))
    assert os.getxattr(os.path.join(workdir, "e"), "user.dir") == b"yes"
    assert os.getxattr(os.path.join(workdir, "e", "g"), "user.keep") == b"me"
    key = prefix_of(workdir) + "e/g"
    assert s3.head_object(Bucket=BUCKET, Key=key)["Metadata"]["keep"] == "me"
    assert s3_get(s3, key) == b"fiZZ"


def test_xattr_too_large(workdir: str) -> None:
    path = os.path.join(workdir, "f")
    write_file(path, b"x")
    too_big = b"v" * (64 * 1024 + 1)
    assert errno_of(lambda: os.setxattr(path, "user.big", too_big)) in (errno.E2BIG, errno.ERANGE)
    assert "user.big" not in os.listxattr(path)


def test_xattr_create_and_replace_flags(workdir: str) -> None:
    path = os.path.join(workdir, "f")
    write_file(path, b"x")
    os.setxattr(path, "user.a", b"1")
    assert errno_of(lambda: os.setxattr(path, "user.a", b"2", os.XATTR_CREATE)) == errno.EEXIST
    assert os.getxattr(path, "user.a") == b"1"
    missing = errno_of(lambda: os.setxattr(path, "user.b", b"2", os.XATTR_REPLACE))
    assert missing == ENOATTR
    assert "user.b" not in os.listxattr(path)
