"""The mount and S3 show the same bytes, both ways (a first check; see the other modules)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from fuse_node import BUCKET, Mounted
from mount_helpers import prefix_of, read_file
from test_clients import Rclone
from test_multipart import upload_in_parts
from test_s3_hostile import assert_error, start_slow_put


def md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def test_file_written_in_mount_is_an_object(workdir: str, s3: Any) -> None:
    data = os.urandom(300_000)
    with open(os.path.join(workdir, "f.bin"), "wb") as file:
        file.write(data)
    key = os.path.basename(workdir) + "/f.bin"
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data


def test_object_put_over_s3_is_a_file(mounted: Mounted, workdir: str, s3: Any) -> None:
    key = os.path.basename(workdir) + "/from-s3.txt"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"one")
    path = os.path.join(mounted.mountpoint, key)
    with open(path, "rb") as file:
        assert file.read() == b"one"
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"two!")
        file.seek(0)
        assert file.read() == b"two!"  # an open file sees the S3 overwrite
    assert sorted(os.listdir(workdir)) == ["from-s3.txt"]
    s3.delete_object(Bucket=BUCKET, Key=key)
    assert not os.path.exists(path)


# -- S3 -> mount ---------------------------------------------------------------------


def test_s3_put_is_seen_at_once_despite_cached_lookups(
    mounted: Mounted, workdir: str, s3: Any
) -> None:
    """The kernel has just looked the name up (and found nothing) and listed the
    directory: an S3 PUT is still there the moment it returns."""
    path = os.path.join(workdir, "late.bin")
    assert not os.path.exists(path)  # a negative lookup the kernel could keep
    assert os.listdir(workdir) == []
    data = os.urandom(150_000)
    s3.put_object(Bucket=BUCKET, Key=prefix_of(workdir) + "late.bin", Body=data)
    assert os.stat(path).st_size == len(data)
    assert read_file(path) == data
    assert os.listdir(workdir) == ["late.bin"]


def test_s3_overwrite_changes_size_and_bytes_at_once(workdir: str, s3: Any) -> None:
    path = os.path.join(workdir, "changing")
    key = prefix_of(workdir) + "changing"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"short")
    assert read_file(path) == b"short"
    assert os.stat(path).st_size == 5
    bigger = os.urandom(300_000)
    s3.put_object(Bucket=BUCKET, Key=key, Body=bigger)
    assert os.stat(path).st_size == len(bigger)
    assert read_file(path) == bigger
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"")
    assert os.stat(path).st_size == 0
    assert read_file(path) == b""


def test_s3_copy_and_delete_are_seen_at_once(workdir: str, s3: Any) -> None:
    prefix = prefix_of(workdir)
    source, copy = os.path.join(workdir, "source"), os.path.join(workdir, "copy")
    s3.put_object(Bucket=BUCKET, Key=prefix + "source", Body=b"copied bytes")
    assert not os.path.exists(copy)
    s3.copy_object(Bucket=BUCKET, Key=prefix + "copy", CopySource=f"{BUCKET}/{prefix}source")
    assert read_file(copy) == b"copied bytes"
    assert sorted(os.listdir(workdir)) == ["copy", "source"]
    assert os.stat(source).st_ino != os.stat(copy).st_ino
    s3.delete_object(Bucket=BUCKET, Key=prefix + "copy")
    assert not os.path.exists(copy)
    assert os.listdir(workdir) == ["source"]
    s3.put_object(Bucket=BUCKET, Key=prefix + "sub/a", Body=b"a")
    s3.put_object(Bucket=BUCKET, Key=prefix + "sub/b", Body=b"b")
    assert sorted(os.listdir(os.path.join(workdir, "sub"))) == ["a", "b"]
    s3.delete_objects(
        Bucket=BUCKET,
        Delete={"Objects": [{"Key": prefix + "sub/a"}, {"Key": prefix + "sub/b"}]},
    )
    assert not os.path.exists(os.path.join(workdir, "sub"))
    assert os.listdir(workdir) == ["source"]


def test_s3_multipart_upload_reads_back_through_the_mount(workdir: str, s3: Any) -> None:
    key = prefix_of(workdir) + "multi.bin"
    parts = [os.urandom(5 * 1024 * 1024), os.urandom(5 * 1024 * 1024), os.urandom(12_345)]
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)
    done = []
    for number, part in enumerate(parts, start=1):
        answer = s3.upload_part(
            Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=part
        )
        done.append({"PartNumber": number, "ETag": answer["ETag"]})
    s3.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": done}
    )
    path = os.path.join(workdir, "multi.bin")
    assert os.stat(path).st_size == sum(map(len, parts))
    assert read_file(path) == b"".join(parts)
    with open(path, "rb") as file:  # a read across the boundary of two parts
        file.seek(5 * 1024 * 1024 - 10)
        assert file.read(20) == parts[0][-10:] + parts[1][:10]


def test_a_multipart_object_written_in_the_mount_is_one_part_with_no_old_checksums(
    workdir: str, s3: Any
) -> None:
    key = prefix_of(workdir) + "parts.bin"
    parts = [os.urandom(5 * 1024 * 1024), os.urandom(1000)]
    upload_in_parts(s3, BUCKET, key, parts, ChecksumAlgorithm="CRC32C")
    second = s3.get_object(Bucket=BUCKET, Key=key, PartNumber=2, ChecksumMode="ENABLED")
    assert second["Body"].read() == parts[1] and "ChecksumCRC32C" in second
    with open(os.path.join(workdir, "parts.bin"), "r+b") as file:  # one byte of part 2
        file.seek(len(parts[0]))
        file.write(b"!")
    data = parts[0] + b"!" + parts[1][1:]
    # The parts' sizes and checksums said nothing of the new bytes: one part now.
    whole = s3.get_object(Bucket=BUCKET, Key=key, PartNumber=1, ChecksumMode="ENABLED")
    assert whole["Body"].read() == data and whole["PartsCount"] == 1
    assert not [name for name in whole if name.startswith("Checksum")]
    attributes = s3.get_object_attributes(
        Bucket=BUCKET, Key=key, ObjectAttributes=["ETag", "ObjectParts", "Checksum"]
    )
    assert attributes["ETag"] == hashlib.md5(data).hexdigest()
    assert "ObjectParts" not in attributes and "Checksum" not in attributes


def test_s3_directory_marker_is_an_empty_directory(workdir: str, s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key=prefix_of(workdir) + "made-by-s3/", Body=b"")
    assert os.path.isdir(os.path.join(workdir, "made-by-s3"))
    assert os.listdir(os.path.join(workdir, "made-by-s3")) == []
    s3.delete_object(Bucket=BUCKET, Key=prefix_of(workdir) + "made-by-s3/")
    assert not os.path.exists(os.path.join(workdir, "made-by-s3"))


# -- mount -> S3 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("notes.txt", "text/plain"),
        ("data.json", "application/json"),
        ("page.html", "text/html"),
        ("photo.jpg", "image/jpeg"),
        ("no-extension", "application/octet-stream"),
    ],
)
def test_file_closed_in_the_mount_is_an_object(
    mounted: Mounted, workdir: str, s3: Any, name: str, content_type: str
) -> None:
    data = os.urandom(40_000)
    path = os.path.join(workdir, name)
    with open(path, "wb") as file:
        file.write(data[:10_000])
        file.write(data[10_000:])
    key = prefix_of(workdir) + name
    got = s3.get_object(Bucket=BUCKET, Key=key)
    assert got["Body"].read() == data
    assert got["ContentLength"] == len(data)
    assert got["ETag"] == md5_etag(data)
    assert got["ContentType"] == content_type
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix_of(workdir))["Contents"]
    entry = {item["Key"]: item for item in listed}[key]
    assert entry["Size"] == len(data)
    assert entry["ETag"] == md5_etag(data)


def test_etag_follows_every_change_in_the_mount(workdir: str, s3: Any) -> None:
    key = prefix_of(workdir) + "evolving"
    path = os.path.join(workdir, "evolving")
    with open(path, "wb") as file:
        file.write(b"abc")
    assert s3.head_object(Bucket=BUCKET, Key=key)["ETag"] == md5_etag(b"abc")
    with open(path, "ab") as file:  # appended: the whole object's MD5
        file.write(b"def")
    assert s3.head_object(Bucket=BUCKET, Key=key)["ETag"] == md5_etag(b"abcdef")
    fd = os.open(path, os.O_WRONLY)  # written out of order
    try:
        os.pwrite(fd, b"XY", 4)
        os.pwrite(fd, b"Q", 0)
    finally:
        os.close(fd)
    assert s3.head_object(Bucket=BUCKET, Key=key)["ETag"] == md5_etag(b"QbcdXY")
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, 2)
    finally:
        os.close(fd)
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert (head["ContentLength"], head["ETag"]) == (2, md5_etag(b"Qb"))
    with open(path, "wb") as file:  # O_TRUNC, then new bytes
        file.write(b"fresh")
    got = s3.get_object(Bucket=BUCKET, Key=key)
    assert (got["Body"].read(), got["ETag"]) == (b"fresh", md5_etag(b"fresh"))
    # a conditional GET with that ETag: 304, the ETag is the object's real one
    with pytest.raises(s3.exceptions.ClientError) as caught:
        s3.get_object(Bucket=BUCKET, Key=key, IfNoneMatch=md5_etag(b"fresh"))
    assert caught.value.response["Error"]["Code"] == "304"


def test_truncate_by_path_keeps_a_valid_etag(workdir: str, s3: Any) -> None:
    key = prefix_of(workdir) + "cut"
    path = os.path.join(workdir, "cut")
    with open(path, "wb") as file:
        file.write(b"0123456789")
    os.truncate(path, 4)
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ContentLength"] == 4
    assert head.get("ETag") == md5_etag(b"0123")
    os.truncate(path, 6)
    assert s3.head_object(Bucket=BUCKET, Key=key).get("ETag") == md5_etag(b"0123\0\0")


def test_many_files_from_the_mount_are_listed_by_s3(workdir: str, s3: Any) -> None:
    expected = {}
    for i in range(30):
        name = f"dir{i % 3}/file-{i:02d}"
        os.makedirs(os.path.join(workdir, f"dir{i % 3}"), exist_ok=True)
        data = os.urandom(i * 100)
        with open(os.path.join(workdir, name), "wb") as file:
            file.write(data)
        expected[prefix_of(workdir) + name] = (len(data), md5_etag(data))
    listed = {}
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=prefix_of(workdir), PaginationConfig={"PageSize": 7}
    ):
        for item in page.get("Contents", []):
            if not item["Key"].endswith("/"):
                listed[item["Key"]] = (item["Size"], item["ETag"])
    assert listed == expected
    delimited = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix_of(workdir), Delimiter="/")
    assert [p["Prefix"] for p in delimited["CommonPrefixes"]] == [
        prefix_of(workdir) + f"dir{i}/" for i in range(3)
    ]


def test_a_file_and_an_object_written_at_the_same_time(workdir: str, s3: Any) -> None:
    """While a file is open for writing in the mount, an S3 client writes another
    key of the same directory: both land, neither disturbs the other."""
    path = os.path.join(workdir, "mount-side")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"m" * 100_000)
        s3.put_object(Bucket=BUCKET, Key=prefix_of(workdir) + "s3-side", Body=b"s" * 1000)
        os.write(fd, b"M" * 100_000)
    finally:
        os.close(fd)
    assert sorted(os.listdir(workdir)) == ["mount-side", "s3-side"]
    assert s3.get_object(Bucket=BUCKET, Key=prefix_of(workdir) + "mount-side")["Body"].read() == (
        b"m" * 100_000 + b"M" * 100_000
    )
    assert read_file(os.path.join(workdir, "s3-side")) == b"s" * 1000


def test_s3_put_if_match_loses_to_a_file_written_while_it_streams(
    mounted: Mounted, workdir: str, s3: Any
) -> None:
    """If-Match must hold when the PUT's version lands, whichever face changed the
    key meanwhile: here a file rewritten through the mount wins."""
    path = os.path.join(workdir, "guarded")
    key = prefix_of(workdir) + "guarded"
    etag = s3.put_object(Bucket=BUCKET, Key=key, Body=b"v1")["ETag"]
    body = os.urandom(1024 * 1024)
    with start_slow_put(mounted.node, f"/{BUCKET}/{key}", body, {"If-Match": etag}) as wire:
        with open(path, "wb") as file:
            file.write(b"from the mount")
        wire.send(body[len(body) // 2 :])
        reply = wire.reply()
    assert_error(reply, 412, "PreconditionFailed")
    assert read_file(path) == b"from the mount"
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"from the mount"


def test_rclone_sync_sees_a_file_changed_in_the_mount(
    mounted: Mounted, workdir: str, tmp_path: Path
) -> None:
    """rclone up, an edit in place through the mount (same size), rclone back down:
    the edit comes down. rclone compares size and its mtime metadata, which the
    mount shows as the file's mtime and moves on every write."""
    rclone = Rclone(mounted.node, tmp_path)
    local, down = tmp_path / "local", tmp_path / "down"
    local.mkdir()
    (local / "notes.txt").write_bytes(b"version one")
    os.utime(local / "notes.txt", ns=(1_600_000_000_123_456_789,) * 2)
    remote = f"o:{BUCKET}/{prefix_of(workdir)}"
    rclone("copy", local, remote)
    path = os.path.join(workdir, "notes.txt")
    assert os.stat(path).st_mtime_ns // 1000 == 1_600_000_000_123_456  # rclone's float: us
    rclone("copy", remote, down)
    with open(path, "r+b") as file:
        file.write(b"VERSION")
    rclone("sync", remote, down)
    assert (down / "notes.txt").read_bytes() == b"VERSION one"
