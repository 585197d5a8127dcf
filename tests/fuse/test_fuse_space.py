"""A full store, seen through the mount and S3: what still works, and what df says.

Goal: on a store out of room, a PUT gets a clean S3 error (not 500); rm, mv,
chmod and S3 DeleteObject still work, with the file open or not, since they
only free space or change metadata; and `df` (statvfs) reports as available
what a user can still write: free space less the space kept for checkpoints,
less parity.

Method: a node with three 48 MiB device files (2+1) mounted, as in
test_fuse_edges.py. A test fills the store straight through the Store API on
the node's loop (1 MiB objects until NoSpace, then small inline ones until the
index may grow no more), checks that writing through the mount now fails with
ENOSPC, does what it tests, and deletes its fillers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from botocore.exceptions import ClientError
from fuse_node import BUCKET, WORK_DIR, Mounted
from mount_helpers import delete_many, prefix_of, s3_missing
from s3_node import start_node, stop_node

from objfs.config import FuseConfig
from objfs.errors import NoSpace

DEVICE_BYTES = 48 << 20
MiB = 1 << 20


@pytest.fixture(scope="module")
def mounted() -> Iterator[Mounted]:
    """conftest's node, on small devices."""
    os.makedirs(WORK_DIR, exist_ok=True)
    path = tempfile.mkdtemp(dir=WORK_DIR)
    fuse = FuseConfig(mountpoint=os.path.join(path, "mnt"), bucket=BUCKET)
    node = start_node(os.path.join(path, "data"), fuse=fuse, device_size_bytes=DEVICE_BYTES)
    try:
        yield Mounted(node, fuse.mountpoint, BUCKET)
    finally:
        stop_node(node)
        shutil.rmtree(path, ignore_errors=True)


def fill(mounted: Mounted, prefix: str, *, index: bool = True) -> list[str]:
    """Put 1 MiB objects under `prefix` until the store says NoSpace, then (with
    `index`) 4000-byte inline ones until it says so again; the keys stored."""
    store = mounted.node.store
    keys: list[str] = []

    async def put_until_full(size: int) -> None:
        data = os.urandom(size)
        while True:
            key = f"{prefix}{len(keys):05d}"
            try:
                await store.put_object(BUCKET, key, data)
            except NoSpace:
                return
            keys.append(key)

    trio.from_thread.run(put_until_full, MiB, trio_token=mounted.node.token)
    if index:
        trio.from_thread.run(put_until_full, 4000, trio_token=mounted.node.token)
    return keys


# -- 1. a PUT to a full store -----------------------------------------------------------


def test_a_put_to_a_full_store_is_a_clean_s3_error(mounted: Mounted, workdir: str, s3: Any) -> None:
    """NoSpace from the core is the S3 error its table names (ServiceUnavailable,
    503), for a PUT of several segments into full data space and for a small
    one once the index may grow no more: never an InternalError (500)."""
    key = prefix_of(workdir) + "more"
    keys = fill(mounted, prefix_of(workdir) + "fill/", index=False)
    try:
        assert_put_refused(s3, key, os.urandom(8 * MiB))
        keys += fill(mounted, prefix_of(workdir) + "index/")
        assert_put_refused(s3, key, b"small")
        assert s3_missing(s3, key)
    finally:
        delete_many(mounted, keys)


def assert_put_refused(s3: Any, key: str, body: bytes) -> None:
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    response = caught.value.response
    assert response["Error"]["Code"] == "ServiceUnavailable", response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 503
