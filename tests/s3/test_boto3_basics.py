"""boto3 against a real node: buckets, objects, listing, ranges, conditions, copy, auth.

Method: one node per module (store on O_DIRECT device files, hypercorn on a free
loopback port); boto3 with the current SDK's default checksum behaviour and, where
it matters, with `request_checksum_calculation="when_required"`. Every test
checks the bytes and fields that come back, not only that a call succeeded.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import pytest
import urllib3
from botocore.exceptions import ClientError
from s3_node import Node

HTTP = urllib3.PoolManager()


def http(method: str, url: str, body: bytes | None = None) -> urllib3.BaseHTTPResponse:
    return HTTP.request(method, url, body=body, timeout=10, retries=False)


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def status(excinfo: pytest.ExceptionInfo[ClientError]) -> int:
    return int(excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"])


def test_buckets_are_created_listed_and_deleted(s3: Any) -> None:
    s3.create_bucket(Bucket="basics-a")
    s3.create_bucket(Bucket="basics-b")
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert {"basics-a", "basics-b"} <= set(names)
    s3.head_bucket(Bucket="basics-a")
    assert s3.get_bucket_location(Bucket="basics-a")["LocationConstraint"] in (None, "")
    with pytest.raises(ClientError) as excinfo:
        s3.create_bucket(Bucket="basics-a")
    assert error_code(excinfo) == "BucketAlreadyOwnedByYou"
    s3.put_object(Bucket="basics-b", Key="x", Body=b"1")
    with pytest.raises(ClientError) as excinfo:
        s3.delete_bucket(Bucket="basics-b")
    assert error_code(excinfo) == "BucketNotEmpty"
    s3.delete_object(Bucket="basics-b", Key="x")
    s3.delete_bucket(Bucket="basics-b")
    with pytest.raises(ClientError) as excinfo:
        s3.head_bucket(Bucket="basics-b")
    assert status(excinfo) == 404
    with pytest.raises(ClientError) as excinfo:
        s3.create_bucket(Bucket="Bad_Name")
    assert error_code(excinfo) == "InvalidBucketName"


@pytest.mark.parametrize("size", [0, 1, 1024, 4097, 5 * 1024 * 1024 + 3, 20 * 1024 * 1024])
def test_put_get_head_of_every_size_give_the_bytes_and_md5_etag(s3: Any, size: int) -> None:
    s3.create_bucket(Bucket="sizes") if size == 0 else None
    data = os.urandom(size)
    put = s3.put_object(Bucket="sizes", Key=f"obj-{size}", Body=data, Metadata={"Color": "blue"})
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket="sizes", Key=f"obj-{size}")
    assert got["Body"].read() == data
    assert got["ETag"] == put["ETag"]
    assert got["ContentLength"] == size
    assert got["Metadata"] == {"color": "blue"}
    head = s3.head_object(Bucket="sizes", Key=f"obj-{size}")
    assert head["ContentLength"] == size and head["ETag"] == put["ETag"]


def test_put_without_default_checksums_and_with_content_md5(node: Node) -> None:
    s3 = node.client(request_checksum_calculation="when_required")
    s3.create_bucket(Bucket="plain")
    data = os.urandom(300_000)
    s3.put_object(Bucket="plain", Key="k", Body=data)
    assert s3.get_object(Bucket="plain", Key="k")["Body"].read() == data
    import base64

    good = base64.b64encode(hashlib.md5(data).digest()).decode()
    s3.put_object(Bucket="plain", Key="md5", Body=data, ContentMD5=good)
    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket="plain", Key="md5-bad", Body=data, ContentMD5=bad)
    assert error_code(excinfo) == "BadDigest"
    with pytest.raises(ClientError):
        s3.head_object(Bucket="plain", Key="md5-bad")


def test_range_reads(s3: Any) -> None:
    s3.create_bucket(Bucket="ranges")
    data = os.urandom(3 * 1024 * 1024 + 17)
    s3.put_object(Bucket="ranges", Key="r", Body=data)
    for header, expected in [
        ("bytes=0-0", data[:1]),
        ("bytes=100-199", data[100:200]),
        ("bytes=1048570-", data[1048570:]),
        ("bytes=-10", data[-10:]),
        ("bytes=0-99999999", data),
    ]:
        got = s3.get_object(Bucket="ranges", Key="r", Range=header)
        assert got["Body"].read() == expected, header
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["ContentRange"].endswith(f"/{len(data)}")
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket="ranges", Key="r", Range=f"bytes={len(data)}-")
    assert error_code(excinfo) == "InvalidRange" and status(excinfo) == 416


def test_conditional_gets(s3: Any) -> None:
    s3.create_bucket(Bucket="conditions")
    etag = s3.put_object(Bucket="conditions", Key="c", Body=b"hello")["ETag"]
    assert s3.get_object(Bucket="conditions", Key="c", IfMatch=etag)["Body"].read() == b"hello"
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket="conditions", Key="c", IfMatch='"0000"')
    assert status(excinfo) == 412
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket="conditions", Key="c", IfNoneMatch=etag)
    assert status(excinfo) == 304
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket="conditions", Key="c", Body=b"x", IfNoneMatch="*")
    assert status(excinfo) == 412
    assert s3.get_object(Bucket="conditions", Key="c")["Body"].read() == b"hello"


def test_listing_with_prefix_delimiter_and_pages(s3: Any) -> None:
    s3.create_bucket(Bucket="listing")
    keys = [f"dir{d}/file{f:03d}" for d in range(3) for f in range(40)] + ["top1", "top2"]
    for key in keys:
        s3.put_object(Bucket="listing", Key=key, Body=key.encode())
    page = s3.list_objects_v2(Bucket="listing", Delimiter="/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["dir0/", "dir1/", "dir2/"]
    assert [o["Key"] for o in page["Contents"]] == ["top1", "top2"]
    paginator = s3.get_paginator("list_objects_v2")
    listed = [
        o["Key"]
        for p in paginator.paginate(
            Bucket="listing", Prefix="dir1/", PaginationConfig={"PageSize": 7}
        )
        for o in p.get("Contents", [])
    ]
    assert listed == sorted(k for k in keys if k.startswith("dir1/"))
    v1 = s3.get_paginator("list_objects")
    assert [
        o["Key"]
        for p in v1.paginate(Bucket="listing", PaginationConfig={"PageSize": 11})
        for o in p.get("Contents", [])
    ] == sorted(keys)


def test_copy_object_by_reference_with_metadata_directive(s3: Any) -> None:
    s3.create_bucket(Bucket="copies")
    data = os.urandom(2_000_000)
    s3.put_object(Bucket="copies", Key="src", Body=data, Metadata={"a": "1"})
    s3.copy_object(Bucket="copies", Key="dst", CopySource={"Bucket": "copies", "Key": "src"})
    got = s3.get_object(Bucket="copies", Key="dst")
    assert got["Body"].read() == data and got["Metadata"] == {"a": "1"}
    s3.copy_object(
        Bucket="copies",
        Key="dst",
        CopySource="copies/src",
        Metadata={"b": "2"},
        MetadataDirective="REPLACE",
    )
    assert s3.head_object(Bucket="copies", Key="dst")["Metadata"] == {"b": "2"}
    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket="copies", Key="src", CopySource="copies/src")
    assert error_code(excinfo) == "InvalidRequest"


def test_delete_objects_in_one_request(s3: Any) -> None:
    s3.create_bucket(Bucket="deletes")
    for i in range(5):
        s3.put_object(Bucket="deletes", Key=f"k{i}", Body=b"x")
    result = s3.delete_objects(
        Bucket="deletes",
        Delete={"Objects": [{"Key": f"k{i}"} for i in range(4)] + [{"Key": "none"}]},
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == ["k0", "k1", "k2", "k3", "none"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="deletes")["Contents"]] == ["k4"]


def test_signature_failures_and_other_users(node: Node, s3: Any) -> None:
    s3.create_bucket(Bucket="private")
    s3.put_object(Bucket="private", Key="secret", Body=b"root only")
    wrong = node.client(secret_key="not-the-secret-at-all")
    with pytest.raises(ClientError) as excinfo:
        wrong.list_buckets()
    assert error_code(excinfo) == "SignatureDoesNotMatch" and status(excinfo) == 403
    unknown = node.client(access_key="NOSUCHKEY123")
    with pytest.raises(ClientError) as excinfo:
        unknown.list_buckets()
    assert error_code(excinfo) == "InvalidAccessKeyId"
    _, alice = node.create_user("alice")
    with pytest.raises(ClientError) as excinfo:
        alice.get_object(Bucket="private", Key="secret")
    assert error_code(excinfo) == "AccessDenied"
    with pytest.raises(ClientError) as excinfo:
        alice.put_object(Bucket="private", Key="mine", Body=b"x")
    assert error_code(excinfo) == "AccessDenied"
    alice.create_bucket(Bucket="alices")
    alice.put_object(Bucket="alices", Key="a", Body=b"alice's")
    assert [b["Name"] for b in alice.list_buckets()["Buckets"]] == ["alices"]
    assert s3.get_object(Bucket="alices", Key="a")["Body"].read() == b"alice's"  # root sees all
    anonymous = http("GET", f"{node.endpoint}/private/secret")
    assert anonymous.status == 403 and b"AccessDenied" in anonymous.data


def test_presigned_get_and_put(node: Node) -> None:
    """SigV4 presigned URLs (boto3 presigns with SigV2 unless told s3v4; objfs speaks
    only SigV4 and answers SigV2 with InvalidRequest)."""
    s3 = node.client(signature_version="s3v4")
    s3.create_bucket(Bucket="presigned")
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": "presigned", "Key": "p"}, ExpiresIn=60
    )
    assert http("PUT", url, b"via presign").status == 200
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "presigned", "Key": "p"}, ExpiresIn=60
    )
    got = http("GET", url)
    assert got.status == 200 and got.data == b"via presign"
    tampered = url.replace("presigned/p", "presigned/q")
    assert http("GET", tampered).status == 403
    expired = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "presigned", "Key": "p"}, ExpiresIn=1
    )
    time.sleep(2.1)
    answer = http("GET", expired)
    assert answer.status == 403 and b"AccessDenied" in answer.data
    sigv2 = node.client().generate_presigned_url(
        "get_object", Params={"Bucket": "presigned", "Key": "p"}, ExpiresIn=60
    )
    if "Signature=" in sigv2 and "X-Amz-Signature" not in sigv2:
        refused = http("GET", sigv2)
        assert refused.status == 400 and b"InvalidRequest" in refused.data


def test_a_user_created_while_the_node_runs_can_sign_within_seconds(node: Node) -> None:
    """`objfs user create` writes users.json from another process; the running node
    picks the new user up (it polls the file) without a restart."""
    from objfs.s3.users import Users

    outside, _ = Users.load(node.config.store.data_dir)  # as the CLI would
    carol = outside.create("carol")
    client = node.client(carol.access_key, carol.secret_key)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.create_bucket(Bucket="carols")
            break
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "InvalidAccessKeyId"
            assert time.monotonic() < deadline, "the node never saw the new user"
            time.sleep(0.2)
    assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["carols"]
