"""objfs.s3.metadata — which request headers are kept with an object, and how.

User metadata (`x-amz-meta-NAME`) is stored under NAME; the standard headers an
object keeps (Cache-Control and friends) under `h:NAME`, which no user
metadata name can be (":" is not allowed in a header name). GET and HEAD give
both back.
"""

from __future__ import annotations

import time

from objfs.s3.app import S3Request
from objfs.s3.errors import S3Error
from objfs.store import ObjectInfo, PosixAttrs

STORED_HEADERS = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
)
HEADER_PREFIX = "h:"
TAG_PREFIX = "t:"  # object tags: t:KEY = value
PART_SIZES = "p:sizes"  # a multipart object's part sizes, comma-separated
# Metadata names with a ":" are kept by the faces (ACL a:, tags t:, uploads m:,
# parts p:, the mount's links l: and xattrs x:): never shown as x-amz-meta.
MAX_METADATA_BYTES = 2048  # AWS: user metadata up to 2 KB


def user_metadata(s3: S3Request) -> dict[str, str]:
    metadata = {
        name[len("x-amz-meta-") :]: value
        for name, value in s3.headers.items()
        if name.startswith("x-amz-meta-")
    }
    for name in STORED_HEADERS:
        if name in s3.headers:
            metadata[HEADER_PREFIX + name] = s3.headers[name]
    size = sum(len(k) + len(v) for k, v in metadata.items() if not k.startswith(HEADER_PREFIX))
    if size > MAX_METADATA_BYTES:
        raise S3Error(
            "MetadataTooLarge",
            "Your metadata headers exceed the maximum allowed metadata size "
            f"({MAX_METADATA_BYTES} bytes).",
        )
    return metadata


def posix_headers(info: ObjectInfo) -> dict[str, str]:
    """The POSIX attributes set through the mount, as s3fs shows them: x-amz-meta-
    mode (decimal, with the file type), uid, gid and mtime (seconds)."""
    posix = info.posix
    if posix is None:
        return {}
    shown = {"mode": posix.mode, "uid": posix.uid, "gid": posix.gid}
    headers = {f"x-amz-meta-{name}": str(value) for name, value in shown.items()}
    mtime_ns = info.mtime_ns if posix.mtime_ns is None else posix.mtime_ns
    headers["x-amz-meta-mtime"] = str(mtime_ns // 1_000_000_000)
    return {name: value for name, value in headers.items() if name[11:] not in dict(info.metadata)}


def posix_from(metadata: dict[str, str]) -> tuple[dict[str, str], PosixAttrs | None]:
    """s3fs's attributes in user metadata (x-amz-meta-mode, -uid, -gid, -mtime),
    taken as the object's POSIX attributes so the mount shows what S3 does; the
    rest of the metadata is kept as it is. Values that are not numbers stay metadata."""
    try:
        mode = int(metadata["mode"])
        uid, gid = int(metadata.get("uid", "0")), int(metadata.get("gid", "0"))
        mtime = metadata.get("mtime")
        mtime_ns = None if mtime is None else round(float(mtime) * 1e9)
    except (KeyError, ValueError, OverflowError):
        return metadata, None
    if not (0 < mode < 1 << 32 and 0 <= uid < 1 << 32 and 0 <= gid < 1 << 32):
        return metadata, None
    if mtime_ns is not None and not 0 <= mtime_ns < 1 << 63:
        return metadata, None
    kept = {k: v for k, v in metadata.items() if k not in ("mode", "uid", "gid", "mtime")}
    when = time.time_ns() if mtime_ns is None else mtime_ns  # access, change: the file's
    return kept, PosixAttrs(mode, uid, gid, 0, when, when, mtime_ns)


def part_sizes(metadata: tuple[tuple[str, str], ...]) -> list[int] | None:
    """The part sizes of an object made by a multipart upload, or None."""
    raw = dict(metadata).get(PART_SIZES)
    return None if raw is None else [int(size) for size in raw.split(",")]


def part_span(sizes: list[int] | None, total: int, part_number: int) -> tuple[int, int]:
    """[start, end) of part `part_number` (an object not made of parts is part 1).

    Raises:
        S3Error: InvalidPartNumber when there is no such part.
    """
    sizes = sizes or [total]
    if not 1 <= part_number <= len(sizes):
        raise S3Error(
            "InvalidPartNumber", "The requested partnumber is not satisfiable", status=416
        )
    start = sum(sizes[: part_number - 1])
    return start, start + sizes[part_number - 1]
