"""A real node with a real mount, for FUSE tests (fixtures in conftest.py).

The node runs in a thread of the test process (tests/s3/s3_node.py); the test
code makes ordinary syscalls on the mount, which the kernel hands to that
thread. One mount per process (pyfuse3), so one mounted node at a time.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "s3"))

from s3_node import WORK_DIR, Node, start_node, stop_node

from objfs.config import FuseConfig

BUCKET = "mounted"
__all__ = ["BUCKET", "WORK_DIR", "Mounted", "mount_node", "stop_node"]


@dataclass
class Mounted:
    node: Node
    mountpoint: str  # the bucket BUCKET is the root of the mount
    bucket: str = BUCKET

    def s3(self, **config: Any) -> Any:
        return self.node.client(**config)


def mount_node(path: str, fuse: FuseConfig | None = None) -> Mounted:
    """A node on fresh devices under `path`, with BUCKET mounted at path/mnt."""
    mountpoint = os.path.join(path, "mnt")
    fuse = fuse or FuseConfig(mountpoint=mountpoint, bucket=BUCKET)
    running = start_node(os.path.join(path, "data"), fuse=fuse)
    return Mounted(running, fuse.mountpoint, fuse.bucket)
