"""A real node with a real mount, for FUSE tests (fixtures in conftest.py).

The node runs in a thread of the test process (tests/s3/s3_node.py); the test
code makes ordinary syscalls on the mount, which the kernel hands to that
thread. One mount per process (pyfuse3), so one mounted node at a time.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "s3"))

from s3_node import WORK_DIR, Node, start_node, stop_node

from objfs.config import FuseConfig

BUCKET = "mounted"
__all__ = ["BUCKET", "WORK_DIR", "Mounted", "mounted_node", "stop_node"]


@dataclass
class Mounted:
    node: Node
    mountpoint: str  # the bucket BUCKET is the root of the mount
    bucket: str = BUCKET

    def s3(self, **config: Any) -> Any:
        return self.node.client(**config)


@contextmanager
def mounted_node(*, device_size_bytes: int = 256 << 20) -> Iterator[Mounted]:
    """A node on fresh devices in a new directory under WORK_DIR, with BUCKET
    mounted; stopped and its directory removed after."""
    os.makedirs(WORK_DIR, exist_ok=True)
    path = tempfile.mkdtemp(dir=WORK_DIR)
    fuse = FuseConfig(mountpoint=os.path.join(path, "mnt"), bucket=BUCKET)
    running = start_node(os.path.join(path, "data"), fuse=fuse, device_size_bytes=device_size_bytes)
    try:
        yield Mounted(running, fuse.mountpoint, fuse.bucket)
    finally:
        stop_node(running)
        shutil.rmtree(path, ignore_errors=True)
