"""objfs.fuse.tree — what the store holds at a name, and its attributes.

The read side of the face: resolve a name in a directory to a node
(names.py has the rules), list a directory, and build the `EntryAttributes`
of a node from the index. Attributes come from the object's `PosixAttrs`
when it was made or changed through the mount, and from defaults when it
came from S3 (0644 files, 0755 directories, owned by the mount's owner).
Nothing here writes; nothing here does I/O (the index is in memory).
"""

from __future__ import annotations

import errno
import json
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pyfuse3

from objfs.errors import NoSuchBucket, NoSuchKey
from objfs.fuse.errors import fail
from objfs.fuse.inodes import Inodes, Node
from objfs.fuse.names import child_name, is_showable
from objfs.store import ObjectInfo, PosixAttrs, Store
from objfs.store.names import INTERNAL_BUCKET_PREFIX
from objfs.store.types import UNSET_ID, UNSET_MODE

FILE_MODE = stat.S_IFREG | 0o644
DIR_MODE = stat.S_IFDIR | 0o755
DIR_CONTENT_TYPE = "application/x-directory"
SYMLINK_METADATA = "l:symlink"  # metadata name holding a symlink's target (":": not S3 metadata)
BUCKET_POSIX_SETTING = "fuse:posix"  # a bucket directory's attributes, as a bucket setting
BLOCK_BYTES = 128 * 1024  # st_blksize: what cp and friends use as their buffer


@dataclass(frozen=True, slots=True)
class Attrs:
    """The attributes of a node, before they become an `EntryAttributes`."""

    mode: int
    uid: int
    gid: int
    size: int = 0
    nlink: int = 1
    rdev: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    posix_mtime_ns: int | None = None  # an mtime set apart from the object's (utimens)

    def posix(self) -> PosixAttrs:
        return PosixAttrs(
            self.mode,
            self.uid,
            self.gid,
            self.rdev,
            self.atime_ns,
            self.ctime_ns,
            self.posix_mtime_ns,
        )


class Tree:
    """Names and attributes of the store as the mount shows them."""

    def __init__(
        self, store: Store, inodes: Inodes, *, uid: int, gid: int, timeout_s: float
    ) -> None:
        self.store = store
        self.inodes = inodes
        self.uid = uid
        self.gid = gid
        self.timeout_s = timeout_s
        self.started_ns = time.time_ns()
        # (bucket, prefix) -> the directories in it (their prefixes), once listed
        self._subdirs: dict[tuple[str, str], set[str]] = {}

    # -- names ----------------------------------------------------------------------

    def child(self, parent: Node, name: str) -> Node | None:
        """The node at `name` in the directory `parent`, or None."""
        if not parent.is_dir:
            raise fail(errno.ENOTDIR)
        if not is_showable(name):
            return None
        if parent.bucket == "":  # the root of a mount of every bucket
            if name.startswith(INTERNAL_BUCKET_PREFIX):
                return None
            try:
                self.store.head_bucket(name)
            except NoSuchBucket:
                return None
            return self.inodes.node(name, "")
        path = parent.path + name
        if self.dir_exists(parent.bucket, path + "/"):
            return self.inodes.node(parent.bucket, path + "/")
        info = self.object(parent.bucket, path)
        if info is not None:
            return self.inodes.node(parent.bucket, path, info.links)
        return None

    def dir_exists(self, bucket: str, prefix: str) -> bool:
        page = self.store.list_objects(bucket, prefix=prefix, limit=1)
        return bool(page.objects or page.common_prefixes)

    def object(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            return self.store.head_object(bucket, key)
        except (NoSuchKey, NoSuchBucket):
            return None

    def entries(self, node: Node) -> list[tuple[str, str, str]]:
        """(name, bucket, path) of every entry of a directory, in name order."""
        if node.bucket == "":
            return sorted(
                (b.name, b.name, "") for b in self.store.list_buckets() if is_showable(b.name)
            )
        directories: dict[str, str] = {}
        files: dict[str, str] = {}
        for key, is_prefix in self._listing(node.bucket, node.path):
            name = child_name(node.path, key)
            if name is not None:
                (directories if is_prefix else files)[name] = key
        files = {name: key for name, key in files.items() if name not in directories}
        merged = [(name, node.bucket, key) for name, key in directories.items()]
        merged += [(name, node.bucket, key) for name, key in files.items()]
        return sorted(merged)

    def _listing(self, bucket: str, prefix: str) -> Iterator[tuple[str, bool]]:
        start_after = ""
        while True:
            page = self.store.list_objects(
                bucket, prefix=prefix, delimiter="/", start_after=start_after, limit=1000
            )
            for info in page.objects:
                if info.key != prefix:  # a directory's own marker is not an entry
                    yield info.key, False
            for common in page.common_prefixes:
                yield common, True
            if not page.is_truncated or page.next_start_after is None:
                return
            start_after = page.next_start_after

    def subdirectories(self, bucket: str, prefix: str) -> int:
        """How many directories `prefix` holds (for its link count): listed once,
        then kept up to date by `forget_counts`."""
        cached = self._subdirs.get((bucket, prefix))
        if cached is None:
            if bucket == "":
                cached = {b.name for b in self.store.list_buckets() if is_showable(b.name)}
            else:
                cached = {
                    key
                    for key, is_prefix in self._listing(bucket, prefix)
                    if is_prefix and child_name(prefix, key) is not None
                }
            self._subdirs[(bucket, prefix)] = cached
        return len(cached)

    def forget_counts(self, bucket: str, key: str, *, renamed: bool = False) -> None:
        """A key (or, `renamed`, every key under a prefix) changed: bring the kept
        subdirectory sets of the directories above it up to date. Only the one
        directory on its way can have come or gone in each; a file, or a
        directory's marker, changes no count of its own directory."""
        self._subdirs.pop(("", ""), None)
        cut = 0
        while (slash := key.find("/", cut)) >= 0:
            kept = self._subdirs.get((bucket, key[:cut]))
            child = key[: slash + 1]  # a directory in key[:cut]
            if kept is not None and child_name(key[:cut], child) is not None:
                if self.dir_exists(bucket, child):
                    kept.add(child)
                else:
                    kept.discard(child)
            cut = slash + 1
            if cut == len(key):
                break
        if renamed:
            self._subdirs.pop((bucket, key), None)  # a renamed directory: its own too

    # -- attributes -----------------------------------------------------------------

    def attrs(self, node: Node, *, size: int | None = None) -> Attrs:
        """The node's attributes; `size` overrides the stored size (bytes not yet flushed)."""
        if node.bucket == "":
            return Attrs(
                DIR_MODE,
                self.uid,
                self.gid,
                nlink=2 + self.subdirectories("", ""),
                atime_ns=self.started_ns,
                mtime_ns=self.started_ns,
                ctime_ns=self.started_ns,
            )
        if node.path == "":
            return self.bucket_attrs(node.bucket)
        info = self.object(node.bucket, node.path)
        if node.is_dir:
            if info is None and not self.dir_exists(node.bucket, node.path):
                raise fail(errno.ENOENT)
            nlink = 2 + self.subdirectories(node.bucket, node.path)
            return self._from_object(info, DIR_MODE, nlink, None)
        if info is None:
            raise fail(errno.ENOENT)
        links = 0 if node.orphan else max(1, len(info.links))
        return self._from_object(info, FILE_MODE, links, size)

    def _from_object(
        self, info: ObjectInfo | None, default_mode: int, nlink: int, size: int | None
    ) -> Attrs:
        if info is None:  # a directory that only exists as the prefix of its keys
            bucket_created = self.started_ns
            return Attrs(
                default_mode,
                self.uid,
                self.gid,
                nlink=nlink,
                atime_ns=bucket_created,
                mtime_ns=bucket_created,
                ctime_ns=bucket_created,
            )
        posix = info.posix
        mtime = info.mtime_ns
        stored = info.size_bytes if size is None else max(size, 0)
        if posix is None:
            return Attrs(default_mode, self.uid, self.gid, stored, nlink, 0, mtime, mtime, mtime)
        mode = posix.mode if stat.S_IFMT(posix.mode) else posix.mode | stat.S_IFMT(default_mode)
        return Attrs(
            default_mode if posix.mode == UNSET_MODE else mode,
            self.uid if posix.uid == UNSET_ID else posix.uid,
            self.gid if posix.gid == UNSET_ID else posix.gid,
            stored,
            nlink,
            posix.rdev,
            posix.atime_ns,  # 0 is a time too (the epoch): the mount always sets it
            mtime if posix.mtime_ns is None else posix.mtime_ns,
            max(posix.ctime_ns, mtime),  # every write moves mtime, and ctime with it
            posix.mtime_ns,
        )

    def bucket_attrs(self, bucket: str) -> Attrs:
        try:
            info = self.store.head_bucket(bucket)
        except NoSuchBucket:
            raise fail(errno.ENOENT) from None
        nlink = 2 + self.subdirectories(bucket, "")
        raw = info.setting(BUCKET_POSIX_SETTING)
        if raw is None:
            created = info.created_ns
            return Attrs(DIR_MODE, self.uid, self.gid, 0, nlink, 0, created, created, created)
        saved = json.loads(raw)
        return Attrs(**{**saved, "nlink": nlink, "size": 0})

    def entry(self, node: Node, attrs: Attrs) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = node.ino
        entry.generation = 0
        entry.entry_timeout = self.timeout_s
        entry.attr_timeout = self.timeout_s
        entry.st_mode = attrs.mode
        entry.st_nlink = attrs.nlink
        entry.st_uid = attrs.uid
        entry.st_gid = attrs.gid
        entry.st_rdev = attrs.rdev
        entry.st_size = attrs.size
        entry.st_blksize = BLOCK_BYTES
        entry.st_blocks = (attrs.size + 511) // 512
        entry.st_atime_ns = attrs.atime_ns
        entry.st_mtime_ns = attrs.mtime_ns
        entry.st_ctime_ns = attrs.ctime_ns
        return entry
