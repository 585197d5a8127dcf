"""Virtual-hosted-style addressing: with `s3.domain` set, BUCKET.DOMAIN names the
bucket and the whole path is the key; path-style keeps working beside it.

Method: a node configured with domain "s3.test"; requests signed with botocore for
http://BUCKET.s3.test:PORT/KEY and sent to 127.0.0.1 with that Host header.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from s3_node import ROOT_KEY, ROOT_SECRET, WORK_DIR, Node, start_node, stop_node

from objfs.config import S3Config

DOMAIN = "s3.test"


@pytest.fixture(scope="module")
def vnode() -> Iterator[Node]:
    os.makedirs(WORK_DIR, exist_ok=True)
    path = tempfile.mkdtemp(dir=WORK_DIR)
    running = start_node(
        os.path.join(path, "data"), s3=S3Config(address="127.0.0.1:0", domain=DOMAIN)
    )
    try:
        yield running
    finally:
        stop_node(running)
        shutil.rmtree(path, ignore_errors=True)


def request(node: Node, method: str, bucket: str, key: str, body: bytes = b"") -> Any:
    port = node.endpoint.rsplit(":", 1)[1]
    host = f"{bucket}.{DOMAIN}:{port}"
    path = "/" + quote(key)  # as sent, percent-encoded
    signed = AWSRequest(method=method, url=f"http://{host}{path}", data=body)
    S3SigV4Auth(Credentials(ROOT_KEY, ROOT_SECRET), "s3", "us-east-1").add_auth(signed)
    pool = urllib3.HTTPConnectionPool("127.0.0.1", int(port), retries=False, timeout=10)
    headers = {**dict(signed.headers), "Host": host}  # botocore signs it from the URL
    return pool.request(method, path, body=body or None, headers=headers)


def test_virtual_hosted_requests_name_the_bucket_in_the_host(vnode: Node) -> None:
    s3 = vnode.client()
    s3.create_bucket(Bucket="vhost")
    put = request(vnode, "PUT", "vhost", "dir/key with space.txt", b"virtually hosted")
    assert put.status == 200, put.data
    got = s3.get_object(Bucket="vhost", Key="dir/key with space.txt")  # path-style
    assert got["Body"].read() == b"virtually hosted"
    assert request(vnode, "GET", "vhost", "dir/key with space.txt").data == b"virtually hosted"
    listing = request(vnode, "GET", "vhost", "")
    assert listing.status == 200 and b"<Key>dir/key with space.txt</Key>" in listing.data
    missing = request(vnode, "GET", "nobucket", "k")
    assert missing.status == 404 and b"NoSuchBucket" in missing.data
