"""objfs.store.listing — one page of a bucket listing, from the index alone.

Implements the S3 listing rules once for both faces: keys in order after
`start_after` and under `prefix`; with a delimiter, keys that hold it after the
prefix roll up into one common prefix each, counted once against the limit; keys
whose newest version is a delete marker are not listed.
"""

from __future__ import annotations

from dataclasses import dataclass

from objfs.store.index import ObjectIndex
from objfs.store.types import BucketName, ListPage, ObjectInfo, ObjectKey, object_info

_LAST_CODE_POINT = 0x10FFFF


def prefix_successor(prefix: str) -> str | None:
    """The smallest string above every string that starts with `prefix` (None: none is).

    Example: "a/" -> "a0" (the next code point after "/"); "a\U0010ffff" -> "b".
    Keys never hold surrogates, so the step over them is safe.
    """
    while prefix:
        code = ord(prefix[-1])
        if code < _LAST_CODE_POINT:
            code = 0xE000 if 0xD800 <= code + 1 <= 0xDFFF else code + 1
            return prefix[:-1] + chr(code)
        prefix = prefix[:-1]
    return None


def list_page(
    index: ObjectIndex,
    bucket: BucketName,
    prefix: str,
    delimiter: str | None,
    start_after: str,
    limit: int,
) -> ListPage:
    if limit <= 0:
        return ListPage((), (), False, None)  # asked for nothing (S3 max-keys=0)
    objects: list[ObjectInfo] = []
    prefixes: list[str] = []
    last: str | None = None
    truncated = False
    start_at: str | None = None  # where to go on after skipping a common prefix
    while True:
        keys = index.iter_keys(
            bucket, start_after=start_after, prefix=prefix, start_at=start_at, heads=True
        )
        skip_to: str | None = None
        for key, versions in keys:
            if versions[0].delete_marker:
                continue  # hidden, and a directory of hidden keys is not listed either
            common = None
            if delimiter:
                found = key.find(delimiter, len(prefix))
                if found >= 0:
                    common = key[: found + len(delimiter)]
            if common is not None and start_after.startswith(common):
                skip_to = prefix_successor(common) or ""  # listed on an earlier page
                break
            if len(objects) + len(prefixes) >= limit:
                truncated = True
                break
            if common is None:
                objects.append(object_info(bucket, ObjectKey(key), versions[0]))
                last = key
                continue
            prefixes.append(common)
            last = common
            skip_to = prefix_successor(common) or ""
            break
        if truncated or not skip_to:
            break
        start_at = skip_to
    return ListPage(tuple(objects), tuple(prefixes), truncated, last if truncated else None)


@dataclass(frozen=True, slots=True)
class VersionsPage:
    """One page of a versions listing (S3 ListObjectVersions)."""

    entries: tuple[ObjectInfo, ...]  # versions and delete markers: by key, newest first
    common_prefixes: tuple[str, ...]
    is_truncated: bool
    next_key_marker: str | None
    next_version_id_marker: str | None


def list_versions_page(
    index: ObjectIndex,
    bucket: BucketName,
    prefix: str,
    delimiter: str | None,
    key_marker: str,
    version_id_marker: str,
    limit: int,
) -> VersionsPage:
    """Every version and delete marker under `prefix`, after (key_marker,
    version_id_marker): with a version id marker, the versions of key_marker that
    come after that one, then later keys; without, keys after key_marker."""
    entries: list[ObjectInfo] = []
    prefixes: list[str] = []
    next_key: str | None = None
    next_version: str | None = None
    if limit <= 0:
        return VersionsPage((), (), False, None, None)
    start_at: str | None = key_marker if version_id_marker else None
    start_after = "" if version_id_marker else key_marker
    while True:
        skip_to: str | None = None
        for key, versions in index.iter_keys(
            bucket, start_after=start_after, prefix=prefix, start_at=start_at, heads=True
        ):
            common = None
            if delimiter:
                found = key.find(delimiter, len(prefix))
                if found >= 0:
                    common = key[: found + len(delimiter)]
            if common is not None:
                if key_marker.startswith(common) or common in prefixes:
                    skip_to = prefix_successor(common) or ""
                    break
                if len(entries) + len(prefixes) >= limit:
                    return VersionsPage(
                        tuple(entries), tuple(prefixes), True, next_key, next_version
                    )
                prefixes.append(common)
                next_key, next_version = common, None
                skip_to = prefix_successor(common) or ""
                break
            passed = not (version_id_marker and key == key_marker)
            for position, version in enumerate(versions):
                if not passed:
                    passed = version.version_id == version_id_marker
                    continue
                if len(entries) + len(prefixes) >= limit:
                    return VersionsPage(
                        tuple(entries), tuple(prefixes), True, next_key, next_version
                    )
                entries.append(
                    object_info(bucket, ObjectKey(key), version, is_latest=position == 0)
                )
                next_key, next_version = key, version.version_id
        if not skip_to:
            return VersionsPage(tuple(entries), tuple(prefixes), False, None, None)
        start_at, start_after = skip_to, ""
