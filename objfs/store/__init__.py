"""objfs.store — the storage core. Imports nothing from the faces or their libraries.

`open_store` and `Store` are the API; everything else in this package is its insides.
"""

from __future__ import annotations

from objfs.store.opening import open_store
from objfs.store.store import Store
from objfs.store.types import (
    BucketInfo,
    BucketName,
    Change,
    DeleteResult,
    ListPage,
    ObjectInfo,
    ObjectKey,
    PosixAttrs,
    StoreStatistics,
    VersionId,
    Versioning,
)

__all__ = [
    "BucketInfo",
    "BucketName",
    "Change",
    "DeleteResult",
    "ListPage",
    "ObjectInfo",
    "ObjectKey",
    "PosixAttrs",
    "Store",
    "StoreStatistics",
    "VersionId",
    "Versioning",
    "open_store",
]
