"""objfs.s3 — placeholder package; the face lands with its own issue."""
