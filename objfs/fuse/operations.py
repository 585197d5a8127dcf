"""objfs.fuse.operations — the pyfuse3 handlers: parse, call the core, answer.

Each handler checks what POSIX asks of the name (EISDIR, ENOTDIR, ENOTEMPTY,
EXDEV ...) with `Tree`, makes one core call (or two, where the core has no
single one yet), and answers with the node's attributes. Permission bits are
checked by the kernel (`default_permissions`); this face stores them
faithfully. Every handler runs under `errors.guarded`.
"""

from __future__ import annotations

import errno
import json
import logging
import mimetypes
import os
import stat
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace

import pyfuse3
import trio

from objfs.errors import NoSpace, NoSuchBucket, ObjfsError
from objfs.fuse import xattrs
from objfs.fuse.coherence import Coherence
from objfs.fuse.errors import fail, guarded
from objfs.fuse.files import OpenFile, settle_etag
from objfs.fuse.inodes import Inodes, Node
from objfs.fuse.names import decode_name, parent_of
from objfs.fuse.tree import (
    BUCKET_POSIX_SETTING,
    DIR_CONTENT_TYPE,
    DIR_MODE,
    SYMLINK_METADATA,
    Attrs,
    Tree,
)
from objfs.metrics import Metrics
from objfs.store import PosixAttrs, Store
from objfs.store.names import MAX_OBJECT_BYTES

log = logging.getLogger(__name__)

ORPHAN_BUCKET = ".objfs-fuse-orphans"  # files unlinked while open live here until released
_SETID = stat.S_ISUID | stat.S_ISGID


@dataclass(slots=True)
class Handle:
    node: Node
    file: OpenFile
    drop_setgid: bool = False  # the opener is outside the file's group (see _drops_setgid)


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        store: Store,
        *,
        bucket: str,
        uid: int,
        gid: int,
        timeout_s: float,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.metrics = metrics  # `guarded` counts each call and error here
        self.inodes = Inodes(bucket)
        self.tree = Tree(store, self.inodes, uid=uid, gid=gid, timeout_s=timeout_s)
        self._files: dict[int, OpenFile] = {}  # ino -> the open file, while any handle is open
        self._handles: dict[int, Handle] = {}
        self._dirs: dict[int, tuple[Node, list[tuple[str, str, str]]]] = {}
        self._next_fh = 1
        self._orphans = 0
        self.coherence = Coherence(self.inodes, self.tree)  # S3's changes -> the kernel
        self.nursery: trio.Nursery | None = None  # the mount's: held readers live there

    async def prepare(self) -> None:
        """Before mounting: the internal bucket for open-unlinked files, emptied of
        what a killed node left there."""
        try:
            self.store.head_bucket(ORPHAN_BUCKET)
        except NoSuchBucket:
            await self.store.create_bucket(ORPHAN_BUCKET, internal=True)
        while page := self.store.list_objects(ORPHAN_BUCKET, limit=1000).objects:
            for info in page:
                await self.store.delete_object(ORPHAN_BUCKET, info.key)

    async def close(self) -> None:
        """After unmounting: store what open files still hold in memory."""
        for file in list(self._files.values()):
            try:
                await file.sync()
            except ObjfsError as exc:
                log.error(
                    "%s/%s: unflushed writes lost at unmount: %s",
                    file.node.bucket,
                    file.node.path,
                    exc,
                )

    # -- helpers --------------------------------------------------------------------

    def _entry(self, node: Node) -> pyfuse3.EntryAttributes:
        attrs = self.tree.attrs(node)
        file = self._files.get(node.ino)
        if file is not None and file.end and file.written_ns is not None:
            # Writes not stored yet: their size, and their time as mtime and ctime.
            written = file.written_ns
            attrs = replace(
                attrs,
                size=max(file.end, attrs.size),
                mtime_ns=max(attrs.mtime_ns, written),
                ctime_ns=max(attrs.ctime_ns, written),
            )
        return self.tree.entry(node, attrs)

    def _attrs(self, node: Node) -> Attrs:
        return self.tree.attrs(node)

    def _dir(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if not node.is_dir:
            raise fail(errno.ENOTDIR)
        return node

    def _new_path(self, parent: Node, name: bytes) -> tuple[str, str]:
        """(name, key) for a new object in `parent`; EEXIST if the name is taken."""
        text = decode_name(name)
        if parent.bucket == "":
            raise fail(errno.EPERM)  # only directories (buckets) at the root of every bucket
        if self.tree.child(parent, text) is not None:
            raise fail(errno.EEXIST)
        return text, parent.path + text

    def _new_owner(self, parent: Node, ctx: pyfuse3.RequestContext, mode: int) -> tuple[int, int]:
        """(gid, mode) of a new entry: a set-group-ID directory passes on its group
        (and, to a directory, the bit); otherwise the caller's group."""
        parent_attrs = self._attrs(parent)
        if parent_attrs.mode & stat.S_ISGID:
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
            return parent_attrs.gid, mode
        return ctx.gid, mode

    async def _touch_dir(self, node: Node, now: int) -> None:
        """A directory's entries changed: its mtime and ctime are now. The core does
        it for directories with a marker (in the same record); a bucket made or
        changed through the mount keeps its times in a setting, done here."""
        if node.bucket == "" or node.path != "":
            return
        if self.store.head_bucket(node.bucket).setting(BUCKET_POSIX_SETTING) is not None:
            attrs = replace(self._attrs(node), mtime_ns=now, ctime_ns=now)
            await self._set_bucket_attrs(node.bucket, attrs)

    async def _set_bucket_attrs(self, bucket: str, attrs: Attrs) -> None:
        saved = {
            "mode": attrs.mode,
            "uid": attrs.uid,
            "gid": attrs.gid,
            "atime_ns": attrs.atime_ns,
            "mtime_ns": attrs.mtime_ns,
            "ctime_ns": attrs.ctime_ns,
        }
        await self.store.set_bucket_setting(
            bucket, BUCKET_POSIX_SETTING, json.dumps(saved).encode()
        )

    def _open_file(self, node: Node, *, fresh: bool) -> tuple[int, OpenFile]:
        """A new handle of the node's open file: (fh, the file)."""
        file = self._files.get(node.ino)
        if file is None:
            assert self.nursery is not None, "files are opened only while mounted"
            file = self._files[node.ino] = OpenFile(self.store, node, self.nursery, fresh=fresh)
        node.handles += 1
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = Handle(node, file)
        return fh, file

    def _handle(self, fh: int) -> Handle:
        try:
            return self._handles[fh]
        except KeyError:
            raise fail(errno.EBADF) from None

    async def _drop(self, node: Node | None) -> None:
        """Nothing holds the node any more: an orphan's object goes."""
        if node is None or not node.orphan or node.bucket != ORPHAN_BUCKET:
            return
        try:
            await self.store.delete_object(ORPHAN_BUCKET, node.path)
        except ObjfsError as exc:
            log.error("could not delete the unlinked file %s: %s", node.path, exc)

    async def _set_aside(self, node: Node) -> None:
        """Unlinked (or replaced) while open: move the object out of sight until released."""
        file = self._files.get(node.ino)
        if file is not None:
            try:
                await file.flush_data()
            except NoSpace:
                pass  # the file tells it at its next write, fsync or close; the name goes
        mtime_ns = self.store.head_object(node.bucket, node.path).mtime_ns
        self._orphans += 1
        aside = f"{self.tree.started_ns}-{self._orphans}"
        # The source goes right after: a full store must still let a file go.
        await self.store.copy_object(node.bucket, node.path, ORPHAN_BUCKET, aside, use_reserve=True)
        await self.store.set_attributes(ORPHAN_BUCKET, aside, mtime_ns=mtime_ns)  # a copy's is now
        await self.store.delete_object(node.bucket, node.path)
        self.inodes.orphan(node)
        node.bucket, node.path = ORPHAN_BUCKET, aside

    async def _keep_parent(self, bucket: str, leaving: str) -> None:
        """`leaving` (a key or a directory's prefix) is about to go from its directory:
        if that directory exists only through it (no marker: S3 made it), give the
        directory its marker, so it stays as POSIX says it does."""
        prefix, _ = parent_of(leaving)
        if prefix == "" or self.tree.object(bucket, prefix) is not None:
            return
        page = self.store.list_objects(bucket, prefix=prefix, delimiter="/", limit=2)
        if any(o.key != leaving for o in page.objects) or any(
            p != leaving for p in page.common_prefixes
        ):
            return
        now = time.time_ns()
        attrs = Attrs(DIR_MODE, self.tree.uid, self.tree.gid, 0, 2, 0, now, now, now)
        await self._make_marker(bucket, prefix, attrs)

    # -- names ----------------------------------------------------------------------

    @guarded
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        await self.store.barrier()  # in a cluster: close-to-open across nodes
        parent = self._dir(parent_inode)
        if name == b".":
            node = parent
        elif name == b"..":
            node = self._parent(parent)
        else:
            found = self.tree.child(parent, decode_name(name))
            if found is None:
                raise fail(errno.ENOENT)
            node = found
        entry = self._entry(node)
        self.inodes.looked_up(node)
        return entry

    def _parent(self, node: Node) -> Node:
        if node.is_root:
            return node
        if node.path == "":
            return self.inodes.root
        prefix, _ = parent_of(node.path)
        if prefix == "" and self.inodes.root.bucket == node.bucket:
            return self.inodes.root
        return self.inodes.node(node.bucket, prefix)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            try:
                await self._drop(self.inodes.forget(ino, count))
            except Exception:  # forget has no answer to fail with
                log.exception("forget of inode %d", ino)

    @guarded
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._entry(self.inodes.get(inode))

    @guarded
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self.inodes.get(inode)
        if node.bucket == "":
            raise fail(errno.EPERM)  # the root of every bucket keeps its attributes
        now = time.time_ns()
        file = self._files.get(node.ino)
        if file is not None:  # bytes stored later would move the times set now
            await file.flush_data()
        if fields.update_size:
            if node.is_dir:
                raise fail(errno.EISDIR)
            file = self._files.get(node.ino)
            if file is not None:
                await file.truncate(attr.st_size)  # its ETag is settled when it closes
            else:
                await self.store.truncate(node.bucket, node.path, attr.st_size)
                await settle_etag(self.store, node.bucket, node.path)
        current = self._attrs(node)
        changed = replace(current, ctime_ns=now)
        if fields.update_size and self._drops_setgid(node, ctx):
            changed = replace(changed, mode=changed.mode & ~stat.S_ISGID)
        if fields.update_mode:
            changed = replace(changed, mode=stat.S_IFMT(current.mode) | stat.S_IMODE(attr.st_mode))
        if fields.update_uid:
            changed = replace(changed, uid=attr.st_uid)
        if fields.update_gid:
            changed = replace(changed, gid=attr.st_gid)
        if fields.update_atime:
            changed = replace(changed, atime_ns=attr.st_atime_ns)
        if fields.update_mtime:  # kept apart from the object's time (S3's Last-Modified)
            changed = replace(changed, mtime_ns=attr.st_mtime_ns, posix_mtime_ns=attr.st_mtime_ns)
        touched = (
            changed.mode != current.mode
            or fields.update_mode
            or fields.update_uid
            or fields.update_gid
            or fields.update_atime
            or fields.update_mtime
            or fields.update_ctime
        )
        if touched:
            if node.path == "":
                await self._set_bucket_attrs(node.bucket, changed)
            elif node.is_dir and self.tree.object(node.bucket, node.path) is None:
                await self._make_marker(node.bucket, node.path, changed)
            else:
                await self.store.set_attributes(node.bucket, node.path, posix=changed.posix())
        return self._entry(node)

    async def _make_marker(self, bucket: str, prefix: str, attrs: Attrs) -> None:
        """Give a directory that only exists as a prefix its marker, to hold attributes.

        Even on a full store: an unlink, rename or attribute change needs it, and a
        directory gets one marker at most (it has names under it already)."""
        await self.store.put_object(
            bucket,
            prefix,
            b"",
            content_type=DIR_CONTENT_TYPE,
            posix=attrs.posix(),
            use_reserve=True,
        )

    @guarded
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.inodes.get(inode)
        info = None if node.is_dir else self.tree.object(node.bucket, node.path)
        target = None if info is None else dict(info.metadata).get(SYMLINK_METADATA)
        if target is None:
            raise fail(errno.EINVAL)
        return target.encode("utf-8")

    # -- making and removing names ------------------------------------------------

    async def _make(
        self,
        parent_inode: int,
        name: bytes,
        mode: int,
        ctx: pyfuse3.RequestContext,
        *,
        rdev: int = 0,
        body: bytes = b"",
        metadata: dict[str, str] | None = None,
    ) -> Node:
        parent = self._dir(parent_inode)
        text, key = self._new_path(parent, name)
        gid, mode = self._new_owner(parent, ctx, mode)
        if stat.S_ISDIR(mode):
            key += "/"
        now = time.time_ns()
        posix = PosixAttrs(mode, ctx.uid, gid, rdev, now, now)
        if stat.S_ISDIR(mode):
            content_type = DIR_CONTENT_TYPE
        else:
            content_type = mimetypes.guess_type(text)[0] or "application/octet-stream"
        await self.store.put_object(
            parent.bucket,
            key,
            body,
            content_type=content_type,
            metadata=metadata,
            posix=posix,
            if_none_match=True,
        )
        await self._touch_dir(parent, now)
        return self.inodes.node(parent.bucket, key)

    @guarded
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        node = await self._make(parent_inode, name, stat.S_IFREG | stat.S_IMODE(mode), ctx)
        fh, _ = self._open_file(node, fresh=True)
        return pyfuse3.FileInfo(fh=fh, keep_cache=False), self._looked_up(node)

    @guarded
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if stat.S_IFMT(mode) == 0:
            mode |= stat.S_IFREG
        node = await self._make(parent_inode, name, mode, ctx, rdev=rdev)
        return self._looked_up(node)

    @guarded
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._dir(parent_inode)
        if parent.bucket == "":  # a new top-level directory is a new bucket
            text = decode_name(name)
            await self.store.create_bucket(text)
            node = self.inodes.node(text, "")
            now = time.time_ns()
            attrs = Attrs(
                stat.S_IFDIR | stat.S_IMODE(mode), ctx.uid, ctx.gid, 0, 2, 0, now, now, now
            )
            await self._set_bucket_attrs(text, attrs)
            return self._looked_up(node)
        node = await self._make(parent_inode, name, stat.S_IFDIR | stat.S_IMODE(mode), ctx)
        return self._looked_up(node)

    @guarded
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        try:
            text = target.decode("utf-8")
        except UnicodeDecodeError:
            raise fail(errno.EINVAL) from None
        node = await self._make(
            parent_inode,
            name,
            stat.S_IFLNK | 0o777,
            ctx,
            body=target,
            metadata={SYMLINK_METADATA: text},
        )
        return self._looked_up(node)

    def _looked_up(self, node: Node) -> pyfuse3.EntryAttributes:
        entry = self._entry(node)
        self.inodes.looked_up(node)
        return entry

    @guarded
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = self.inodes.get(inode)
        parent = self._dir(new_parent_inode)
        if node.is_dir or node.orphan:
            raise fail(errno.EPERM if node.is_dir else errno.ENOENT)
        if parent.bucket != node.bucket:
            raise fail(errno.EXDEV)
        _, key = self._new_path(parent, new_name)
        await self.store.link_object(node.bucket, node.path, key)
        self.inodes.add_name(node, key)
        now = time.time_ns()
        await self._touch_dir(parent, now)
        return self._looked_up(node)

    def _other_names(self, node: Node, key: str) -> bool:
        """Has the file names besides `key` (hard links)? The node learns them all."""
        info = self.tree.object(node.bucket, key)
        others = [name for name in (info.links if info else ()) if name != key]
        for name in others:
            self.inodes.add_name(node, name)
        return bool(others)

    @guarded
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        parent = self._dir(parent_inode)
        node = self.tree.child(parent, decode_name(name))
        if node is None:
            raise fail(errno.ENOENT)
        if node.is_dir:
            raise fail(errno.EISDIR)
        key = parent.path + decode_name(name)
        now = time.time_ns()
        await self._keep_parent(node.bucket, key)
        if self._other_names(node, key):  # one name of several goes; the file stays
            await self.store.delete_object(node.bucket, key)
            self.inodes.remove_name(node, key)
        elif node.handles:
            await self._set_aside(node)
        else:
            await self.store.delete_object(node.bucket, node.path)
            self.inodes.orphan(node)
        await self._touch_dir(parent, now)

    @guarded
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        parent = self._dir(parent_inode)
        node = self.tree.child(parent, decode_name(name))
        if node is None:
            raise fail(errno.ENOENT)
        if not node.is_dir:
            raise fail(errno.ENOTDIR)
        if node.path == "":
            await self.store.delete_bucket(node.bucket)  # BucketNotEmpty: ENOTEMPTY
            self.inodes.orphan(node)
            return
        if self.tree.entries(node):
            raise fail(errno.ENOTEMPTY)
        under = self.store.list_objects(node.bucket, prefix=node.path, limit=2).objects
        if any(info.key != node.path for info in under):
            raise fail(errno.ENOTEMPTY)  # keys the mount cannot show still live under it
        await self._keep_parent(node.bucket, node.path)
        await self.store.delete_object(node.bucket, node.path)
        self.inodes.orphan(node)
        await self._touch_dir(parent, time.time_ns())

    @guarded
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        old_parent, new_parent = self._dir(parent_inode_old), self._dir(parent_inode_new)
        if flags & ~(pyfuse3.RENAME_NOREPLACE | pyfuse3.RENAME_EXCHANGE) or flags == (
            pyfuse3.RENAME_NOREPLACE | pyfuse3.RENAME_EXCHANGE
        ):
            raise fail(errno.EINVAL)
        if old_parent.bucket == "" or new_parent.bucket == "":
            raise fail(errno.EPERM)  # buckets are not renamed
        if old_parent.bucket != new_parent.bucket:
            raise fail(errno.EXDEV)
        source = self.tree.child(old_parent, decode_name(name_old))
        if source is None:
            raise fail(errno.ENOENT)
        new_text = decode_name(name_new)
        target = self.tree.child(new_parent, new_text)
        if target is source:
            return
        if target is not None and flags & pyfuse3.RENAME_NOREPLACE:
            raise fail(errno.EEXIST)
        if flags & pyfuse3.RENAME_EXCHANGE:
            if target is None:
                raise fail(errno.ENOENT)
            first = source.path if source.is_dir else old_parent.path + decode_name(name_old)
            second = target.path if target.is_dir else new_parent.path + new_text
            async with AsyncExitStack() as stack:
                await self._hold_files(stack, source.bucket, first, second)
                await self.store.exchange(source.bucket, first, second)
                self.inodes.exchange(source.bucket, first, second)
            return
        bucket = source.bucket
        if source.is_dir:
            target_path = new_parent.path + new_text + "/"
            if target_path.startswith(source.path):
                raise fail(errno.EINVAL)  # into itself
            if target is not None:
                if not target.is_dir:
                    raise fail(errno.ENOTDIR)
                if self.tree.entries(target):
                    raise fail(errno.ENOTEMPTY)
            async with AsyncExitStack() as stack:
                await self._hold_files(stack, bucket, source.path)
                if old_parent is not new_parent:
                    await self._keep_parent(bucket, source.path)
                await self.store.rename_prefix(bucket, source.path, target_path)
                if target is not None:  # only now: the core may refuse (ENOTEMPTY)
                    self.inodes.orphan(target)
                self.inodes.move(bucket, source.path, target_path)
        else:
            target_path = new_parent.path + new_text
            if target is not None and target.is_dir:
                raise fail(errno.EISDIR)
            if target is not None and self._other_names(target, target_path):
                self.inodes.remove_name(target, target_path)
            elif target is not None and target.handles:
                await self._set_aside(target)
            elif target is not None:
                self.inodes.orphan(target)
            async with AsyncExitStack() as stack:
                await self._hold_files(stack, bucket, old_parent.path + decode_name(name_old))
                source_key = old_parent.path + decode_name(name_old)  # one of its names
                if old_parent is not new_parent:
                    await self._keep_parent(bucket, source_key)
                await self.store.rename_object(bucket, source_key, target_path)
                self.inodes.move(bucket, source_key, target_path)
        now = time.time_ns()
        await self._touch_dir(old_parent, now)
        if new_parent is not old_parent:
            await self._touch_dir(new_parent, now)

    async def _hold_files(self, stack: AsyncExitStack, bucket: str, *paths: str) -> None:
        """Store what open files at `paths` (keys, or every key under prefixes) hold,
        and keep them from storing more until `stack` closes (their keys move).
        Each file is held once, whatever names it has among them."""
        held: dict[int, Node] = {}
        for path in paths:
            nodes = self.inodes.nodes_under(bucket, path) if path.endswith("/") else []
            found = self.inodes.find(bucket, path)
            held.update((node.ino, node) for node in [*nodes, *([found] if found else [])])
        for node in held.values():
            file = self._files.get(node.ino)
            if file is not None:
                await stack.enter_async_context(file.lock)
                try:
                    await file._flush_locked()
                except NoSpace:
                    pass  # the file tells it at its next write, fsync or close; it moves

    # -- files ----------------------------------------------------------------------

    @guarded
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        await self.store.barrier()  # in a cluster: close-to-open across nodes
        node = self.inodes.get(inode)
        if node.is_dir:
            raise fail(errno.EISDIR)
        info = self.tree.object(node.bucket, node.path)
        if info is None:
            raise fail(errno.ENOENT)
        truncating = bool(flags & os.O_TRUNC)  # Linux truncates even when opened read-only
        fh, file = self._open_file(node, fresh=truncating or info.size_bytes == 0)
        handle = self._handles[fh]
        handle.drop_setgid = self._drops_setgid(node, ctx)
        if truncating:  # even of an empty file: its mtime and ctime move (POSIX)
            await file.truncate(0)
            await self._drop_setgid(handle)
        return pyfuse3.FileInfo(fh=fh, keep_cache=False)

    def _drops_setgid(self, node: Node, ctx: pyfuse3.RequestContext) -> bool:
        """Does a change of the file's bytes by this caller clear its setgid bit? Linux:
        yes for a caller outside the file's group (without CAP_FSETID). With group x
        the kernel clears it itself; without, the filesystem must."""
        if ctx.uid == 0:
            return False
        attrs = self._attrs(node)
        if not attrs.mode & stat.S_ISGID or attrs.mode & stat.S_IXGRP:
            return False
        return attrs.gid not in {ctx.gid, *pyfuse3.get_sup_groups(ctx.pid)}

    async def _drop_setgid(self, handle: Handle) -> None:
        if not handle.drop_setgid:
            return
        handle.drop_setgid = False
        node = handle.node
        attrs = self._attrs(node)
        if attrs.mode & stat.S_ISGID:
            posix = replace(attrs, mode=attrs.mode & ~stat.S_ISGID, ctime_ns=time.time_ns())
            await self.store.set_attributes(node.bucket, node.path, posix=posix.posix())

    @guarded
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self._handle(fh).file.read(off, size)

    @guarded
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self._handle(fh)
        if off + len(buf) > MAX_OBJECT_BYTES:  # now, not when the bytes are stored (Linux's rule)
            if off >= MAX_OBJECT_BYTES:
                raise fail(errno.EFBIG)
            buf = buf[: MAX_OBJECT_BYTES - off]
        if handle.drop_setgid:
            await self._drop_setgid(handle)
        await handle.file.write(off, buf)
        return len(buf)

    @guarded
    async def flush(self, fh: int) -> None:
        await self._handle(fh).file.sync()

    @guarded
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self._handle(fh).file.sync()

    @guarded
    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is None:
            return
        node = handle.node
        try:
            if node.handles == 1:
                await handle.file.sync()
        finally:
            if node.handles == 1:
                file = self._files.pop(node.ino, None)
                if file is not None:
                    file.close_reader()
            await self._drop(self.inodes.released(node))

    # -- directories ----------------------------------------------------------------

    @guarded
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        await self.store.barrier()  # in a cluster: close-to-open across nodes
        node = self._dir(inode)
        fh = self._next_fh
        self._next_fh += 1
        self._dirs[fh] = (node, [])
        return fh

    @guarded
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        try:
            node, entries = self._dirs[fh]
        except KeyError:
            raise fail(errno.EBADF) from None
        if start_id == 0 or not entries:  # a fresh listing: offsets index this snapshot
            entries = [(".", node.bucket, node.path), ("..", "", ""), *self.tree.entries(node)]
            self._dirs[fh] = (node, entries)
        for position in range(start_id, len(entries)):
            name, bucket, path = entries[position]
            if name == ".":
                child = node
            elif name == "..":
                child = self._parent(node)
            else:
                child = self.inodes.node(bucket, path)
            try:
                entry = self._entry(child)
            except pyfuse3.FUSEError:
                continue  # gone since the listing was taken
            if not pyfuse3.readdir_reply(token, name.encode("utf-8"), entry, position + 1):
                return
            if name not in (".", ".."):  # the kernel counts no lookup for these two
                self.inodes.looked_up(child)

    @guarded
    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    @guarded
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return  # every directory change is durable when its call returns

    @guarded
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        stats = self.store.statistics()
        policy = self.store.policy
        usable = policy.data_fragments / policy.width
        data = pyfuse3.StatvfsData()
        data.f_bsize = 4096
        data.f_frsize = 4096
        data.f_blocks = int(stats.device_bytes * usable) // 4096
        data.f_bfree = int(stats.free_bytes * usable) // 4096
        # What a user can still write: not the space kept for checkpoints, nor
        # space stripes cannot use (the core's count).
        data.f_bavail = int(stats.available_bytes * usable) // 4096
        data.f_files = stats.objects + (1 << 32)
        data.f_ffree = 1 << 32
        data.f_favail = data.f_ffree
        data.f_namemax = 255
        return data

    # -- extended attributes --------------------------------------------------------

    def _metadata_node(self, inode: int) -> Node:
        node = self.inodes.get(inode)
        if node.bucket == "" or node.path == "":
            raise fail(errno.ENOTSUP)  # buckets and the root keep no extended attributes
        return node

    @guarded
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        node = self._metadata_node(inode)
        info = self.tree.object(node.bucket, node.path)
        metadata = {} if info is None else dict(info.metadata)
        value = xattrs.value_of(metadata, name)
        if value is None:
            raise fail(pyfuse3.ENOATTR)
        return value

    @guarded
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        node = self._metadata_node(inode)
        info = self.tree.object(node.bucket, node.path)
        return xattrs.names_of(dict(() if info is None else info.metadata))

    @guarded
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        if len(value) > xattrs.MAX_VALUE_BYTES:
            raise fail(errno.E2BIG)
        node = self._metadata_node(inode)
        metadata = await self._metadata_of(node)
        xattrs.remove(metadata, name)
        metadata.update([xattrs.stored_item(name, value)])
        await self._set_metadata(node, metadata)

    @guarded
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        node = self._metadata_node(inode)
        metadata = await self._metadata_of(node)
        if not xattrs.remove(metadata, name):
            raise fail(pyfuse3.ENOATTR)
        await self._set_metadata(node, metadata)

    async def _set_metadata(self, node: Node, metadata: dict[str, str]) -> None:
        """New extended attributes, and the ctime that moves with them, in one record."""
        posix = replace(self._attrs(node), ctime_ns=time.time_ns()).posix()
        await self.store.set_attributes(node.bucket, node.path, metadata=metadata, posix=posix)

    async def _metadata_of(self, node: Node) -> dict[str, str]:
        info = self.tree.object(node.bucket, node.path)
        if info is None and node.is_dir:
            await self._make_marker(node.bucket, node.path, self._attrs(node))
            return {}
        if info is None:
            raise fail(errno.ENOENT)
        return dict(info.metadata)
