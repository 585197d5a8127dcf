"""Edge requests against a real node: multipart corners, aws-chunked faults,
conditional requests, spans of odd objects and odd keys.

Method: one node per module (s3_node.py); boto3 for what a real client sends,
raw signed HTTP (test_s3_hostile's helpers) where a test must control timing or
bytes. Every test checks the status, the AWS error code and the bytes stored,
and space where a request could leave some behind.
"""

from __future__ import annotations

import base64
import hashlib
import os
import unicodedata
import zlib
from typing import Any
from urllib.parse import unquote_plus

import pytest
from botocore.exceptions import ClientError
from s3_node import Node
from test_s3_hostile import (
    assert_error,
    assert_ok,
    exchange,
    keys_in,
    signed_request,
    start_slow_put,
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


def test_upload_part_copy_ranges_at_the_edges(node: Node, s3: Any) -> None:
    bucket = new_bucket(s3, "edge-partcopy")
    source = os.urandom(100 * KiB)
    size = len(source)
    s3.put_object(Bucket=bucket, Key="src", Body=source)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]

    def copy(number: int, spec: str) -> str:
        result = s3.upload_part_copy(
            Bucket=bucket,
            Key="dst",
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": bucket, "Key": "src"},
            CopySourceRange=spec,
        )
        return str(result["CopyPartResult"]["ETag"])

    first = copy(1, "bytes=0-0")
    assert first.strip('"') == hashlib.md5(source[:1]).hexdigest()
    last = copy(2, f"bytes={size - 1}-{size - 1}")
    assert last.strip('"') == hashlib.md5(source[-1:]).hexdigest()
    for spec in (f"bytes={size}-{size}", f"bytes=0-{size}", f"bytes={size + 5}-{size + 9}"):
        with pytest.raises(ClientError) as excinfo:
            copy(3, spec)
        assert (status_of(excinfo), code_of(excinfo)) == (416, "InvalidRange"), spec
    parts = s3.list_parts(Bucket=bucket, Key="dst", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 1), (2, 1)]
    s3.abort_multipart_upload(Bucket=bucket, Key="dst", UploadId=upload_id)
    assert upload_keys(node, bucket) == []


def test_part_uploaded_twice_last_wins_and_first_is_freed(node: Node, s3: Any) -> None:
    bucket = new_bucket(s3, "edge-twice")
    before = free_bytes(node)
    first, second = os.urandom(300 * KiB), os.urandom(200 * KiB)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=first)
    etag = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=second)[
        "ETag"
    ]
    parts = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in parts] == [(1, len(second), etag)]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == second
    s3.delete_object(Bucket=bucket, Key="k")
    assert free_bytes(node) == before
    assert upload_keys(node, bucket) == []


def test_complete_with_a_part_of_a_wrong_etag_is_invalid_part(node: Node, s3: Any) -> None:
    bucket = new_bucket(s3, "edge-wrong-etag")
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"x")[
        "ETag"
    ]
    cases = {
        "InvalidPart": [{"PartNumber": 1, "ETag": '"' + "0" * 32 + '"'}],
        "InvalidPartOrder": [{"PartNumber": 1, "ETag": etag}, {"PartNumber": 1, "ETag": etag}],
    }
    for code, parts in cases.items():
        with pytest.raises(ClientError) as excinfo:
            s3.complete_multipart_upload(
                Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        assert (status_of(excinfo), code_of(excinfo)) == (400, code)
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="k")
    assert status_of(excinfo) == 404
    # The upload is still there, whole: a right list completes it.
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"
    assert upload_keys(node, bucket) == []


def test_upload_aborted_while_a_part_streams_leaves_nothing(node: Node, s3: Any) -> None:
    bucket = new_bucket(s3, "edge-abort-streaming")
    before = free_bytes(node)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    body = os.urandom(3 * MiB)
    wire = start_slow_put(node, f"/{bucket}/k?partNumber=1&uploadId={upload_id}", body, {})
    with wire:
        s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id)
        wire.send(body[len(body) // 2 :])
        reply = wire.reply()
    assert_error(reply, 404, "NoSuchUpload")
    assert upload_keys(node, bucket) == []
    assert free_bytes(node) == before


def test_list_parts_pages_with_its_markers(s3: Any) -> None:
    bucket = new_bucket(s3, "edge-list-parts")
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    for number in (1, 2, 5):
        s3.upload_part(
            Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=number, Body=b"%d" % number
        )
    seen, marker = [], 0
    for _ in range(5):
        page = s3.list_parts(
            Bucket=bucket, Key="k", UploadId=upload_id, MaxParts=2, PartNumberMarker=marker
        )
        seen.append([p["PartNumber"] for p in page["Parts"]])
        if not page["IsTruncated"]:
            break
        marker = page["NextPartNumberMarker"]
    assert seen == [[1, 2], [5]]
    s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id)


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
    wire = start_slow_put(node, f"/{bucket}/k", body, {"If-Match": etag})
    with wire:
        s3.put_object(Bucket=bucket, Key="k", Body=b"v2 from another writer")
        wire.send(body[len(body) // 2 :])
        reply = wire.reply()
    assert_error(reply, (409, 412), "PreconditionFailed", "ConditionalRequestConflict")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v2 from another writer"


def test_put_if_none_match_loses_to_a_put_that_lands_while_it_streams(node: Node, s3: Any) -> None:
    bucket = new_bucket(s3, "edge-if-none-match-race")
    body = os.urandom(1 * MiB)
    before = free_bytes(node)
    wire = start_slow_put(node, f"/{bucket}/k", body, {"If-None-Match": "*"})
    with wire:
        s3.put_object(Bucket=bucket, Key="k", Body=b"first")
        wire.send(body[len(body) // 2 :])
        reply = wire.reply()
    assert_error(reply, (409, 412), "PreconditionFailed", "ConditionalRequestConflict")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first"
    s3.delete_object(Bucket=bucket, Key="k")
    assert free_bytes(node) == before


def test_copy_object_source_conditions(s3: Any) -> None:
    bucket = new_bucket(s3, "edge-copy-cond")
    etag = s3.put_object(Bucket=bucket, Key="src", Body=b"source")["ETag"]
    source = {"Bucket": bucket, "Key": "src"}
    past, future = "Mon, 01 Jan 2001 00:00:00 GMT", "Fri, 01 Jan 2100 00:00:00 GMT"
    refused = [
        {"CopySourceIfMatch": '"' + "0" * 32 + '"'},
        {"CopySourceIfNoneMatch": etag},
        {"CopySourceIfUnmodifiedSince": past},
        {"CopySourceIfModifiedSince": future},
        {"CopySourceIfNoneMatch": etag, "CopySourceIfModifiedSince": past},
    ]
    for condition in refused:
        with pytest.raises(ClientError) as excinfo:
            s3.copy_object(Bucket=bucket, Key="dst", CopySource=source, **condition)
        assert (status_of(excinfo), code_of(excinfo)) == (412, "PreconditionFailed"), condition
    assert "Contents" in s3.list_objects_v2(Bucket=bucket, Prefix="src")
    assert s3.list_objects_v2(Bucket=bucket, Prefix="dst").get("Contents", []) == []
    allowed = [
        {"CopySourceIfMatch": etag},
        {"CopySourceIfMatch": etag, "CopySourceIfUnmodifiedSince": past},
        {"CopySourceIfNoneMatch": '"' + "0" * 32 + '"', "CopySourceIfModifiedSince": future},
    ]
    for number, condition in enumerate(allowed):
        s3.copy_object(Bucket=bucket, Key=f"dst{number}", CopySource=source, **condition)
        assert s3.get_object(Bucket=bucket, Key=f"dst{number}")["Body"].read() == b"source"


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


# -- aws-chunked trailers --------------------------------------------------------------


def _crc32_base64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("none", 200, ""),
        ("wrong-trailer-checksum", 400, "BadDigest"),
        ("trailer-missing", 400, "InvalidRequest"),
        ("size-line-not-hex", 400, "IncompleteBody"),
        ("final-chunk-cut", 400, "IncompleteBody"),
        ("decoded-length-too-large", 400, "IncompleteBody"),
    ],
)
def test_unsigned_trailer_upload_with_a_fault_stores_nothing(
    node: Node, s3: Any, fault: str, status: int, code: str
) -> None:
    bucket = "edge-trailers"
    if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        new_bucket(s3, bucket)
    data = os.urandom(20 * KiB)
    trailer = _crc32_base64(data if fault != "wrong-trailer-checksum" else data + b"x")
    body = f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n"
    if fault != "trailer-missing":
        body += f"x-amz-checksum-crc32:{trailer}\r\n".encode()
    body += b"\r\n"
    if fault == "size-line-not-hex":
        body = b"5g00" + body[body.index(b"\r\n") :]
    elif fault == "final-chunk-cut":
        body = body[: body.index(b"0\r\nx-amz") + 1]
    decoded = len(data) + (5 if fault == "decoded-length-too-large" else 0)
    key = f"trailer-{fault}"
    request = signed_request(
        node,
        "PUT",
        f"/{bucket}/{key}",
        headers={
            "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(decoded),
            "x-amz-trailer": "x-amz-checksum-crc32",
        },
        body=body,
        payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    )
    reply = exchange(node, request)
    if fault == "none":
        assert_ok(reply)
        assert reply is not None and reply.headers["x-amz-checksum-crc32"] == trailer
        got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert got["Body"].read() == data and got["ChecksumCRC32"] == trailer
    else:
        assert_error(reply, status, code)
        assert key not in keys_in(s3, bucket)


# -- keys -----------------------------------------------------------------------------


def test_odd_keys_round_trip_and_list_url_encoded(s3: Any) -> None:
    bucket = new_bucket(s3, "edge-keys")
    nfc = unicodedata.normalize("NFC", "caf\u00e9")
    nfd = unicodedata.normalize("NFD", nfc)
    keys = [
        "dir/a%2Fb",
        "dir/plus+sign",
        "dir/two  spaces ",
        f"dir/{nfc}",
        f"dir/{nfd}",
        "dir/sub/deeper",
        "dir/sub%2Fnot-a-dir",
        "top level",
    ]
    for number, key in enumerate(keys):
        s3.put_object(Bucket=bucket, Key=key, Body=b"%d" % number)
    for number, key in enumerate(keys):
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"%d" % number, key
    in_dir = sorted(k for k in keys if k.startswith("dir/") and "/" not in k[4:])
    # botocore asks for encoding-type=url itself and decodes: what comes out went in
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="dir/", Delimiter="/")
    assert [o["Key"] for o in listed["Contents"]] == in_dir
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["dir/sub/"]
    # asked for by the caller, the encoding is left to the caller to undo
    encoded = s3.list_objects_v2(Bucket=bucket, Prefix="dir/", Delimiter="/", EncodingType="url")
    assert [unquote_plus(o["Key"]) for o in encoded["Contents"]] == in_dir
    assert [o["Key"] for o in encoded["Contents"]][:1] == ["dir/a%252Fb"]
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": 2}
    )
    assert [o["Key"] for page in pages for o in page["Contents"]] == sorted(keys)


def test_raw_url_encoded_listing_is_form_encoded(node: Node, s3: Any) -> None:
    bucket = new_bucket(s3, "edge-keys-raw")
    s3.put_object(Bucket=bucket, Key="a b+c/d%2Fe", Body=b"x")
    target = f"/{bucket}?delimiter=%2F&encoding-type=url&list-type=2"
    reply = assert_ok(exchange(node, signed_request(node, "GET", target)))
    assert b"<Prefix>a+b%2Bc/</Prefix>" in reply.body
    assert b"<Delimiter>/</Delimiter>" in reply.body
    assert b"<EncodingType>url</EncodingType>" in reply.body


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
