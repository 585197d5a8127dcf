"""POST Object (browser form uploads): boto3's generate_presigned_post gives a
policy and fields; the form is sent as multipart/form-data like a browser would.

Method: a real node (s3_node.py); forms built with urllib3's encoder; the stored
bytes, metadata and ACL are read back with boto3.
"""

from __future__ import annotations

import os
from typing import Any

import urllib3
from s3_node import Node

HTTP = urllib3.PoolManager()


def post(url: str, fields: dict[str, str], data: bytes, filename: str = "upload.bin") -> Any:
    form: dict[str, Any] = dict(fields)
    form["file"] = (filename, data, "application/octet-stream")
    return HTTP.request("POST", url, fields=form, timeout=30, retries=False)


def test_presigned_post_uploads_with_conditions(node: Node) -> None:
    s3 = node.client(signature_version="s3v4")
    s3.create_bucket(Bucket="forms")
    data = os.urandom(200_000)
    presigned = s3.generate_presigned_post(
        "forms",
        "uploads/${filename}",
        Fields={"x-amz-meta-origin": "browser", "success_action_status": "201"},
        Conditions=[
            ["starts-with", "$key", "uploads/"],
            {"x-amz-meta-origin": "browser"},
            {"success_action_status": "201"},
            ["content-length-range", 1, 1_000_000],
        ],
        ExpiresIn=300,
    )
    answer = post(presigned["url"], presigned["fields"], data, "photo.jpg")
    assert answer.status == 201, answer.data
    assert b"<Key>uploads/photo.jpg</Key>" in answer.data
    got = s3.get_object(Bucket="forms", Key="uploads/photo.jpg")
    assert got["Body"].read() == data and got["Metadata"] == {"origin": "browser"}

    too_big = post(presigned["url"], presigned["fields"], os.urandom(1_000_001), "big.bin")
    assert too_big.status == 400 and b"EntityTooLarge" in too_big.data
    tampered = dict(presigned["fields"], **{"x-amz-meta-origin": "elsewhere"})
    refused = post(presigned["url"], tampered, b"x")
    assert refused.status == 403 and b"AccessDenied" in refused.data
    extra = dict(presigned["fields"], **{"x-amz-meta-extra": "not in the policy"})
    refused = post(presigned["url"], extra, b"x")
    assert refused.status == 403 and b"Extra input fields" in refused.data
    bad = dict(presigned["fields"], **{"x-amz-signature": "0" * 64})
    refused = post(presigned["url"], bad, b"x")
    assert refused.status == 403 and b"SignatureDoesNotMatch" in refused.data
    s3.head_object(Bucket="forms", Key="uploads/photo.jpg")  # still the first upload
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="forms")["Contents"]] == [
        "uploads/photo.jpg"
    ]


def test_anonymous_post_needs_a_bucket_everyone_may_write(node: Node, s3: Any) -> None:
    s3.create_bucket(Bucket="openforms")
    url = f"{node.endpoint}/openforms"
    refused = post(url, {"key": "a"}, b"nope")
    assert refused.status == 403
    s3.put_bucket_acl(Bucket="openforms", ACL="public-read-write")
    accepted = post(url, {"key": "a", "acl": "public-read"}, b"anyone")
    assert accepted.status == 204
    assert s3.get_object(Bucket="openforms", Key="a")["Body"].read() == b"anyone"
    assert HTTP.request("GET", f"{url}/a", retries=False).data == b"anyone"
    malformed = HTTP.request(
        "POST",
        url,
        body=b"--x\r\nbroken",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
        retries=False,
    )
    assert malformed.status == 400 and b"MalformedPOSTRequest" in malformed.data


def test_post_metadata_that_is_no_header_is_refused_and_nothing_stored(node: Node) -> None:
    """A form field may hold what a header cannot (a space in the name, a line
    break in the value): such metadata is refused up front; stored, every later
    GET and HEAD of the object would fail."""
    s3 = node.client(signature_version="s3v4")
    s3.create_bucket(Bucket="forms-hostile")
    for name, value in [
        ("x-amz-meta-a b", "v"),
        ("x-amz-meta-a(b)", "v"),
        ("x-amz-meta-ok", "line one\r\nx-injected: yes"),
        ("x-amz-meta-ok", "nul\x00"),
    ]:
        presigned = s3.generate_presigned_post(
            "forms-hostile",
            "k",
            Fields={name: value},
            Conditions=[{name: value}],
            ExpiresIn=300,
        )
        answer = post(presigned["url"], presigned["fields"], b"data")
        assert answer.status == 400 and b"InvalidArgument" in answer.data, (name, answer.data)
    assert "Contents" not in s3.list_objects_v2(Bucket="forms-hostile")
    # Not ASCII: sent back as its UTF-8 bytes.
    fields = {"x-amz-meta-ok": "snow \u2603"}
    presigned = s3.generate_presigned_post(
        "forms-hostile", "k", Fields=fields, Conditions=[fields], ExpiresIn=300
    )
    assert post(presigned["url"], presigned["fields"], b"data").status == 204
    url = s3.generate_presigned_url("head_object", Params={"Bucket": "forms-hostile", "Key": "k"})
    head = HTTP.request("HEAD", url, timeout=30, retries=False)
    assert head.status == 200
    assert head.headers["x-amz-meta-ok"].encode("latin-1") == "snow \u2603".encode()
