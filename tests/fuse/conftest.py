"""Fixtures for FUSE tests: one real node per module, S3 on loopback and a real mount."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fuse_node import Mounted, mounted_node

if not os.path.exists("/dev/fuse"):
    pytest.skip("no /dev/fuse on this machine: FUSE tests need it", allow_module_level=True)


@pytest.fixture(scope="module")
def mounted() -> Iterator[Mounted]:
    with mounted_node() as running:
        yield running


@pytest.fixture
def workdir(mounted: Mounted) -> Iterator[str]:
    """A fresh directory in the mount for one test (its key prefix: the basename + "/")."""
    path = os.path.join(mounted.mountpoint, "t-" + uuid.uuid4().hex[:12])
    os.mkdir(path)
    yield path


@pytest.fixture
def s3(mounted: Mounted) -> Any:
    return mounted.s3()
