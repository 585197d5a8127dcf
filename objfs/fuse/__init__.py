"""objfs.fuse — the FUSE face: buckets as directories, objects as files, over `Store`.

`mount.run_mount` mounts and serves it inside the node's nursery;
`operations.Operations` holds the handlers. Protocol state (inode numbers,
lookup counts, open files) lives here and nowhere else; every byte and every
attribute lives in the store.
"""
