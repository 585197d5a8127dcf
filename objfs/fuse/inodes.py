"""objfs.fuse.inodes — inode numbers and what the kernel holds of them.

The kernel knows a file by an inode number from the moment a lookup (or
create, mkdir, readdirplus ...) hands it out until it `forget`s it. This table
gives numbers to names, counts those lookups and the open handles, and keeps a
number across renames (a rename moves the name under the same `Node`). The
store knows nothing of inode numbers: they last as long as the mount.

A node is the mount root (bucket ""), a directory (a prefix: "" for a bucket's
root, else ending in "/") or an object (a key). A node unlinked while still
open or known is an orphan: out of the name table, its key moved aside
(operations.py) until the last handle and the last lookup are gone.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

import pyfuse3
from sortedcontainers import SortedDict

from objfs.fuse.errors import fail


@dataclass(slots=True, eq=False)
class Node:
    ino: int
    bucket: str  # "" for the root of a mount of every bucket
    path: str  # a directory's prefix ("" or ending in "/") or an object's key
    # Every name the node has: one, or each key of a hard link group; `path` is one of them.
    names: set[str] = field(default_factory=set)
    lookups: int = 0
    handles: int = 0
    orphan: bool = False

    @property
    def is_root(self) -> bool:
        return self.ino == pyfuse3.ROOT_INODE

    @property
    def is_dir(self) -> bool:
        return self.path == "" or self.path.endswith("/")


class Inodes:
    def __init__(self, root_bucket: str) -> None:
        self._next = pyfuse3.ROOT_INODE + 1
        self._by_ino: dict[int, Node] = {}
        self._by_path: SortedDict[tuple[str, str], Node] = SortedDict()
        root = Node(pyfuse3.ROOT_INODE, root_bucket, "", {""}, lookups=1)
        self._by_ino[root.ino] = root
        self._by_path[(root.bucket, root.path)] = root
        self.root = root

    def __len__(self) -> int:
        return len(self._by_ino)

    def get(self, ino: int) -> Node:
        try:
            return self._by_ino[ino]
        except KeyError:
            raise fail(errno.ESTALE) from None

    def find(self, bucket: str, path: str) -> Node | None:
        found: Node | None = self._by_path.get((bucket, path))
        return found

    def node(self, bucket: str, path: str, links: tuple[str, ...] = ()) -> Node:
        """The node of a name, numbered now if it has none. A key of a hard link
        group (`links`) is one more name of the node of any other member."""
        node: Node | None = self._by_path.get((bucket, path))
        if node is None:
            for other in links:
                node = self._by_path.get((bucket, other))
                if node is not None:
                    self.add_name(node, path)
                    return node
            node = Node(self._next, bucket, path, {path})
            self._next += 1
            self._by_ino[node.ino] = node
            self._by_path[(bucket, path)] = node
        return node

    def add_name(self, node: Node, path: str) -> None:
        node.names.add(path)
        self._by_path[(node.bucket, path)] = node

    def remove_name(self, node: Node, path: str) -> None:
        """One name of the node is gone (unlinked, replaced); an orphan when none is left."""
        if self._by_path.get((node.bucket, path)) is node:
            del self._by_path[(node.bucket, path)]
        node.names.discard(path)
        if not node.names:
            node.orphan = True
        elif node.path == path:
            node.path = min(node.names)

    def looked_up(self, node: Node) -> Node:
        """Count one more reference the kernel holds (every entry it is handed)."""
        node.lookups += 1
        return node

    def forget(self, ino: int, count: int) -> Node | None:
        """Drop `count` kernel references; return the node if nothing holds it now."""
        node = self._by_ino.get(ino)
        if node is None or node.is_root:
            return None
        node.lookups = max(0, node.lookups - count)
        return self._drop_if_unused(node)

    def released(self, node: Node) -> Node | None:
        """One open handle closed; return the node if nothing holds it now."""
        node.handles -= 1
        return self._drop_if_unused(node)

    def _drop_if_unused(self, node: Node) -> Node | None:
        if node.lookups or node.handles:
            return None
        del self._by_ino[node.ino]
        for path in node.names:
            if self._by_path.get((node.bucket, path)) is node:
                del self._by_path[(node.bucket, path)]
        return node

    def move(self, bucket: str, source: str, target: str) -> None:
        """A key or a whole prefix was renamed: its nodes keep their numbers."""
        if source.endswith("/"):
            moving = list(self._by_path.irange((bucket, source), (bucket, source + "\U0010ffff")))
        else:
            moving = [(bucket, source)] if (bucket, source) in self._by_path else []
        nodes = [(path, self._by_path.pop((bucket, path))) for _, path in moving]
        for old, node in nodes:
            new = target + old[len(source) :]
            node.names.discard(old)
            node.names.add(new)
            if node.path == old:
                node.path = new
            replaced = self._by_path.get((bucket, new))
            if replaced is not None and replaced is not node:
                self.remove_name(replaced, new)
            self._by_path[(bucket, new)] = node

    def exchange(self, bucket: str, first: str, second: str) -> None:
        """Two names (keys, or prefixes with what is under them) swapped places."""
        moves: dict[str, str] = {}
        for source, target_name in ((first, second.rstrip("/")), (second, first.rstrip("/"))):
            target = target_name + "/" if source.endswith("/") else target_name
            if source.endswith("/"):
                paths = [
                    path
                    for _, path in self._by_path.irange(
                        (bucket, source), (bucket, source + "\U0010ffff")
                    )
                ]
            else:
                paths = [source] if (bucket, source) in self._by_path else []
            for path in paths:
                moves[path] = target + path[len(source) :]
        nodes = {path: self._by_path.pop((bucket, path)) for path in moves}
        for path, node in nodes.items():
            node.names.discard(path)
        for path, node in nodes.items():
            new = moves[path]
            node.names.add(new)
            if node.path == path:
                node.path = new
            self._by_path[(bucket, new)] = node

    def orphan(self, node: Node) -> None:
        """Every name of the node is gone while the kernel may still hold it."""
        for path in list(node.names):
            self.remove_name(node, path)
        node.orphan = True

    def nodes_under(self, bucket: str, prefix: str) -> list[Node]:
        keys = self._by_path.irange((bucket, prefix), (bucket, prefix + "\U0010ffff"))
        return [self._by_path[key] for key in keys]
