"""Hard links as S3 sees them: each name an ordinary object with the same bytes.

Goal: the names of a link group (made by the core's `link_object`, as the mount
does for `ln`) are each a plain S3 object: GET and HEAD return the same bytes,
ETag and user metadata, listings show every name, and the group's own metadata
entry (`l:links`) never shows as an x-amz-meta header. S3 changes through one
name do to the group what the core promises: a DELETE or PUT takes that name
out, a copy is unlinked, a tagging change reaches every name.

Method: the module's real node (s3_node.py) and boto3; links and in-place writes
go through the node's store on its own event loop (trio.from_thread), and the
groups are read from the store's heads.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import trio
from s3_node import Node

BUCKET = "links-s3"


def store_call(node: Node, function: Any, *args: Any) -> Any:
    """Await `function(*args)` on the node's event loop."""
    return trio.from_thread.run(function, *args, trio_token=node.token)


def group(node: Node, key: str) -> tuple[str, ...]:
    links: tuple[str, ...] = node.call(lambda: node.store.head_object(BUCKET, key).links)
    return links


def assert_plain_object(response: dict[str, Any], data_etag: str | None) -> None:
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    for name, value in headers.items():
        assert not (name.startswith("x-amz-meta-") and ":" in name[len("x-amz-meta-") :]), name
        assert "l:links" not in name and "l:links" not in value, (name, value)
    assert response["Metadata"] == {"color": "blue"}
    if data_etag is not None:
        assert response["ETag"] == f'"{data_etag}"'


def test_every_name_of_a_link_group_is_an_object_with_the_same_bytes(node: Node) -> None:
    s3 = node.client()  # the SDK's default: a CRC32 is sent and stored
    data = os.urandom(3 * 1024 * 1024 + 5)  # several segments
    etag = hashlib.md5(data).hexdigest()
    names = ["a", "b", "dir/c"]
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="a", Body=data, Metadata={"color": "blue"}, ContentType="x/y")
    store_call(node, node.store.link_object, BUCKET, "a", "b")
    store_call(node, node.store.link_object, BUCKET, "b", "dir/c")
    assert group(node, "dir/c") == ("a", "b", "dir/c")

    for name in names:
        got = s3.get_object(Bucket=BUCKET, Key=name)
        assert got["Body"].read() == data, name
        assert got["ContentType"] == "x/y" and got["ContentLength"] == len(data)
        assert_plain_object(got, etag)
        assert_plain_object(s3.head_object(Bucket=BUCKET, Key=name), etag)
        ranged = s3.get_object(Bucket=BUCKET, Key=name, Range="bytes=1048570-1048580")
        assert ranged["Body"].read() == data[1048570:1048581]
    listed = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert [(o["Key"], o["ETag"], o["Size"]) for o in listed] == [
        (name, f'"{etag}"', len(data)) for name in names
    ]

    # Written in place through one name (as the mount writes): seen through all.
    store_call(node, node.store.write_at, BUCKET, "b", 1_000_000, b"through b")
    data = data[:1_000_000] + b"through b" + data[1_000_009:]
    for name in names:
        got = s3.get_object(Bucket=BUCKET, Key=name)
        assert got["Body"].read() == data, name
        assert_plain_object(got, None)

    # Tags are metadata of the file: set through one name, seen through all.
    s3.put_object_tagging(Bucket=BUCKET, Key="a", Tagging={"TagSet": [{"Key": "t", "Value": "1"}]})
    for name in names:
        assert s3.get_object_tagging(Bucket=BUCKET, Key=name)["TagSet"] == [
            {"Key": "t", "Value": "1"}
        ]
    assert group(node, "a") == ("a", "b", "dir/c")


def test_s3_delete_put_and_copy_take_a_name_out_of_its_group(node: Node, s3: Any) -> None:
    data, new = os.urandom(200_000), os.urandom(1000)
    bucket = BUCKET + "-out"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a", Body=data)
    for name in ("b", "c", "d"):
        store_call(node, node.store.link_object, bucket, "a", name)

    def links(key: str) -> tuple[str, ...]:
        found: tuple[str, ...] = node.call(lambda: node.store.head_object(bucket, key).links)
        return found

    s3.delete_object(Bucket=bucket, Key="a")
    assert links("b") == ("b", "c", "d")
    s3.put_object(Bucket=bucket, Key="b", Body=new)
    assert links("b") == () and links("c") == ("c", "d")
    assert s3.get_object(Bucket=bucket, Key="b")["Body"].read() == new
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "c"})
    assert links("copy") == () and links("c") == ("c", "d")
    s3.copy_object(Bucket=bucket, Key="d", CopySource={"Bucket": bucket, "Key": "b"})
    assert links("c") == () and links("d") == ()
    for key, expected in {"b": new, "c": data, "copy": data, "d": new}.items():
        got = s3.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == expected, key
        assert got["ETag"] == f'"{hashlib.md5(expected).hexdigest()}"', key


def test_a_write_in_place_drops_the_checksum_of_the_old_bytes(node: Node, s3: Any) -> None:
    bucket = BUCKET + "-sum"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a", Body=b"hello")  # boto3 sends a CRC32 by default
    store_call(node, node.store.link_object, bucket, "a", "b")
    store_call(node, node.store.write_at, bucket, "b", 0, b"J")
    for key in ("a", "b"):
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"Jello"
