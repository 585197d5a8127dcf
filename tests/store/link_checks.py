"""Checks of hard link groups shared by test_links.py and test_links_model.py.

fsck checks pieces, counts and space, but neither the link groups (store/links.py)
nor the per-segment reference counts the groups lean on; these do, from the index
alone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from objfs.store import Store
from objfs.store.index import version_segments
from objfs.store.links import LINKS, members
from objfs.store.types import BucketName, ObjectKey, ObjectVersion, SegmentId, VersionId

Group = tuple[str, ...]


def same_file(version: ObjectVersion) -> ObjectVersion:
    """What every member of a group must share: all but the version id."""
    return replace(version, version_id=VersionId(""))


def check_groups(store: Store, bucket: str) -> dict[str, Group]:
    """Assert every link group of `bucket` is whole, and return key -> its group.

    Whole: each member's current version names the same sorted list of two or more
    keys, holding itself; every named key exists and is the same file but for its
    version id; no delete marker and no older version carries a list.
    """
    index = store.index
    found: dict[str, Group] = {}
    for (bucket_name, key), versions in index.iter_all():
        if bucket_name != bucket:
            continue
        for older in versions[1:]:
            assert members(older) is None, f"{key}: older version {older.version_id} is linked"
        names = members(versions[0])
        if names is None:
            continue
        assert not versions[0].delete_marker, f"{key}: a delete marker is linked"
        assert names == sorted(names) and len(set(names)) == len(names), (key, names)
        assert len(names) >= 2, f"{key}: a group of one {names}"
        assert key in names, f"{key} is not in its own group {names}"
        found[key] = tuple(names)
    for key, group in found.items():
        for name in group:
            assert found.get(name) == group, f"{key} names {group}, {name} names {found.get(name)}"
            mine = index.versions(BucketName(bucket), ObjectKey(key))[0]
            theirs = index.versions(BucketName(bucket), ObjectKey(name))[0]
            assert same_file(theirs) == same_file(mine), f"{key} and {name} differ"
    return found


def check_references(store: Store) -> None:
    """Each segment's reference count equals the versions that read from it."""
    counted: Counter[SegmentId] = Counter()
    for _key, versions in store.index.iter_all():
        for version in versions:
            for segment in version_segments(version):
                counted[segment.segment_id] += 1
    assert set(counted) == set(store.index.segment_ids()), "segments referenced differ"
    for segment_id, count in counted.items():
        assert store.index.references(segment_id) == count, segment_id


def index_state(store: Store) -> tuple[Any, ...]:
    """Everything the index holds, comparable with ==."""
    return (
        tuple(store.index.buckets()),
        tuple(store.index.iter_all()),
        store.index.version_count,
        store.index.logical_bytes,
    )


def links_entry(metadata: tuple[tuple[str, str], ...]) -> list[str]:
    return [value for name, value in metadata if name == LINKS]
