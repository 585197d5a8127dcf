"""Fixtures for FUSE tests: one real node per module, S3 on loopback and a real mount."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fuse_node import WORK_DIR, Mounted, mount_node, stop_node

if not os.path.exists("/dev/fuse"):
    pytest.skip("no /dev/fuse on this machine: FUSE tests need it", allow_module_level=True)


@pytest.fixture(scope="module")
def mounted() -> Iterator[Mounted]:
    os.makedirs(WORK_DIR, exist_ok=True)
    path = tempfile.mkdtemp(dir=WORK_DIR)
    running = mount_node(path)
    try:
        yield running
    finally:
        stop_node(running.node)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def workdir(mounted: Mounted) -> Iterator[str]:
    """A fresh directory in the mount for one test (its key prefix: the basename + "/")."""
    path = os.path.join(mounted.mountpoint, "t-" + uuid.uuid4().hex[:12])
    os.mkdir(path)
    yield path


@pytest.fixture
def s3(mounted: Mounted) -> Any:
    return mounted.s3()
