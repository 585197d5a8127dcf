"""objfs.store.listing — one page of a bucket listing, from the index alone.

Implements the S3 listing rules once for both faces: keys in order after
`start_after` and under `prefix`; with a delimiter, keys that hold it after the
prefix roll up into one common prefix each, counted once against the limit; keys
whose newest version is a delete marker are not listed.
"""

from __future__ import annotations

from objfs.store.index import ObjectIndex
from objfs.store.types import BucketName, ListPage, ObjectInfo, ObjectKey, object_info

_AFTER_ALL = "\U0010ffff"  # sorts after every character a key may hold


def list_page(
    index: ObjectIndex,
    bucket: BucketName,
    prefix: str,
    delimiter: str | None,
    start_after: str,
    limit: int,
) -> ListPage:
    objects: list[ObjectInfo] = []
    prefixes: list[str] = []
    last: str | None = None
    cursor = start_after
    truncated = False
    while True:
        keys = index.iter_keys(bucket, start_after=cursor, prefix=prefix)
        restart = False
        for key, versions in keys:
            if delimiter:
                found = key.find(delimiter, len(prefix))
                if found >= 0:
                    common = key[: found + len(delimiter)]
                    cursor = common + _AFTER_ALL  # skip every key under the common prefix
                    if start_after.startswith(common):
                        restart = True
                        break
                    if len(objects) + len(prefixes) >= limit:
                        truncated = True
                        break
                    prefixes.append(common)
                    last = common
                    restart = True
                    break
            if versions[0].delete_marker:
                continue
            if len(objects) + len(prefixes) >= limit:
                truncated = True
                break
            objects.append(object_info(bucket, ObjectKey(key), versions[0]))
            last = key
        if truncated or not restart:
            break
    return ListPage(tuple(objects), tuple(prefixes), truncated, last if truncated else None)
