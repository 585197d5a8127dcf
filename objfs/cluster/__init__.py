"""objfs.cluster — placeholder package; the face lands with its own issue."""
