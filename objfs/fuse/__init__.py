"""objfs.fuse — placeholder package; the face lands with its own issue."""
