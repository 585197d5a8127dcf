"""objfs.store.index — the object index: buckets, keys, versions; applying records.

`ObjectIndex` is pure and synchronous: no I/O, no clock, no randomness. `apply()`
checks a record's preconditions, then changes the index, and returns the segments
whose last reference the change dropped (the store frees their extents). It either
raises an `ObjfsError` and changes nothing, or succeeds whole; replaying the same
records in the same order always gives the same index (docs/concurrency.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import final

from sortedcontainers import SortedDict

from objfs.errors import (
    BucketAlreadyExists,
    BucketNotEmpty,
    InvalidArgument,
    KeyAlreadyExists,
    KeyTooLong,
    NoSuchBucket,
    NoSuchKey,
    NoSuchVersion,
    PreconditionFailed,
)
from objfs.store import links
from objfs.store import pieces as piece_math
from objfs.store.names import MAX_KEY_BYTES
from objfs.store.packing import (
    Versions,
    held_beyond,
    pack_segment,
    pack_versions,
    scan_packed,
    segment_extents,
    unpack_heads,
    unpack_segment,
    unpack_versions,
)
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
    Wrap,
    WriteAt,
)
from objfs.store.types import (
    NULL_VERSION,
    BucketInfo,
    BucketName,
    Extent,
    ObjectKey,
    ObjectVersion,
    PosixAttrs,
    Segment,
    SegmentId,
    VersionId,
)

IndexKey = tuple[str, str]  # (bucket, key)


def version_segments(version: ObjectVersion) -> Iterator[Segment]:
    for piece in version.pieces:
        if isinstance(piece.source, Segment):
            yield piece.source


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The index at one moment, cheap to take, safe to serialise from another thread.

    `keys` are in order; `values` maps each to its packed versions (packing.py).
    Taking one costs two C-level copies on the event loop (about 50 ms at a
    million keys); pairing them up is left to whoever walks `items()`. `moved`
    holds where moved segments are now (packed, by id): the versions still name
    where they were first written.
    """

    buckets: tuple[BucketInfo, ...]
    keys: list[IndexKey]
    values: Mapping[IndexKey, bytes]
    moved: Mapping[SegmentId, bytes] = field(default_factory=dict)

    def items(self) -> Iterator[tuple[IndexKey, bytes]]:
        values = self.values
        for key in self.keys:
            yield key, values[key]

    @classmethod
    def of(
        cls, buckets: tuple[BucketInfo, ...], objects: list[tuple[IndexKey, Versions]]
    ) -> Snapshot:
        """A snapshot of (key, versions) pairs given in key order."""
        return cls(buckets, [key for key, _ in objects], {k: pack_versions(v) for k, v in objects})


def _written(posix: PosixAttrs | None) -> PosixAttrs | None:
    """The POSIX attributes of a version whose bytes were just written: a
    modification time set apart no longer holds (the version's is the file's)."""
    return posix if posix is None or posix.mtime_ns is None else replace(posix, mtime_ns=None)


_DECODED_MIN_BYTES = 2048  # packed versions at least this large are kept decoded...
_DECODED_ENTRIES = 64  # ...for this many keys


@final
class ObjectIndex:
    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._buckets: dict[str, BucketInfo] = {}
        # (bucket, key) -> the key's versions, packed (packing.py): a few hundred
        # bytes per key instead of a tree of objects; decoded when asked for.
        self._objects: SortedDict = SortedDict()
        self._bucket_counts: Counter[str] = Counter()  # keys per bucket
        # Every referenced segment once, packed; most have one reference, so the
        # count is kept only where it is above one.
        self._segments: dict[SegmentId, bytes] = {}
        self._extra_refs: dict[SegmentId, int] = {}
        # Segments moved since they were written (MoveSegment), packed as they are
        # now: versions keep naming the first storage, and are given this one when
        # they are decoded (_resolved). Also in _segments.
        self._moved: dict[SegmentId, bytes] = {}
        self.version_count = 0
        self.logical_bytes = 0  # sum of the sizes of every version
        self._decoded: dict[IndexKey, tuple[bytes, Versions]] = {}  # see versions()

    # -- reading -------------------------------------------------------------------

    def bucket(self, name: BucketName) -> BucketInfo:
        try:
            return self._buckets[name]
        except KeyError:
            raise NoSuchBucket(f"no bucket named {name!r}") from None

    def buckets(self) -> list[BucketInfo]:
        return sorted(self._buckets.values(), key=lambda info: info.name)

    def versions(self, bucket: BucketName, key: ObjectKey) -> Versions:
        """Every version of a key, newest first; () if none."""
        packed = self._objects.get((bucket, key))
        if packed is None:
            return ()
        if len(packed) < _DECODED_MIN_BYTES:
            return self._resolved(unpack_versions(packed))
        # A large file read through the mount asks for its version at every read:
        # keep the last few large ones decoded, valid while their packed bytes are.
        cached = self._decoded.get((bucket, key))
        if cached is not None and cached[0] is packed:
            return cached[1]
        versions = self._resolved(unpack_versions(packed))
        self._remember_decoded((bucket, key), packed, versions)
        return versions

    def _resolved(self, versions: Versions) -> Versions:
        """The versions with every moved segment given as it is stored now."""
        moved = self._moved
        if not moved:
            return versions
        resolved = []
        for version in versions:
            if any(s.segment_id in moved for s in version_segments(version)):
                pieces = tuple(
                    replace(p, source=unpack_segment(moved[p.source.segment_id]))
                    if isinstance(p.source, Segment) and p.source.segment_id in moved
                    else p
                    for p in version.pieces
                )
                version = replace(version, pieces=pieces)
            resolved.append(version)
        return tuple(resolved)

    def _remember_decoded(self, index_key: IndexKey, packed: bytes, versions: Versions) -> None:
        self._decoded.pop(index_key, None)
        if len(self._decoded) >= _DECODED_ENTRIES:
            del self._decoded[next(iter(self._decoded))]
        self._decoded[index_key] = (packed, versions)

    def current(self, bucket: BucketName, key: ObjectKey) -> ObjectVersion:
        """The newest version, unless it is a delete marker.

        Raises:
            NoSuchBucket, NoSuchKey
        """
        self.bucket(bucket)
        versions = self.versions(bucket, key)
        if not versions or versions[0].delete_marker:
            raise NoSuchKey(f"no key {key!r} in bucket {bucket!r}")
        return versions[0]

    def version(self, bucket: BucketName, key: ObjectKey, version_id: VersionId) -> ObjectVersion:
        self.bucket(bucket)
        for version in self.versions(bucket, key):
            if version.version_id == version_id:
                return version
        raise NoSuchVersion(f"no version {version_id!r} of {key!r} in bucket {bucket!r}")

    def iter_keys(
        self,
        bucket: BucketName,
        *,
        start_after: str = "",
        prefix: str = "",
        start_at: str | None = None,
        heads: bool = False,
    ) -> Iterator[tuple[str, Versions]]:
        """Keys of a bucket in order, starting with `prefix`, strictly after
        `start_after` (or, when `start_at` is given, from `start_at` on); with
        `heads`, their versions come without pieces (packing.unpack_heads)."""
        unpack = unpack_heads if heads else unpack_versions
        if start_at is not None:
            low, inclusive = max(start_at, prefix), True
        else:
            low = max(start_after, prefix)
            inclusive = low == prefix and low != start_after
        for index_key in self._objects.irange((bucket, low), None, inclusive=(inclusive, True)):
            if index_key[0] != bucket or not index_key[1].startswith(prefix):
                return
            versions = unpack(self._objects[index_key])
            yield index_key[1], versions if heads else self._resolved(versions)

    def iter_all(self) -> Iterator[tuple[IndexKey, Versions]]:
        """Every key of every bucket, in order (decodes every version: for fsck)."""
        for index_key, packed in self._objects.items():
            yield index_key, self._resolved(unpack_versions(packed))

    def key_count(self, bucket: BucketName) -> int:
        return self._bucket_counts[bucket]

    def object_count(self) -> int:
        return len(self._objects)

    def referenced_extents(self) -> Iterator[Extent]:
        """Every extent a referenced segment holds (for rebuilding free space),
        moved segments' id blocks included (packing.segment_extents)."""
        for packed in self._segments.values():
            yield from segment_extents(packed)

    def referenced_segments(self) -> Iterator[Segment]:
        for packed in self._segments.values():
            yield unpack_segment(packed)

    def segment_ids(self) -> list[SegmentId]:
        """Every referenced segment's id, now (a scrub walks them while things change)."""
        return list(self._segments)

    def segment(self, segment_id: SegmentId) -> Segment | None:
        """The segment with this id if it is still referenced."""
        packed = self._segments.get(segment_id)
        return None if packed is None else unpack_segment(packed)

    def versions_using(self, segment_ids: set[SegmentId]) -> list[tuple[IndexKey, VersionId]]:
        """Every (bucket, key), version that reads from one of these segments (walks
        the whole index: for reporting damage, not for the data path)."""
        found = []
        for index_key, versions in self.iter_all():
            for version in versions:
                if any(s.segment_id in segment_ids for s in version_segments(version)):
                    found.append((index_key, version.version_id))
        return found

    def moved_count(self) -> int:
        return len(self._moved)

    def references(self, segment_id: SegmentId) -> int:
        if segment_id not in self._segments:
            return 0
        return 1 + self._extra_refs.get(segment_id, 0)

    def snapshot(self) -> Snapshot:
        # The packed values are immutable, so a shallow copy is a consistent snapshot.
        # list(SortedDict) chains its sorted sublists and dict.copy copies the hash
        # table, both in C; iterating SortedDict.items() costs ~2 us per key.
        return Snapshot(
            tuple(self._buckets.values()),
            list(self._objects),
            dict.copy(self._objects),
            dict(self._moved),
        )

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> ObjectIndex:
        index = cls()
        index._load(snapshot)
        return index

    def adopt(self, other: ObjectIndex) -> None:
        """Become `other`, in place: a cluster node installing a Raft snapshot
        builds the new index in a worker thread, then swaps it in on the event
        loop while everyone holding this index keeps holding it."""
        vars(self).update(vars(other))

    def packed_segments(self) -> dict[SegmentId, bytes]:
        """Every referenced segment, packed, by id (a copy)."""
        return dict(self._segments)

    def _load(self, snapshot: Snapshot) -> None:
        index = self
        index._buckets = {info.name: info for info in snapshot.buckets}
        index._objects = SortedDict(snapshot.values)
        segments, extra = index._segments, index._extra_refs
        for (bucket, _key), packed in snapshot.items():
            index._bucket_counts[bucket] += 1
            count, logical, references = scan_packed(packed)
            index.version_count += count
            index.logical_bytes += logical
            for segment_id, packed_segment in references:
                if segment_id in segments:
                    extra[segment_id] = extra.get(segment_id, 0) + 1
                else:
                    segments[segment_id] = packed_segment
        for segment_id, packed_segment in snapshot.moved.items():
            if segment_id in segments:
                segments[segment_id] = index._moved[segment_id] = packed_segment

    # -- references ------------------------------------------------------------------

    def _add_refs(self, version: ObjectVersion) -> None:
        for segment in version_segments(version):
            segment_id = segment.segment_id
            if segment_id in self._segments:
                self._extra_refs[segment_id] = self._extra_refs.get(segment_id, 0) + 1
            else:
                self._segments[segment_id] = pack_segment(segment)

    def _drop_refs(self, version: ObjectVersion, freed: list[Segment]) -> None:
        for segment in version_segments(version):
            segment_id = segment.segment_id
            extra = self._extra_refs.get(segment_id, 0)
            if extra > 1:
                self._extra_refs[segment_id] = extra - 1
            elif extra == 1:
                del self._extra_refs[segment_id]
            else:
                packed = self._segments.pop(segment_id)
                if self._moved.pop(segment_id, None) is None:
                    freed.append(segment)
                else:  # its storage now, and its id's block
                    freed.append(held_beyond(packed))

    def _set_versions(
        self, bucket: str, key: str, versions: Versions, freed: list[Segment]
    ) -> None:
        """Replace a key's versions, moving references from the old to the new ones."""
        old = self.versions(BucketName(bucket), ObjectKey(key))
        for version in versions:
            self._add_refs(version)
        for version in old:
            self._drop_refs(version, freed)
        self.version_count += len(versions) - len(old)
        self.logical_bytes += sum(v.size_bytes for v in versions) - sum(v.size_bytes for v in old)
        if versions:
            if not old:
                self._bucket_counts[bucket] += 1
            packed = pack_versions(versions)
            self._objects[(bucket, key)] = packed
            if len(packed) >= _DECODED_MIN_BYTES:  # a file written in place: stat it at once
                self._remember_decoded((bucket, key), packed, versions)
        elif old:
            self._bucket_counts[bucket] -= 1
            del self._objects[(bucket, key)]

    # -- applying records ------------------------------------------------------------

    def apply(self, record: Record) -> list[Segment]:
        """Apply one record; return the segments no longer referenced by anything.

        Raises:
            ObjfsError: a precondition does not hold; the index is unchanged.
        """
        freed: list[Segment] = []
        match record:
            case Wrap():
                pass
            case CreateBucket(name, owner, created_ns):
                if name in self._buckets:
                    raise BucketAlreadyExists(f"bucket {name!r} already exists")
                self._buckets[name] = BucketInfo(name, owner, created_ns)
            case DeleteBucket(name):
                self.bucket(name)
                if self._bucket_counts[name]:
                    raise BucketNotEmpty(f"bucket {name!r} is not empty")
                del self._buckets[name]
                self._bucket_counts.pop(name, None)
            case SetBucketVersioning(name, versioning):
                self._buckets[name] = replace(self.bucket(name), versioning=versioning)
            case SetBucketSetting(name, setting, value):
                info = self.bucket(name)
                settings = {k: v for k, v in info.settings if k != setting}
                if value is not None:
                    settings[setting] = value
                self._buckets[name] = replace(info, settings=tuple(sorted(settings.items())))
            case PutVersion():
                self._put_version(record, freed)
            case DeleteObject():
                self._delete_object(record, freed)
            case RenameKey():
                self._rename_key(record, freed)
            case RenamePrefix():
                self._rename_prefix(record, freed)
            case WriteAt(bucket, key, pieces, mtime_ns):
                current = self.current(bucket, key)
                spliced = piece_math.splice(current.pieces, pieces)
                size = max([current.size_bytes] + [piece.end_bytes for piece in pieces])
                updated = replace(
                    current,
                    pieces=spliced,
                    size_bytes=size,
                    mtime_ns=mtime_ns,
                    etag=None,
                    checksums=(),  # the client's checksums were of the old bytes
                    posix=_written(current.posix),
                )
                self._replace_current(bucket, key, updated, freed)
                self._propagate(bucket, key, updated, freed)
            case Truncate(bucket, key, size_bytes, mtime_ns):
                if size_bytes < 0:
                    raise InvalidArgument(f"cannot truncate to {size_bytes} bytes")
                current = self.current(bucket, key)
                clipped = piece_math.clip(current.pieces, 0, size_bytes)
                same = size_bytes == current.size_bytes
                updated = replace(
                    current,
                    pieces=clipped,
                    size_bytes=size_bytes,
                    mtime_ns=mtime_ns,
                    etag=current.etag if same else None,
                    checksums=current.checksums if same else (),
                    posix=_written(current.posix),
                )
                self._replace_current(bucket, key, updated, freed)
                self._propagate(bucket, key, updated, freed)
            case SetAttributes():
                self._set_attributes(record, freed)
            case LinkKey():
                self._link_key(record, freed)
            case Exchange():
                self._exchange(record, freed)
            case MoveSegment(segment_id, storage):
                self._move_segment(segment_id, storage, freed)
        return freed

    def _move_segment(self, segment_id: SegmentId, storage: Segment, freed: list[Segment]) -> None:
        packed = self._segments.get(segment_id)
        if packed is None:
            raise PreconditionFailed(f"segment {segment_id} is no longer referenced")
        old = unpack_segment(packed)
        if storage.size_bytes != old.size_bytes:
            raise InvalidArgument(
                f"segment {segment_id} holds {old.size_bytes} bytes, not {storage.size_bytes}"
            )
        new_packed = pack_segment(replace(storage, origin=segment_id))
        self._segments[segment_id] = self._moved[segment_id] = new_packed
        self._decoded.clear()  # decoded versions name the old storage
        released = held_beyond(packed, new_packed)
        if released.fragments:
            freed.append(released)

    def _replace_current(
        self, bucket: str, key: str, updated: ObjectVersion, freed: list[Segment]
    ) -> None:
        versions = self.versions(BucketName(bucket), ObjectKey(key))
        self._set_versions(bucket, key, (updated, *versions[1:]), freed)

    def _put_version(self, record: PutVersion, freed: list[Segment]) -> None:
        bucket, key, version = record.bucket, record.key, record.version
        self.bucket(bucket)
        versions = self.versions(bucket, key)
        if record.if_none_match and versions and not versions[0].delete_marker:
            raise KeyAlreadyExists(f"key {key!r} already exists in bucket {bucket!r}")
        gone = [i for i in record.shared if i not in self._segments]
        if gone:
            raise NoSuchKey(f"a source of {key!r} was deleted before it landed (segment {gone[0]})")
        if record.if_match is not None:
            etag = self.current(bucket, key).etag  # NoSuchKey
            if "*" not in record.if_match and etag not in record.if_match:
                raise PreconditionFailed(f"{key!r} has ETag {etag!r}, not the one asked for")
        self._leave_group(bucket, key, freed, version.mtime_ns)
        versions = self.versions(bucket, key)
        others = tuple(links.strip(v) for v in versions if v.version_id != version.version_id)
        self._set_versions(bucket, key, (links.strip(version), *others), freed)
        if (not versions or versions[0].delete_marker) and not version.delete_marker:
            self._touch_parent(bucket, key, version.mtime_ns, freed)  # a new name

    def _delete_object(self, record: DeleteObject, freed: list[Segment]) -> None:
        bucket, key = record.bucket, record.key
        self.bucket(bucket)
        versions = self.versions(bucket, key)
        if record.version_id is not None:
            if not any(v.version_id == record.version_id for v in versions):
                raise NoSuchVersion(f"no version {record.version_id!r} of {key!r}")
            remaining = tuple(v for v in versions if v.version_id != record.version_id)
        elif record.marker is not None:
            marker = record.marker
            remaining = (marker, *(v for v in versions if v.version_id != marker.version_id))
        else:
            # Unversioned delete: the null version goes; deleting nothing is not an error (S3).
            remaining = tuple(v for v in versions if v.version_id != NULL_VERSION)
        gone = bool(versions) and not versions[0].delete_marker
        if versions and (not remaining or remaining[0] is not versions[0]):  # the current goes
            self._leave_group(bucket, key, freed, record.time_ns)
            remaining = tuple(links.strip(v) for v in remaining)
        self._set_versions(bucket, key, remaining, freed)
        if gone and (not remaining or remaining[0].delete_marker):
            self._touch_parent(bucket, key, record.time_ns, freed)  # a name went

    def _rename_key(self, record: RenameKey, freed: list[Segment]) -> None:
        bucket, source, target = record.bucket, record.source_key, record.target_key
        versions = self.versions(bucket, source)
        self.current(bucket, source)  # raises NoSuchBucket / NoSuchKey
        if source == target:
            return
        target_versions = self.versions(bucket, target)
        if record.no_replace and target_versions and not target_versions[0].delete_marker:
            raise KeyAlreadyExists(f"key {target!r} already exists in bucket {bucket!r}")
        names = links.members(versions[0])
        if names is not None and target in names:
            return  # two names of one file: POSIX rename does nothing
        self._leave_group(bucket, target, freed, record.time_ns)
        if record.time_ns and versions[0].posix is not None:  # a rename changes the ctime
            posix = replace(versions[0].posix, ctime_ns=record.time_ns)
            versions = (replace(versions[0], posix=posix), *versions[1:])
        self._set_versions(bucket, target, versions, freed)
        self._set_versions(bucket, source, (), freed)
        if names is not None:
            renamed = [target if n == source else n for n in names]
            self._set_group(bucket, renamed, freed, record.time_ns)
        self._touch_parent(bucket, source, record.time_ns, freed)
        self._touch_parent(bucket, target, record.time_ns, freed)

    def _rename_prefix(self, record: RenamePrefix, freed: list[Segment]) -> None:
        bucket, source, target = record.bucket, record.source_prefix, record.target_prefix
        self.bucket(bucket)
        if not source or not target:
            raise InvalidArgument("rename of a prefix needs non-empty source and target prefixes")
        if target.startswith(source) or source.startswith(target):
            raise InvalidArgument(f"cannot move {source!r} into {target!r} (one holds the other)")
        moving = self._keys_under(bucket, source)
        if not moving:
            raise NoSuchKey(f"no key under {source!r} in bucket {bucket!r}")
        if any(existing != target for existing in self._keys_under(bucket, target)):
            raise BucketNotEmpty(f"{target!r} is not empty in bucket {bucket!r}")
        longest = max(len(key.encode("utf-8")) for key in moving) - len(source.encode("utf-8"))
        if longest + len(target.encode("utf-8")) > MAX_KEY_BYTES:
            raise KeyTooLong(f"moving {source!r} to {target!r} makes keys longer than 1024 bytes")
        # The target's marker goes: out of its link group first (keeps groups whole).
        self._leave_group(bucket, ObjectKey(target), freed, record.time_ns)
        self._set_versions(bucket, target, (), freed)
        # The same versions under new names: references, counts and sizes stay as
        # they are, so the packed bytes move as they are (10,000 keys in milliseconds).
        linked: list[str] = []
        for key in moving:
            packed = self._objects.pop((bucket, key))
            self._objects[(bucket, target + key[len(source) :])] = packed
            if links.LINKS_BYTES in packed:  # maybe a member of a link group
                linked.append(target + key[len(source) :])
        renamed: set[tuple[str, ...]] = set()
        for key in linked:
            names = links.members(self.versions(bucket, ObjectKey(key))[0])
            if names is None:
                continue
            moved = tuple(target + n[len(source) :] if n.startswith(source) else n for n in names)
            if moved not in renamed:
                renamed.add(moved)
                self._set_group(bucket, list(moved), freed)
        self._touch_parent(bucket, source, record.time_ns, freed)
        self._touch_parent(bucket, target, record.time_ns, freed)

    def _keys_under(self, bucket: str, prefix: str) -> list[str]:
        """Every key starting with `prefix` (whatever its versions), without decoding."""
        found = self._objects.irange((bucket, prefix), (bucket, prefix + "\U0010ffff"))
        return [key for _, key in found]

    def _exchange(self, record: Exchange, freed: list[Segment]) -> None:
        bucket, first, second = record.bucket, record.first, record.second
        self.bucket(bucket)
        if first == second:
            return
        first_name, second_name = first.rstrip("/"), second.rstrip("/")
        if not first_name or not second_name:
            raise InvalidArgument("an exchange needs two non-empty names")
        if first_name.startswith(second_name + "/") or second_name.startswith(first_name + "/"):
            raise InvalidArgument(f"cannot exchange {first!r} and {second!r} (one holds the other)")
        moves: dict[str, str] = {}  # old key -> new key
        for source, target_name in ((first, second_name), (second, first_name)):
            if source.endswith("/"):  # a directory: every key under it
                keys = [key for key, _ in self.iter_keys(bucket, prefix=source)]
                target = target_name + "/"
            else:
                self.current(bucket, ObjectKey(source))  # NoSuchKey
                keys, target = [source], target_name
            if not keys:
                raise NoSuchKey(f"no key under {source!r} in bucket {bucket!r}")
            for key in keys:
                moved = target + key[len(source) :]
                if len(moved.encode("utf-8")) > MAX_KEY_BYTES:
                    raise KeyTooLong(f"exchanging makes {moved[:80]!r}... longer than 1024 bytes")
                moves[key] = moved
        # A name taken by a key that does not move (S3 keeps "a" beside "a/x"; the
        # mount shows one of them) would be overwritten, its versions lost unfreed.
        taken = [m for m in moves.values() if m not in moves and (bucket, m) in self._objects]
        if taken:
            raise KeyAlreadyExists(f"cannot exchange {first!r} and {second!r}: {taken[0]!r} exists")
        # The same versions under swapped names: references, counts and sizes are unchanged.
        packed = {key: self._objects.pop((bucket, key)) for key in moves}
        for key, moved in moves.items():
            self._objects[(bucket, moved)] = packed[key]
        groups: set[tuple[str, ...]] = set()
        for moved in moves.values():
            current = self.versions(bucket, ObjectKey(moved))[0]
            if current.delete_marker:  # a name with history only: it moves, nothing more
                continue
            if record.time_ns and current.posix is not None:  # moved: its ctime is now
                posix = replace(current.posix, ctime_ns=record.time_ns)
                self._replace_current(bucket, moved, replace(current, posix=posix), freed)
            names = links.members(current)
            if names is not None:
                groups.add(tuple(moves.get(name, name) for name in names))
        for group in groups:
            self._set_group(bucket, list(group), freed)
        self._touch_parent(bucket, first, record.time_ns, freed)
        self._touch_parent(bucket, second, record.time_ns, freed)

    def _set_attributes(self, record: SetAttributes, freed: list[Segment]) -> None:
        current = self.current(record.bucket, record.key)
        if record.if_mtime_ns is not None and current.mtime_ns != record.if_mtime_ns:
            raise PreconditionFailed(f"{record.key!r} changed since it was read")
        updated = current
        if record.posix is not None:
            updated = replace(updated, posix=record.posix)
        if record.metadata is not None:
            updated = replace(updated, metadata=links.kept(current, record.metadata))
        if record.content_type is not None:
            updated = replace(updated, content_type=record.content_type)
        if record.mtime_ns is not None:
            updated = replace(updated, mtime_ns=record.mtime_ns)
        if record.etag is not None:
            updated = replace(updated, etag=record.etag)
        self._replace_current(record.bucket, record.key, updated, freed)
        self._propagate(record.bucket, record.key, updated, freed)

    # -- hard link groups (links.py) -------------------------------------------------

    def _link_key(self, record: LinkKey, freed: list[Segment]) -> None:
        bucket, source, target = record.bucket, record.source_key, record.target_key
        current = self.current(bucket, source)
        target_versions = self.versions(bucket, target)
        if target_versions and not target_versions[0].delete_marker:
            raise KeyAlreadyExists(f"key {target!r} already exists in bucket {bucket!r}")
        names = sorted({*(links.members(current) or [source]), target})
        linked = replace(links.with_members(current, names), version_id=record.version_id)
        others = tuple(links.strip(v) for v in target_versions if v.version_id != linked.version_id)
        self._set_versions(bucket, target, (linked, *others), freed)
        self._set_group(bucket, names, freed, record.time_ns)
        self._touch_parent(bucket, target, record.time_ns, freed)

    def _leave_group(
        self, bucket: BucketName, key: ObjectKey, freed: list[Segment], time_ns: int = 0
    ) -> None:
        """`key`'s current version is about to go: the rest of its group forget it."""
        versions = self.versions(bucket, key)
        names = links.members(versions[0]) if versions else None
        if names is not None and key in names:
            self._set_group(bucket, [n for n in names if n != key], freed, time_ns)

    def _set_group(
        self, bucket: BucketName, names: list[str], freed: list[Segment], time_ns: int = 0
    ) -> None:
        """Write the group's member list into each member (no list for a group of one);
        with `time_ns`, the link count changed then: it is the members' ctime."""
        for name in names:
            current = links.with_members(self.current(bucket, ObjectKey(name)), names)
            if time_ns and current.posix is not None:
                current = replace(current, posix=replace(current.posix, ctime_ns=time_ns))
            self._replace_current(bucket, name, current, freed)

    def _touch_parent(
        self, bucket: BucketName, key: str, time_ns: int, freed: list[Segment]
    ) -> None:
        """A name appeared in or left its directory: the directory's marker, if it
        has POSIX attributes (made through the mount), takes `time_ns` as its mtime
        and ctime (a directory's times, as a filesystem keeps them)."""
        stripped = key.rstrip("/")
        parent = stripped[: stripped.rfind("/") + 1]
        if not time_ns or not parent:
            return
        versions = self.versions(bucket, ObjectKey(parent))
        if not versions or versions[0].delete_marker or versions[0].posix is None:
            return
        marker = versions[0]
        assert marker.posix is not None
        posix = replace(marker.posix, ctime_ns=time_ns, mtime_ns=None)
        touched = replace(marker, mtime_ns=time_ns, posix=posix)
        self._replace_current(bucket, parent, touched, freed)

    def _propagate(
        self, bucket: BucketName, key: ObjectKey, updated: ObjectVersion, freed: list[Segment]
    ) -> None:
        """A linked key changed: every other name of it becomes the same version."""
        for name in links.members(updated) or ():
            if name != key:
                other = self.current(bucket, ObjectKey(name))
                same = replace(updated, version_id=other.version_id)
                self._replace_current(bucket, name, same, freed)
