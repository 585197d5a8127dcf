"""objfs.fuse.coherence — S3's changes reach the kernel's caches.

The store tells its watchers of every committed change (`Store.watch`). For
each one this keeps the subdirectory counts right (whoever made the change)
and, for changes that did not come through the mount, queues invalidations of
the inodes and directory entries the kernel may hold for the changed names.
They are handed to the kernel from a thread: an invalidation can block until
a request in flight on the same inode is answered. With the default cache
timeout of 0 the kernel asks again anyway; the invalidations also drop pages
of files held open.
"""

from __future__ import annotations

import pyfuse3
import trio

from objfs.fuse.errors import IN_HANDLER
from objfs.fuse.inodes import Inodes
from objfs.fuse.tree import Tree
from objfs.store import Change


class Coherence:
    def __init__(self, inodes: Inodes, tree: Tree) -> None:
        self.inodes = inodes
        self.tree = tree
        self.invalidations: set[tuple[int, bytes | None]] = set()  # (ino, None) or (parent, name)
        self.invalidated = trio.Event()

    def on_change(self, change: Change) -> None:
        """A committed change (`Store.watch`): forget counts, and, when it did not
        come through the mount, tell the kernel what it may have cached."""
        for key in change.keys:
            self.tree.forget_counts(change.bucket, key)
        for prefix in change.prefixes:
            self.tree.forget_counts(change.bucket, prefix, renamed=True)
        if not change.keys and not change.prefixes:
            self.tree.forget_counts("", "")
        if IN_HANDLER.get():
            return
        root = self.inodes.root
        if not change.keys and not change.prefixes and root.bucket == "":
            self.invalidations.add((root.ino, change.bucket.encode("utf-8")))
        for key in change.keys:
            node = self.inodes.find(change.bucket, key)
            if node is not None:
                self.invalidations.add((node.ino, None))
                if len(node.names) > 1:  # maybe no longer that file (S3 overwrite): look again
                    self.inodes.remove_name(node, key)
            self._invalidate_names(change.bucket, key)
        for prefix in change.prefixes:
            for node in self.inodes.nodes_under(change.bucket, prefix):
                self.invalidations.add((node.ino, None))
            self._invalidate_names(change.bucket, prefix)
        self.invalidated.set()

    def _invalidate_names(self, bucket: str, path: str) -> None:
        """Every directory entry on the way to `path` that the kernel may know."""
        cut = 0
        while cut < len(path):
            end = path.find("/", cut)
            end = len(path) if end < 0 else end
            parent = self.inodes.find(bucket, path[:cut])
            if parent is None and cut == 0 and self.inodes.root.bucket == bucket:
                parent = self.inodes.root
            if parent is not None and end > cut:
                self.invalidations.add((parent.ino, path[cut:end].encode("utf-8")))
            cut = end + 1

    async def run(self) -> None:
        """Hand queued invalidations to the kernel, from a thread: they can block."""
        while True:
            await self.invalidated.wait()
            self.invalidated = trio.Event()
            batch, self.invalidations = self.invalidations, set()
            await trio.to_thread.run_sync(_invalidate, batch)


def _invalidate(batch: set[tuple[int, bytes | None]]) -> None:
    for ino, name in batch:
        try:
            if name is None:
                pyfuse3.invalidate_inode(ino)
            else:
                pyfuse3.invalidate_entry(ino, name)
        except OSError:
            pass  # the kernel no longer knows it: nothing to invalidate
