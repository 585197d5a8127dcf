"""The mount and S3 show the same bytes, both ways (a first check; see the other modules)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from fuse_node import BUCKET, Mounted


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
