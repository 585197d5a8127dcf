"""objfs.store.links — hard links: several keys that are one file.

A hard link group is a set of keys of one bucket whose current versions are
the same version (same pieces, size, times, POSIX attributes, metadata) but
for their version ids. Each member's current version names every member in
its metadata under `LINKS` (a JSON list, sorted), so the group needs no table
of its own: it is in the index, the WAL and the checkpoints like any metadata.
The index keeps the groups whole (index.py): a write, truncate or attribute
change of one member is applied to every member in the same record; a member
overwritten, deleted or renamed is taken out of (or renamed in) every
member's list; a group of one is no group (the entry is removed).

S3 sees each member as an ordinary object with the same bytes; the mount shows
them as one inode with a link count.
"""

from __future__ import annotations

import json
from dataclasses import replace

from objfs.store.types import ObjectVersion

LINKS = "l:links"  # ":" keeps it apart from S3 user metadata names
LINKS_BYTES = LINKS.encode()  # in the packed bytes of every version that has it


def members(version: ObjectVersion | None) -> list[str] | None:
    """The keys of the version's link group, or None when it is not linked."""
    if version is None or not version.metadata:
        return None
    for name, value in version.metadata:
        if name == LINKS:
            found: list[str] = json.loads(value)
            return found
    return None


def with_members(version: ObjectVersion, names: list[str] | None) -> ObjectVersion:
    """The version naming `names` as its group (None or one name: no group)."""
    metadata = [(k, v) for k, v in version.metadata if k != LINKS]
    if names is not None and len(names) > 1:
        metadata.append((LINKS, json.dumps(sorted(names), ensure_ascii=False)))
        metadata.sort()
    if tuple(metadata) == version.metadata:
        return version
    return replace(version, metadata=tuple(metadata))


def strip(version: ObjectVersion) -> ObjectVersion:
    return with_members(version, None)


def kept(
    current: ObjectVersion, metadata: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    """New metadata for a linked version: whatever a face sets, the group entry stays."""
    names = members(current)
    rest = [(k, v) for k, v in metadata if k != LINKS]
    if names is not None:
        rest.append((LINKS, json.dumps(sorted(names), ensure_ascii=False)))
    return tuple(sorted(rest))
