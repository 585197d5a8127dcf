"""objfs.store.store — `Store`, the one API both faces call, and `open_store`.

Owns the commit protocol: check preconditions, store new bytes, then append one
record; the WAL makes it durable, applies it to the index, and only then does the
call return. Index reads are synchronous (no I/O); anything that can block is
async. Also owns the checkpointer, which writes whole-index checkpoints into the
older A/B slot and trims the WAL behind them (docs/concurrency.md).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Protocol, final

import trio

from objfs.config import StoreConfig
from objfs.errors import (
    InvalidArgument,
    InvalidBucketName,
    InvalidRange,
    NoSpace,
    OutcomeUnknown,
    PreconditionFailed,
    ReadOnly,
)
from objfs.store import links, names
from objfs.store import pieces as piece_math
from objfs.store.checkpoint import CheckpointPointer
from objfs.store.checkpointer import Checkpointer
from objfs.store.datapath import DataPath
from objfs.store.device import BlockDevice
from objfs.store.erasure import Policy
from objfs.store.health import Health
from objfs.store.index import ObjectIndex, version_segments
from objfs.store.keylocks import KeyLocks
from objfs.store.listing import VersionsPage, list_page, list_versions_page
from objfs.store.packing import held_beyond, unpack_segment
from objfs.store.reader import ObjectReader
from objfs.store.records import (
    CreateBucket,
    DeleteBucket,
    DeleteObject,
    Exchange,
    LinkKey,
    MoveSegment,
    PutVersion,
    Record,
    RenameKey,
    RenamePrefix,
    SetAttributes,
    SetBucketSetting,
    SetBucketVersioning,
    Truncate,
    WriteAt,
    change_of,
    new_segments,
)
from objfs.store.recovery import rebuild_allocators
from objfs.store.scrub import Scrubber
from objfs.store.space import Space
from objfs.store.superblock import Superblock
from objfs.store.types import (
    NULL_VERSION,
    BucketInfo,
    BucketName,
    Change,
    ComposeSource,
    DeleteResult,
    Extent,
    ListPage,
    ObjectInfo,
    ObjectKey,
    ObjectVersion,
    Piece,
    PosixAttrs,
    Segment,
    SegmentId,
    StoreStatistics,
    VersionId,
    Versioning,
    object_info,
)
from objfs.store.wal import Wal
from objfs.store.writer import ObjectWriter

log = logging.getLogger(__name__)
Clock = Callable[[], int]


class Committer(Protocol):
    """Where records go instead of the WAL (a cluster's Raft log)."""

    async def append(self, record: Record) -> object: ...

    async def barrier(self) -> None: ...


@final
class Store:
    """The storage core's API. Built and run by `open_store` (objfs/store/opening.py)."""

    def __init__(
        self,
        config: StoreConfig,
        *,
        devices: dict[int, BlockDevice],
        superblocks: dict[int, Superblock],
        index: ObjectIndex,
        space: Space,
        datapath: DataPath,
        wal: Wal,
        checkpointer: Checkpointer,
        scrubber: Scrubber,
        clock: Clock,
        replayed_records: int,
    ) -> None:
        self.config = config
        self._devices = devices
        self._superblocks = superblocks
        self._index = index
        self._space = space
        self._datapath = datapath
        self._wal = wal
        self._checkpointer = checkpointer
        self.scrubber = scrubber  # scrub passes, heal passes, the heal queue
        self._clock = clock
        self._locks = KeyLocks()
        self._watchers: list[Callable[[Change], None]] = []
        self._committer: Committer | None = None  # a cluster's log, instead of the WAL
        # In a cluster: told of the segments each applied record references (the
        # node's pending fragments are then claimed; objfs.cluster.pending).
        self.on_new_segments: Callable[[list[Segment]], None] = lambda segments: None
        self._space_rebuilt = False  # a cluster node's, from the replayed log (rebuild_space)
        self.replayed_records = replayed_records

    # -- checkpoints ----------------------------------------------------------------

    async def checkpoint(self, *, force: bool = False) -> bool:
        """Write a checkpoint of the index now if it would cover anything new.

        Returns whether one was written (never in a cluster: the log is the record).

        Raises:
            ReadOnly: opened read-only, or the WAL has failed.
            NoSpace: no room for the checkpoint body.
        """
        if self.config.read_only:
            raise ReadOnly("no checkpoint: the store was opened read-only")
        return await self._checkpointer.checkpoint(force=force)

    # -- buckets --------------------------------------------------------------------

    async def _commit(self, record: Record) -> None:
        if self.config.read_only:
            raise ReadOnly("the store was opened read-only")
        if self._committer is not None:
            await self._committer.append(record)  # applied (and watchers told) on delivery
            return
        await self._wal.append(record)
        self._tell_watchers(record)

    def _tell_watchers(self, record: Record) -> None:
        if self._watchers:
            change = change_of(record)
            if change is not None:
                for watcher in list(self._watchers):
                    try:
                        watcher(change)
                    except Exception:  # the record is durable and applied: report, go on
                        log.exception("a watcher failed on %r", change)

    # -- in a cluster -----------------------------------------------------------------

    def replicate_with(self, committer: Committer) -> None:
        """From now on every record goes through `committer` (a cluster's Raft log)
        instead of the WAL, and reaches the index through `apply_replicated` on
        every node. No checkpoint is written any more: the log rebuilds the index
        at each start (docs/cluster.md). Fragments on other nodes' devices are
        theirs to free."""
        self._committer = committer
        self._checkpointer.suspend()
        self._space.foreign_devices = True

    async def barrier(self) -> None:
        """Before a face reads: in a cluster, wait until this node has applied every
        change committed (by any node) before now; alone, nothing to wait for.

        Raises:
            Unavailable: the cluster cannot commit now.
        """
        if self._committer is not None:
            await self._committer.barrier()

    @property
    def replicated(self) -> bool:
        return self._committer is not None

    def apply_replicated(self, record: Record) -> None:
        """Apply one committed record, on the event loop, in log order, on every node.

        Raises:
            ObjfsError: the record does not apply (the index is unchanged; every
                node raises the same).
        """
        freed = self._index.apply(record)
        added = new_segments(record)
        if self._space_rebuilt:  # before, the space map is the empty local index's
            self._space.free_segments(freed)
            # This node's extents a record names are in use: allocated for it, or
            # taken back from the pending file. Should one be free, take it now
            # rather than hand it out twice.
            self._space.take_segments(added)
        self.on_new_segments(added)
        self._tell_watchers(record)

    def rebuild_space(self) -> None:
        """The space map from the index, after a cluster node has replayed the log:
        this node's devices minus what the index and the checkpoint slots reference."""
        reserved = [e for p in self.pointers.values() for e in p.extents()]
        self._space.rebuild(
            rebuild_allocators(self._superblocks, self._index, reserved, foreign_devices=True)
        )
        self._space_rebuilt = True

    def install_index(self, index: ObjectIndex) -> None:
        """A cluster node's index becomes `index` (a Raft snapshot's), in place.

        Before `rebuild_space` there is nothing more to do. After it (a node that
        fell behind while serving), segments no longer referenced are freed (when
        their readers are done) and this node's extents of newly referenced ones
        are marked in use. The faces' caches are not told: a mount's kernel
        cache may show the old state until its entries expire.
        """
        before = self._index.packed_segments()
        self._index.adopt(index)
        if not self._space_rebuilt:
            return
        after = self._index.packed_segments()
        changed = [i for i, packed in before.items() if after.get(i) != packed]
        self._space.free_segments(  # what each held before and holds no more
            held_beyond(before[i], after.get(i)) for i in changed
        )
        added = [i for i, packed in after.items() if before.get(i) != packed]
        self._space.take_segments(held_beyond(after[i], before.get(i)) for i in added)
        self.on_new_segments([unpack_segment(after[i]) for i in added])

    def watch(self, watcher: Callable[[Change], None]) -> Callable[[], None]:
        """Call `watcher(change)` after every committed change, in the committing
        task, before the change's caller hears of it; returns the unwatch function.
        A watcher must not block (a face queues its work and returns)."""
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher)

    async def create_bucket(
        self, name: str, *, owner: str = "root", internal: bool = False
    ) -> BucketInfo:
        """Create a bucket. Raises InvalidBucketName, BucketAlreadyExists.

        `internal`: a bucket of the faces' own (named `.objfs-...`, which no S3
        bucket name can be), left out of `list_buckets`.
        """
        if internal:
            if not name.startswith(names.INTERNAL_BUCKET_PREFIX):
                raise InvalidBucketName(
                    f"internal bucket names start with {names.INTERNAL_BUCKET_PREFIX}"
                )
            bucket = BucketName(name)
        else:
            bucket = names.check_bucket_name(name)
        await self._commit(CreateBucket(bucket, owner, self._clock()))
        return self._index.bucket(bucket)

    async def delete_bucket(self, name: str) -> None:
        """Delete an empty bucket. Raises NoSuchBucket, BucketNotEmpty."""
        self._index.bucket(BucketName(name))
        await self._commit(DeleteBucket(BucketName(name)))

    def head_bucket(self, name: str) -> BucketInfo:
        return self._index.bucket(BucketName(name))

    def list_buckets(self) -> list[BucketInfo]:
        """Every bucket but the internal ones."""
        return [
            b for b in self._index.buckets() if not b.name.startswith(names.INTERNAL_BUCKET_PREFIX)
        ]

    async def set_bucket_setting(self, name: str, setting: str, value: bytes | None) -> BucketInfo:
        """Set (None: remove) a named setting the faces keep for a bucket (S3: ACL,
        tagging, CORS), durably, like every other change."""
        self._index.bucket(BucketName(name))
        await self._commit(SetBucketSetting(BucketName(name), setting, value))
        return self._index.bucket(BucketName(name))

    async def set_bucket_versioning(self, name: str, versioning: Versioning) -> BucketInfo:
        self._index.bucket(BucketName(name))
        await self._commit(SetBucketVersioning(BucketName(name), versioning))
        return self._index.bucket(BucketName(name))

    # -- reading objects ------------------------------------------------------------

    def head_object(self, bucket: str, key: str, *, version_id: str | None = None) -> ObjectInfo:
        """Metadata of the current version (or of `version_id`). Raises NoSuchBucket, NoSuchKey."""
        version = self._version(bucket, key, version_id)
        return object_info(
            bucket,
            key,
            version,
            is_latest=version.version_id
            == self._index.versions(BucketName(bucket), ObjectKey(key))[0].version_id,
        )

    def _version(self, bucket: str, key: str, version_id: str | None) -> ObjectVersion:
        if version_id is None:
            return self._index.current(BucketName(bucket), ObjectKey(key))
        return self._index.version(BucketName(bucket), ObjectKey(key), VersionId(version_id))

    def list_objects(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str | None = None,
        start_after: str = "",
        limit: int = 1000,
    ) -> ListPage:
        """One page of current keys in order, from the index alone (no data is touched)."""
        self._index.bucket(BucketName(bucket))
        if limit < 0:
            raise InvalidArgument(f"a listing limit must not be negative (got {limit})")
        return list_page(self._index, BucketName(bucket), prefix, delimiter, start_after, limit)

    def list_object_versions(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str | None = None,
        key_marker: str = "",
        version_id_marker: str = "",
        limit: int = 1000,
    ) -> VersionsPage:
        """One page of every version and delete marker, by key, newest first."""
        self._index.bucket(BucketName(bucket))
        if limit < 0:
            raise InvalidArgument(f"a listing limit must not be negative (got {limit})")
        return list_versions_page(
            self._index, BucketName(bucket), prefix, delimiter, key_marker, version_id_marker, limit
        )

    @asynccontextmanager
    async def open_reader(
        self, bucket: str, key: str, *, version_id: str | None = None
    ) -> AsyncIterator[ObjectReader]:
        """A reader of the version current now; it keeps reading that version even if the
        key is overwritten or deleted meanwhile. Opening does not block; reads do."""
        version = self._version(bucket, key, version_id)
        info = object_info(bucket, key, version)
        segments = list(version_segments(version))
        self._space.pin(segments)
        try:
            if len(segments) < 2:  # nothing to read ahead
                yield ObjectReader(self._datapath, info, version)
                return
            body_error: BaseException | None = None
            async with trio.open_nursery() as nursery:  # readahead runs here
                try:
                    yield ObjectReader(self._datapath, info, version, nursery)
                except BaseException as exc:
                    body_error = exc  # re-raised below, outside the nursery: not as a group
                nursery.cancel_scope.cancel()
            if body_error is not None:
                raise body_error
        finally:
            self._space.unpin(segments)

    async def get_object(
        self, bucket: str, key: str, *, offset_bytes: int = 0, size_bytes: int | None = None
    ) -> bytes:
        """Convenience: read a whole object (or a range) into memory."""
        async with self.open_reader(bucket, key) as reader:
            return await reader.read(
                offset_bytes, reader.size_bytes if size_bytes is None else size_bytes
            )

    # -- writing objects ------------------------------------------------------------

    def _check_writable(self, bucket: str, key: str) -> tuple[BucketName, ObjectKey]:
        if self.config.read_only:
            raise ReadOnly("the store was opened read-only")
        if self._wal.failure is not None:
            raise ReadOnly(f"the store is read-only: {self._wal.failure}")
        checked_key = names.check_key(key)
        self._index.bucket(BucketName(bucket))
        return BucketName(bucket), checked_key

    def _check_room_to_grow(self) -> None:
        if not self._space.room_to_grow():
            raise NoSpace(
                "the devices are down to the space kept for checkpoints: delete objects "
                "to make room (deletes, renames and truncates still work)"
            )

    def _new_version(
        self,
        bucket: BucketName,
        size_bytes: int,
        etag: str,
        pieces: tuple[Piece, ...],
        content_type: str,
        metadata: Mapping[str, str] | None,
        checksums: Mapping[str, str] | None,
        posix: PosixAttrs | None,
    ) -> ObjectVersion:
        """A new version of whole bytes: its id and time decided now, before its record."""
        return ObjectVersion(
            version_id=self._new_version_id(bucket),
            size_bytes=size_bytes,
            mtime_ns=self._clock(),
            etag=etag,
            content_type=content_type,
            metadata=tuple(sorted((metadata or {}).items())),
            checksums=tuple(sorted((checksums or {}).items())),
            posix=posix,
            pieces=pieces,
        )

    def _new_version_id(self, bucket: BucketName) -> VersionId:
        if self._index.bucket(bucket).versioning is Versioning.ENABLED:
            # Sortable by time, unique by the random tail; decided before the record.
            return VersionId(f"{self._clock():020d}{secrets.token_hex(6)}")
        return NULL_VERSION

    @asynccontextmanager
    async def open_writer(
        self,
        bucket: str,
        key: str,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        checksums: Mapping[str, str] | None = None,
        posix: PosixAttrs | None = None,
        if_none_match: bool = False,
        if_match: Sequence[str] | None = None,
    ) -> AsyncIterator[ObjectWriter]:
        """A streaming writer; nothing is visible until `await writer.commit()`.

        Entering checks the bucket and key (InvalidKey, NoSuchBucket) and does not
        block. Leaving without a commit frees every byte written. The commit fails
        with KeyAlreadyExists if `if_none_match` and the key has a current version,
        and with PreconditionFailed (NoSuchKey when there is no current version)
        if `if_match` is given and the current version's ETag is not among those
        ETags ("*": any) when the record applies.
        """
        bucket_name, object_key = self._check_writable(bucket, key)
        self._check_room_to_grow()
        wanted = None if if_match is None else tuple(if_match)

        async def commit(
            size: int,
            etag: str,
            pieces: tuple[Piece, ...],
            final_checksums: Mapping[str, str] | None,
        ) -> ObjectVersion:
            stored = checksums if final_checksums is None else final_checksums
            version = self._new_version(
                bucket_name, size, etag, pieces, content_type, metadata, stored, posix
            )
            await self._commit(PutVersion(bucket_name, object_key, version, if_none_match, wanted))
            return version

        body_error: BaseException | None = None
        writer: ObjectWriter | None = None
        try:
            async with trio.open_nursery() as nursery:
                writer = ObjectWriter(
                    self._datapath,
                    nursery,
                    segment_size_bytes=self._datapath.segment_size_bytes,
                    inline_max_bytes=self.config.inline_max_bytes,
                    in_flight=self.config.writer_in_flight_segments,
                    commit=commit,
                )
                try:
                    yield writer
                except BaseException as exc:
                    body_error = exc  # re-raised below, outside the nursery: not as a group
                if not writer.committed:
                    nursery.cancel_scope.cancel()
        finally:
            # Also when the caller is cancelled (a client that hangs up mid-PUT): the
            # nursery has waited for every store, so what was stored is all known.
            if writer is not None and not writer.committed and not writer.record_maybe_durable:
                writer.discard()
        if body_error is not None:
            raise body_error

    async def put_object(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        checksums: Mapping[str, str] | None = None,
        posix: PosixAttrs | None = None,
        if_none_match: bool = False,
        if_match: Sequence[str] | None = None,
        use_reserve: bool = False,
    ) -> ObjectInfo:
        """Store `data` whole as the new current version of the key.

        Small objects take a direct path: one inline record, no writer, no buffer.
        `if_none_match` and `if_match` as for `open_writer`.

        `use_reserve`: a small (inline) object is stored even on a store down to
        the space kept for checkpoints, where PUTs fail with NoSpace: for a face's
        own entry that a delete, rename or attribute change needs, of which each
        existing name adds at most one (the mount's directory markers), so the
        index cannot keep growing. Larger objects need room all the same.
        """
        if len(data) > self.config.inline_max_bytes:
            async with self.open_writer(
                bucket,
                key,
                content_type=content_type,
                metadata=metadata,
                checksums=checksums,
                posix=posix,
                if_none_match=if_none_match,
                if_match=if_match,
            ) as writer:
                await writer.write(data)
                version = await writer.commit()
            return object_info(bucket, key, version)
        bucket_name, object_key = self._check_writable(bucket, key)
        if not use_reserve:
            self._check_room_to_grow()
        pieces = (Piece(0, len(data), bytes(data)),) if data else ()
        version = self._new_version(
            bucket_name,
            len(data),
            hashlib.md5(data).hexdigest(),
            pieces,
            content_type,
            metadata,
            checksums,
            posix,
        )
        wanted = None if if_match is None else tuple(if_match)
        await self._commit(PutVersion(bucket_name, object_key, version, if_none_match, wanted))
        return object_info(bucket, key, version)

    async def delete_object(
        self, bucket: str, key: str, *, version_id: str | None = None
    ) -> DeleteResult:
        """Delete the current version (a marker, in a versioned bucket) or one version."""
        bucket_name, object_key = BucketName(bucket), ObjectKey(key)
        info = self._index.bucket(bucket_name)
        marker = None
        if version_id is None and info.versioning is not Versioning.DISABLED:
            marker_id = self._new_version_id(bucket_name)
            marker = ObjectVersion(marker_id, 0, self._clock(), None, delete_marker=True)
        vid = None if version_id is None else VersionId(version_id)
        await self._commit(DeleteObject(bucket_name, object_key, vid, marker, self._clock()))
        if marker is not None:
            return DeleteResult(marker.version_id, True)
        return DeleteResult(vid, False)

    async def rename_object(
        self, bucket: str, source_key: str, target_key: str, *, no_replace: bool = False
    ) -> ObjectInfo:
        """Move a key (all its versions) in one record; the target is replaced unless
        `no_replace`. Raises NoSuchKey, KeyAlreadyExists, InvalidKey."""
        bucket_name, target = self._check_writable(bucket, target_key)
        source = ObjectKey(source_key)
        self._index.current(bucket_name, source)
        await self._commit(RenameKey(bucket_name, source, target, no_replace, self._clock()))
        return self.head_object(bucket, target)

    async def rename_prefix(self, bucket: str, source_prefix: str, target_prefix: str) -> None:
        """Move every key under a prefix (a directory) in one atomic record.

        Raises:
            NoSuchKey: nothing under the source.
            BucketNotEmpty: the target holds keys (other than its own marker).
            InvalidArgument: one prefix lies inside the other.
        """
        bucket_name, _ = self._check_writable(bucket, names.check_prefix(target_prefix))
        names.check_prefix(source_prefix)
        await self._commit(RenamePrefix(bucket_name, source_prefix, target_prefix, self._clock()))

    async def link_object(self, bucket: str, source_key: str, target_key: str) -> ObjectInfo:
        """Make `target_key` a hard link of `source_key` (store/links.py): one more
        name of the same bytes and attributes, written together from then on.

        Raises: NoSuchKey (source), KeyAlreadyExists (target), InvalidKey.
        """
        bucket_name, target = self._check_writable(bucket, target_key)
        source = ObjectKey(source_key)
        self._index.current(bucket_name, source)
        version_id = self._new_version_id(bucket_name)
        await self._commit(LinkKey(bucket_name, source, target, version_id, self._clock()))
        return self.head_object(bucket, target)

    async def exchange(self, bucket: str, first: str, second: str) -> None:
        """Swap two keys, or two prefixes with everything under them, in one atomic
        record (the mount's RENAME_EXCHANGE).

        Raises: NoSuchKey (either missing), InvalidArgument (a key with a prefix,
        or one prefix inside the other), KeyTooLong.
        """
        bucket_name, _ = self._check_writable(bucket, first.rstrip("/") or first)
        names.check_key(second.rstrip("/") or second)
        await self._commit(Exchange(bucket_name, first, second, self._clock()))

    async def copy_object(
        self,
        source_bucket: str,
        source_key: str,
        target_bucket: str,
        target_key: str,
        *,
        version_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
        posix: PosixAttrs | None = None,
        use_reserve: bool = False,
    ) -> ObjectInfo:
        """Copy by reference: the new version shares the source's stored segments.
        Metadata, content type and POSIX attributes are the source's unless given.

        `use_reserve`: copy even on a store down to the space kept for checkpoints
        (where copies fail with NoSpace), for a caller that deletes the source
        right after (the mount sets an open file aside so when it is unlinked):
        the index then ends no larger, as after a rename, which such a store
        allows."""
        bucket_name, object_key = self._check_writable(target_bucket, target_key)
        if not use_reserve:
            self._check_room_to_grow()
        source = self._version(source_bucket, source_key, version_id)
        version = replace(
            source,
            version_id=self._new_version_id(bucket_name),
            mtime_ns=self._clock(),
            metadata=(
                links.strip(source).metadata
                if metadata is None
                else tuple(sorted(metadata.items()))
            ),
            content_type=source.content_type if content_type is None else content_type,
            posix=source.posix if posix is None else posix,
        )
        # A source deleted before the record applies makes it fail: nothing to pin.
        await self._commit(PutVersion(bucket_name, object_key, version, shared=_shared(version)))
        return object_info(target_bucket, target_key, version)

    async def compose_object(
        self,
        bucket: str,
        key: str,
        sources: Sequence[ComposeSource],
        *,
        etag: str | None,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        checksums: Mapping[str, str] | None = None,
        if_none_match: bool = False,
        if_match: Sequence[str] | None = None,
        posix: PosixAttrs | None = None,
    ) -> ObjectInfo:
        """A new version made of byte ranges of other versions, by reference (one
        record, no data copied): S3 multipart Complete and UploadPartCopy.

        Raises:
            NoSuchKey, NoSuchVersion, NoSuchBucket: a source is missing.
            InvalidRange: a source range reaches past its version's end.
            KeyAlreadyExists, PreconditionFailed: `if_none_match`, `if_match` (as
                for `open_writer`).
        """
        bucket_name, object_key = self._check_writable(bucket, key)
        self._check_room_to_grow()
        pieces: list[Piece] = []
        position = 0
        for source in sources:
            version = self._version(source.bucket, source.key, source.version_id)
            start = source.offset_bytes
            end = version.size_bytes if source.length_bytes is None else start + source.length_bytes
            if not 0 <= start <= end <= version.size_bytes:
                raise InvalidRange(
                    f"range [{start}, {end}) of {source.bucket}/{source.key} is outside its "
                    f"{version.size_bytes} bytes"
                )
            for piece in piece_math.clip(version.pieces, start, end):
                pieces.append(replace(piece, offset_bytes=piece.offset_bytes - start + position))
            position += end - start
        names.check_extent_of_object(0, position)
        version = self._new_version(
            bucket_name,
            position,
            etag or "",
            tuple(pieces),
            content_type,
            metadata,
            checksums,
            posix,
        )
        if etag is None:
            version = replace(version, etag=None)
        wanted = None if if_match is None else tuple(if_match)
        await self._commit(
            PutVersion(bucket_name, object_key, version, if_none_match, wanted, _shared(version))
        )
        return object_info(bucket, key, version)

    async def write_at(self, bucket: str, key: str, offset_bytes: int, data: bytes) -> ObjectInfo:
        """Write bytes into an existing object at any offset, storing only the new bytes.

        The object grows if the write ends past its end (a gap reads as zeros). The
        ETag becomes unknown (None) until `set_attributes(etag=...)`.
        """
        return await self.write_runs(bucket, key, [(offset_bytes, data)])

    async def write_runs(
        self,
        bucket: str,
        key: str,
        runs: Sequence[tuple[int, bytes | bytearray]],
        *,
        mtime_ns: int | None = None,
    ) -> ObjectInfo:
        """`write_at` of several runs (offset, bytes) at once: their bytes are stored
        together in as few segments as fit them, and one record lays them in.

        Raises:
            InvalidArgument: the runs overlap or are not in offset order.
        `mtime_ns`: when the bytes were written (a face that
        gathered them), else now.
        """
        bucket_name, object_key = self._check_writable(bucket, key)
        self._check_room_to_grow()
        end = 0
        for offset, data in runs:
            names.check_extent_of_object(offset, len(data))
            if offset < end:
                raise InvalidArgument("runs to write must be in offset order and not overlap")
            end = offset + len(data)
        runs = [(offset, data) for offset, data in runs if data]
        async with self._locks.hold((bucket_name, object_key)):
            current = self._index.current(bucket_name, object_key)
            if not runs:
                return object_info(bucket, key, current)
            fresh: list[Segment] = []
            if max(current.size_bytes, end) <= self.config.inline_max_bytes:
                pieces = [Piece(offset, len(data), bytes(data)) for offset, data in runs]
            else:
                fresh = await self._datapath.store_bytes(b"".join(data for _, data in runs))
                pieces = _lay_out(runs, fresh)
            await self._commit_fresh(
                WriteAt(bucket_name, object_key, tuple(pieces), mtime_ns or self._clock()),
                fresh,
            )
            return self.head_object(bucket, key)

    async def truncate(self, bucket: str, key: str, size_bytes: int) -> ObjectInfo:
        """Cut or extend (with zeros) an object; no stored byte is rewritten."""
        bucket_name, object_key = self._check_writable(bucket, key)
        names.check_extent_of_object(size_bytes)
        async with self._locks.hold((bucket_name, object_key)):
            await self._commit(Truncate(bucket_name, object_key, size_bytes, self._clock()))
        return self.head_object(bucket, key)

    async def set_attributes(
        self,
        bucket: str,
        key: str,
        *,
        posix: PosixAttrs | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
        mtime_ns: int | None = None,
        etag: str | None = None,
        if_mtime_ns: int | None = None,
    ) -> ObjectInfo:
        """Change metadata of the current version in place (chmod, utimens, xattrs).

        With `if_mtime_ns`, only if the current version's mtime is still that
        (PreconditionFailed if not: it was written meanwhile)."""
        bucket_name, object_key = self._check_writable(bucket, key)
        meta = None if metadata is None else tuple(sorted(metadata.items()))
        record = SetAttributes(
            bucket_name, object_key, posix, meta, content_type, mtime_ns, etag, if_mtime_ns
        )
        await self._commit(record)
        return self.head_object(bucket, key)

    async def _commit_fresh(self, record: Record, fresh: Sequence[Segment]) -> None:
        """Commit a record that points at newly stored segments; free them if it fails."""
        try:
            await self._commit(record)
        except (ReadOnly, OutcomeUnknown):
            raise  # the record may yet be durable (a failed WAL, a cluster's log): keep them
        except Exception:
            self._datapath.discard(fresh)
            raise

    # -- moving segments ---------------------------------------------------------------

    async def move_segment(self, segment_id: SegmentId) -> bool:
        """Store segment `segment_id`'s bytes anew as one stripe placed as new
        stripes are placed now, and point every version that reads it at them
        (`MoveSegment`); its old fragments are freed. A cluster moves stripes
        off a node that leaves this way. The bytes come from any k intact
        fragments, so a segment with fragments on a dead node moves too.

        Returns False if nothing referenced the segment by then (its new
        fragments are freed).

        Raises:
            Corrupted: fewer than k of its fragments can be read.
            NoSpace, Unavailable: the new stripe cannot be stored.
        """
        if self.config.read_only:
            raise ReadOnly("the store was opened read-only")
        segment = self._index.segment(segment_id)
        if segment is None:
            return False
        self._space.pin([segment])
        try:
            data = (await self._datapath.read_segments([segment]))[0]
            fresh = await self._datapath.write_whole_stripe(data[:])
            try:
                await self._commit_fresh(MoveSegment(segment_id, fresh), [fresh])
            except PreconditionFailed:
                return False  # deleted meanwhile
        finally:
            self._space.unpin([segment])
        return True

    # -- status ---------------------------------------------------------------------

    @property
    def index(self) -> ObjectIndex:
        """The index, for fsck and tests; the faces use the methods above."""
        return self._index

    @property
    def space(self) -> Space:
        return self._space

    @property
    def datapath(self) -> DataPath:
        return self._datapath

    def pending_extents(self) -> list[Extent]:
        """Allocated but not referenced by the index or a pointer: stale checkpoint
        bodies, the body of a checkpoint being written, and segments freed while
        a reader still pins them."""
        return (
            list(self._checkpointer.stale_extents)
            + list(self._checkpointer.writing)
            + self._space.deferred_extents()
        )

    @property
    def devices(self) -> dict[int, BlockDevice]:
        return self._devices

    @property
    def superblocks(self) -> dict[int, Superblock]:
        return self._superblocks

    @property
    def pointers(self) -> dict[int, CheckpointPointer]:
        """Slot -> the checkpoint pointer it holds."""
        return self._checkpointer.pointers

    @property
    def checkpointer(self) -> Checkpointer:
        return self._checkpointer

    @property
    def checkpoints(self) -> int:
        """Checkpoints written since open."""
        return self._checkpointer.checkpoints

    @property
    def wal(self) -> Wal:
        return self._wal

    @property
    def health(self) -> Health:
        """Devices down and owed, damage found, heals done (objfs/store/health.py)."""
        return self._datapath.health

    @property
    def policy(self) -> Policy:
        """How new segments are erasure-coded."""
        return self._datapath.policy

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            buckets=len(self.list_buckets()),  # the faces' internal buckets are not counted
            objects=self._index.object_count(),
            versions=self._index.version_count,
            logical_bytes=self._index.logical_bytes,
            device_bytes=self._space.total_bytes,
            free_bytes=self._space.free_bytes,
            available_bytes=self._space.available_bytes(self.policy.width),
            wal_bytes_used=self._wal.used_bytes,
            wal_bytes_total=self._wal.size_bytes,
            last_lsn=self._wal.applied_lsn,
            checkpoint_lsn=self._checkpointer.current.lsn,
            devices=tuple(device.path for _, device in sorted(self._devices.items())),
        )


def _lay_out(runs: Sequence[tuple[int, bytes | bytearray]], stored: list[Segment]) -> list[Piece]:
    """Pieces placing runs whose bytes were stored back to back in `stored`."""
    pieces: list[Piece] = []
    segments = iter(stored)
    segment, used = next(segments), 0  # the segment being consumed, bytes of it taken
    for offset, data in runs:
        position, left = offset, len(data)
        while left:
            if used == segment.size_bytes:
                segment, used = next(segments), 0
            take = min(left, segment.size_bytes - used)
            pieces.append(Piece(position, take, segment, used))
            position, left, used = position + take, left - take, used + take
    return pieces


def _shared(version: ObjectVersion) -> tuple[SegmentId, ...]:
    """The segments a copy or a Complete shares with its sources, for its record to
    check they are still referenced when it applies (PutVersion.shared)."""
    return tuple(dict.fromkeys(segment.segment_id for segment in version_segments(version)))
