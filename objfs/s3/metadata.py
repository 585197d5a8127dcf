"""objfs.s3.metadata — which request headers are kept with an object, and how.

User metadata (`x-amz-meta-NAME`) is stored under NAME; the standard headers an
object keeps (Cache-Control and friends) under `h:NAME`, which no user
metadata name can be (":" is not allowed in a header name). GET and HEAD give
both back.
"""

from __future__ import annotations

import time
from dataclasses import replace

from objfs.s3.app import S3Request
from objfs.s3.errors import S3Error
from objfs.store import ObjectInfo, PosixAttrs, names
from objfs.store.types import UNSET_ID, UNSET_MODE

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
PART_CHECKSUMS = "p:checksums"  # and, if its upload had an algorithm, the parts' checksums
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


def form_metadata(fields: dict[str, str]) -> dict[str, str]:
    """The user metadata of a POST form's x-amz-meta-* fields: a form field can
    carry what no header can, and metadata that cannot be sent back as
    x-amz-meta-NAME would fail every GET and HEAD of the object.

    Raises:
        S3Error: InvalidArgument for a name that is no header name (RFC 9110
            token; ":" is the faces' own) or a value with a control character.
    """
    metadata = {}
    for field, value in fields.items():
        if not field.startswith("x-amz-meta-"):
            continue
        name = field[len("x-amz-meta-") :]
        if not names.is_metadata_name(name):
            raise S3Error("InvalidArgument", f"metadata name {name!r} is no HTTP header name")
        if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
            raise S3Error("InvalidArgument", f"metadata {name!r} holds a control character")
        metadata[name] = value
    return metadata


def posix_headers(info: ObjectInfo) -> dict[str, str]:
    """The POSIX attributes an object has, as s3fs shows them: x-amz-meta-mode
    (decimal, with the file type), -uid, -gid (those that are set) and -mtime
    (seconds, and a fraction to the nanosecond when there is one, as rclone writes it)."""
    posix = info.posix
    if posix is None:
        return {}
    headers = {}
    if posix.mode != UNSET_MODE:
        headers["x-amz-meta-mode"] = str(posix.mode)
    for name, value in (("uid", posix.uid), ("gid", posix.gid)):
        if value != UNSET_ID:
            headers[f"x-amz-meta-{name}"] = str(value)
    seconds, nanoseconds = divmod(
        info.mtime_ns if posix.mtime_ns is None else posix.mtime_ns, 10**9
    )
    fraction = f".{nanoseconds:09d}".rstrip("0") if nanoseconds else ""
    headers["x-amz-meta-mtime"] = f"{seconds}{fraction}"
    return {name: value for name, value in headers.items() if name[11:] not in dict(info.metadata)}


def posix_from(
    metadata: dict[str, str], base: PosixAttrs | None = None
) -> tuple[dict[str, str], PosixAttrs | None]:
    """s3fs's attributes in user metadata (x-amz-meta-mode, -uid, -gid, -mtime; rclone
    sends only -mtime), taken as the object's POSIX attributes so the mount shows
    what S3 does, and a change through the mount moves what S3 shows; the rest of
    the metadata is kept as it is. Values that are not numbers stay metadata.
    Attributes not given are `base`'s (a copy's source), else not set."""
    given = {name: metadata[name] for name in ("mode", "uid", "gid", "mtime") if name in metadata}
    if not given:
        return metadata, base
    try:
        mode, uid, gid = (int(given.get(name, "-1")) for name in ("mode", "uid", "gid"))
        mtime_ns = None if "mtime" not in given else _nanoseconds(given["mtime"])
    except ValueError:
        return metadata, base
    if "mode" in given and not 0 < mode < 1 << 32:
        return metadata, base
    if not (-1 <= uid < 1 << 32 and -1 <= gid < 1 << 32):
        return metadata, base
    if mtime_ns is not None and not 0 <= mtime_ns < 1 << 63:
        return metadata, base
    kept = {k: v for k, v in metadata.items() if k not in given}
    if base is None:
        when = time.time_ns() if mtime_ns is None else mtime_ns  # access, change: the file's
        base = PosixAttrs(UNSET_MODE, UNSET_ID, UNSET_ID, 0, when, when)
    return kept, replace(
        base,
        mode=mode if "mode" in given else base.mode,
        uid=uid if "uid" in given else base.uid,
        gid=gid if "gid" in given else base.gid,
        mtime_ns=mtime_ns if "mtime" in given else base.mtime_ns,
    )


def _nanoseconds(seconds: str) -> int:
    """An mtime in seconds ("1600000000", "1600000000.123456789") in ns, exactly.

    Raises:
        ValueError: not a number of seconds.
    """
    whole, dot, fraction = seconds.strip().partition(".")
    if not whole.isdigit() or (dot and not fraction.isdigit()):
        raise ValueError(f"not seconds: {seconds!r}")
    return int(whole) * 10**9 + int(fraction[:9].ljust(9, "0") if dot else "0")


def part_sizes(info: ObjectInfo) -> list[int] | None:
    """The part sizes of an object made by a multipart upload, or None (also once
    written in place through the mount: its ETag is then no multipart ETag)."""
    raw = dict(info.metadata).get(PART_SIZES)
    if raw is None:
        return None
    sizes = [int(size) for size in raw.split(",")]
    return sizes if (info.etag or "").endswith(f"-{len(sizes)}") else None


def part_checksums(info: ObjectInfo) -> list[tuple[str, str]] | None:
    """(algorithm, checksum) of each part of a multipart object whose upload had a
    checksum algorithm, in part order; None for any other object."""
    raw = dict(info.metadata).get(PART_CHECKSUMS)
    sizes = part_sizes(info)
    if raw is None or not info.checksums or sizes is None:
        return None
    values = raw.split(",")
    if len(values) != len(sizes):
        return None
    return [(info.checksums[0][0], value) for value in values]


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
