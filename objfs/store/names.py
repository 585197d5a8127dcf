"""objfs.store.names — which bucket names and keys the core accepts.

Bucket names follow the S3 rules for new buckets. Keys are UTF-8, 1..1024 bytes,
with no NUL or other C0 control character and no `.` or `..` path segment (such a
key would escape its directory in the mount). Everything is checked before any
byte is written, and refused with an `InvalidArgument`-family error naming why.
"""

from __future__ import annotations

import ipaddress
import re
import string

from objfs.errors import (
    EntityTooLarge,
    InvalidArgument,
    InvalidBucketName,
    InvalidKey,
    KeyTooLong,
)
from objfs.store.types import BucketName, ObjectKey

MAX_KEY_BYTES = 1024
INTERNAL_BUCKET_PREFIX = ".objfs-"  # no S3 bucket name starts with a dot
MAX_OBJECT_BYTES = 5 * 1024**4  # 5 TiB, as S3: offsets and sizes beyond are refused
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # used with fullmatch: no "\n" slips by
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BAD_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BAD_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
# What an HTTP header name may hold (RFC 9110 tchar), lower case; no ":".
_METADATA_NAME_CHARS = frozenset(string.ascii_lowercase + string.digits + "!#$%&'*+-.^_`|~")


def check_bucket_name(name: str) -> BucketName:
    """Return `name` as a BucketName, or raise InvalidBucketName saying which rule it breaks."""
    if not isinstance(name, str) or not _BUCKET.fullmatch(name):
        raise InvalidBucketName(
            f"bucket name {name!r:.80}: use 3 to 63 lowercase letters, digits, dots and "
            "hyphens, beginning and ending with a letter or digit"
        )
    if ".." in name or ".-" in name or "-." in name:
        raise InvalidBucketName(f"bucket name {name!r}: no two adjacent dots or dot-hyphen pairs")
    if name.startswith(_BAD_PREFIXES) or name.endswith(_BAD_SUFFIXES):
        raise InvalidBucketName(f"bucket name {name!r}: reserved prefix or suffix")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return BucketName(name)
    raise InvalidBucketName(f"bucket name {name!r}: must not look like an IP address")


def check_key(key: str) -> ObjectKey:
    """Return `key` as an ObjectKey, or raise InvalidKey / KeyTooLong."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("the key is empty")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKey(f"key {key!r:.80} is not valid UTF-8") from exc
    if len(encoded) > MAX_KEY_BYTES:
        raise KeyTooLong(f"key of {len(encoded)} bytes is longer than {MAX_KEY_BYTES} bytes")
    if _CONTROL.search(key):
        raise InvalidKey(f"key {key!r:.80} holds a NUL or control character")
    if any(segment in (".", "..") for segment in key.split("/")):
        raise InvalidKey(f"key {key!r:.80} holds a '.' or '..' path segment")
    return ObjectKey(key)


def check_extent_of_object(offset_bytes: int, length_bytes: int = 0) -> None:
    """An offset and length inside the largest object objfs stores.

    Raises:
        InvalidArgument: a negative offset or length.
        EntityTooLarge: the end lies past MAX_OBJECT_BYTES.
    """
    if offset_bytes < 0 or length_bytes < 0:
        raise InvalidArgument(f"negative offset or size ({offset_bytes}, {length_bytes})")
    if offset_bytes + length_bytes > MAX_OBJECT_BYTES:
        raise EntityTooLarge(
            f"an object may not reach past {MAX_OBJECT_BYTES} bytes "
            f"(asked for {offset_bytes + length_bytes})"
        )


def check_prefix(prefix: str) -> str:
    """A prefix to rename under: a key that ends with '/' (a directory)."""
    check_key(prefix)
    if not prefix.endswith("/"):
        raise InvalidKey(f"prefix {prefix!r:.80} must end with '/'")
    return prefix


def is_metadata_name(name: str) -> bool:
    """Whether user metadata named `name` can be shown by both faces: S3 sends it
    as the header x-amz-meta-NAME (a token, lower case), the mount as the xattr
    user.NAME. Names with ":" are the faces' own (ACLs, tags, links...)."""
    return bool(name) and set(name) <= _METADATA_NAME_CHARS
