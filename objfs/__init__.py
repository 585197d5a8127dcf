"""objfs — one storage core on raw disks, served as S3 and as a FUSE mount."""

from __future__ import annotations

__version__ = "0.1.0"
