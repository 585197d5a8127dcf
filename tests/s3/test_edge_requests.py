"""Edge requests against a real node: multipart corners, aws-chunked faults,
conditional requests, spans of odd objects and odd keys.

Method: one node per module (s3_node.py); boto3 for what a real client sends,
raw signed HTTP (test_s3_hostile's helpers) where a test must control timing or
bytes. Every test checks the status, the AWS error code and the bytes stored,
and space where a request could leave some behind.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError
from s3_node import Node
from test_s3_hostile import (
    UNSIGNED,
    Wire,
    assert_error,
    exchange,
    keys_in,
    raw_request,
    sign,
    signed_request,
)

from objfs.s3.multipart import UPLOADS_BUCKET

KiB, MiB = 1024, 1024 * 1024


def code_of(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def status_of(excinfo: pytest.ExceptionInfo[ClientError]) -> int:
    return int(excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"])


def free_bytes(node: Node) -> int:
    return int(node.call(lambda: node.store.space.free_bytes))


def upload_keys(node: Node, bucket: str) -> list[str]:
    page = node.call(lambda: node.store.list_objects(UPLOADS_BUCKET, prefix=bucket + "/"))
    return [o.key for o in page.objects]


def new_bucket(s3: Any, name: str) -> str:
    s3.create_bucket(Bucket=name)
    return name


# -- multipart -----------------------------------------------------------------------


def _start_slow_put(node: Node, target: str, body: bytes, headers: dict[str, str]) -> Wire:
    """A signed PUT whose head and first half of the body are sent; the rest is not yet."""
    signed = sign(node, "PUT", target, headers=headers, payload_hash=UNSIGNED)
    signed["Content-Length"] = str(len(body))
    wire = Wire(node)
    wire.send(raw_request("PUT", target, signed, body[: len(body) // 2]))
    time.sleep(0.3)  # the handler is streaming the body by now
    return wire


def test_upload_aborted_while_a_part_streams_leaves_nothing(node: Node, s3: Any) -> None:
    bucket = new_bucket(s3, "edge-abort-streaming")
    before = free_bytes(node)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    body = os.urandom(3 * MiB)
    wire = _start_slow_put(node, f"/{bucket}/k?partNumber=1&uploadId={upload_id}", body, {})
    with wire:
        s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id)
        wire.send(body[len(body) // 2 :])
        reply = wire.reply()
    assert_error(reply, 404, "NoSuchUpload")
    assert upload_keys(node, bucket) == []
    assert free_bytes(node) == before


def test_list_multipart_uploads_pages_over_common_prefixes(s3: Any) -> None:
    bucket = new_bucket(s3, "edge-list-uploads")
    keys = ["a/1", "a/2", "b/1", "c"]
    for key in keys:
        s3.create_multipart_upload(Bucket=bucket, Key=key)
    seen: list[str] = []
    marker: dict[str, str] = {}
    for _ in range(10):
        page = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/", MaxUploads=1, **marker)
        seen += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        seen += [u["Key"] for u in page.get("Uploads", [])]
        if not page["IsTruncated"]:
            break
        marker = {"KeyMarker": page["NextKeyMarker"]}
        if page.get("NextUploadIdMarker"):
            marker["UploadIdMarker"] = page["NextUploadIdMarker"]
    assert seen == ["a/", "b/", "c"]
    paginator = s3.get_paginator("list_multipart_uploads")
    pages = list(paginator.paginate(Bucket=bucket, PaginationConfig={"PageSize": 1}))
    assert [u["Key"] for p in pages for u in p.get("Uploads", [])] == keys


def test_upload_part_copy_checks_its_source_conditions(node: Node, s3: Any) -> None:
    bucket = new_bucket(s3, "edge-partcopy-cond")
    s3.put_object(Bucket=bucket, Key="src", Body=b"source bytes")
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    wrong = '"' + "0" * 32 + '"'
    for condition in (
        {"CopySourceIfMatch": wrong},
        {"CopySourceIfNoneMatch": "*"},
        {"CopySourceIfUnmodifiedSince": "Mon, 01 Jan 2001 00:00:00 GMT"},
    ):
        with pytest.raises(ClientError) as excinfo:
            s3.upload_part_copy(
                Bucket=bucket,
                Key="dst",
                UploadId=upload_id,
                PartNumber=1,
                CopySource={"Bucket": bucket, "Key": "src"},
                **condition,
            )
        assert (status_of(excinfo), code_of(excinfo)) == (412, "PreconditionFailed"), condition
    assert s3.list_parts(Bucket=bucket, Key="dst", UploadId=upload_id).get("Parts", []) == []
    s3.abort_multipart_upload(Bucket=bucket, Key="dst", UploadId=upload_id)


def test_complete_multipart_upload_honours_if_none_match(node: Node, s3: Any) -> None:
    bucket = new_bucket(s3, "edge-complete-cond")
    s3.put_object(Bucket=bucket, Key="k", Body=b"first")
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"2nd")[
        "ETag"
    ]
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    with pytest.raises(ClientError) as excinfo:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload=parts, IfNoneMatch="*"
        )
    assert (status_of(excinfo), code_of(excinfo)) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as excinfo:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="k",
            UploadId=upload_id,
            MultipartUpload=parts,
            IfMatch='"' + "0" * 32 + '"',
        )
    assert (status_of(excinfo), code_of(excinfo)) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first"
    current = s3.head_object(Bucket=bucket, Key="k")["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload=parts, IfMatch=current
    )
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"2nd"
    assert upload_keys(node, bucket) == []


# -- conditional requests ------------------------------------------------------------


def test_put_if_match_loses_to_a_put_that_lands_while_it_streams(node: Node, s3: Any) -> None:
    bucket = new_bucket(s3, "edge-if-match-race")
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")["ETag"]
    body = os.urandom(1 * MiB)
    wire = _start_slow_put(node, f"/{bucket}/k", body, {"If-Match": etag})
    with wire:
        s3.put_object(Bucket=bucket, Key="k", Body=b"v2 from another writer")
        wire.send(body[len(body) // 2 :])
        reply = wire.reply()
    assert_error(reply, (409, 412), "PreconditionFailed", "ConditionalRequestConflict")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v2 from another writer"


def test_copy_of_a_delete_marker_by_version_id_is_refused(s3: Any) -> None:
    bucket = new_bucket(s3, "edge-copy-marker")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="src", Body=b"source")
    marker = s3.delete_object(Bucket=bucket, Key="src")["VersionId"]
    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(
            Bucket=bucket,
            Key="dst",
            CopySource={"Bucket": bucket, "Key": "src", "VersionId": marker},
        )
    assert (status_of(excinfo), code_of(excinfo)) == (400, "InvalidRequest")
    assert s3.list_object_versions(Bucket=bucket, Prefix="dst").get("DeleteMarkers", []) == []


# -- spans ---------------------------------------------------------------------------


def test_range_on_a_zero_byte_object(node: Node, s3: Any) -> None:
    bucket = new_bucket(s3, "edge-empty-range")
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    for header in ("bytes=0-0", "bytes=0-", "bytes=-5"):
        reply = exchange(
            node, signed_request(node, "GET", f"/{bucket}/empty", headers={"Range": header})
        )
        assert reply is not None
        if reply.status == 200:
            assert reply.body == b"" and "content-range" not in reply.headers, header
        else:
            assert_error(reply, 416, "InvalidRange")
            assert reply.headers.get("content-range") == "bytes */0", header


# -- keys -----------------------------------------------------------------------------


def test_key_of_1024_bytes_is_kept_and_1025_is_too_long(node: Node, s3: Any) -> None:
    bucket = new_bucket(s3, "edge-long-keys")
    longest = "k" * 1021 + "\u00e9k"  # 1021 + 2 + 1 = 1024 bytes of UTF-8
    assert len(longest.encode()) == 1024
    s3.put_object(Bucket=bucket, Key=longest, Body=b"long")
    assert s3.get_object(Bucket=bucket, Key=longest)["Body"].read() == b"long"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=longest)["UploadId"]
    s3.abort_multipart_upload(Bucket=bucket, Key=longest, UploadId=upload_id)
    too_long = longest + "k"
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key=too_long, Body=b"x")
    assert (status_of(excinfo), code_of(excinfo)) == (400, "KeyTooLongError")
    # A multipart upload of it is refused at its start, not after its parts came in.
    with pytest.raises(ClientError) as excinfo:
        s3.create_multipart_upload(Bucket=bucket, Key=too_long)
    assert (status_of(excinfo), code_of(excinfo)) == (400, "KeyTooLongError")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert upload_keys(node, bucket) == []
    assert keys_in(s3, bucket) == [longest]
