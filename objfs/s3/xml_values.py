"""objfs.s3.xml_values — the values S3 documents carry both ways, and their text forms.

What the renderers (xml_render, xml_listing) and the parser (xml_parse) share:
the S3 and XSI namespaces; owners, grants, CORS rules and checksums as plain
frozen values; and the one spelling of each value in text: dates (ISO 8601 in
bodies, IMF-fixdate in headers), quoted and unquoted ETags, checksum algorithms
in AWS's element order, and text cleaned to what XML 1.0 can carry. Pure: no
ElementTree, no web framework, no store calls.
"""

from __future__ import annotations

import datetime
import email.utils
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
XSI_NAMESPACE = "http://www.w3.org/2001/XMLSchema-instance"

# Checksum algorithms in the order AWS lists their elements; element = "Checksum" + name.
CHECKSUM_ALGORITHMS = (
    "CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256",
    "SHA512", "MD5", "XXHASH64", "XXHASH3", "XXHASH128",
)  # fmt: skip

# (algorithm, value) pairs in any case ("crc32c" or "CRC32C"), or a mapping of them:
# ObjectInfo.checksums passes as it is.
Checksums: TypeAlias = Mapping[str, str] | Iterable[tuple[str, str]]
# (grantee_type "CanonicalUser" | "Group", ID or URI, display name, permission)
Grant: TypeAlias = tuple[str, str, str | None, str]


@dataclass(frozen=True, slots=True)
class Owner:
    """An <Owner>/<Initiator>: canonical user ID and (optional) display name."""

    id: str
    display_name: str | None = None


@dataclass(frozen=True, slots=True)
class CorsRule:
    """One <CORSRule>. Methods are upper case; at least one origin and one method."""

    allowed_origins: tuple[str, ...]
    allowed_methods: tuple[str, ...]
    allowed_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age_seconds: int | None = None
    id: str | None = None


# --- dates and ETags ------------------------------------------------------------------


def last_modified_iso(mtime_ns: int) -> str:
    """ISO 8601 UTC with milliseconds, as S3 bodies carry it: 2026-11-21T09:15:00.000Z."""
    seconds, rest_ns = divmod(mtime_ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{rest_ns // 1_000_000:03d}Z"


def http_date(mtime_ns: int) -> str:
    """RFC 7231 IMF-fixdate for headers (Last-Modified): Sat, 21 Nov 2026 09:15:00 GMT.

    Whole seconds: the fraction is dropped (truncated, never rounded up into the future).
    """
    return email.utils.formatdate(mtime_ns // 1_000_000_000, usegmt=True)


def parse_http_date(value: str) -> int | None:
    """Nanoseconds since the epoch of an HTTP date header, or None when it is not one
    (RFC 7232 says to ignore an invalid If-Modified-Since, not to fail the request)."""
    try:
        parsed = email.utils.parsedate_to_datetime(value)
        if parsed.tzinfo is None:  # "-0000": UTC, said without an offset
            parsed = parsed.replace(tzinfo=datetime.UTC)
        return int(parsed.timestamp()) * 1_000_000_000
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def quote_etag(etag: str) -> str:
    """The ETag as headers and bodies carry it: in double quotes (kept if already quoted)."""
    if len(etag) >= 2 and etag.startswith('"') and etag.endswith('"'):
        return etag
    return f'"{etag}"'


def unquote_etag(value: str) -> str:
    """An ETag as a client sent it ("abc", abc, W/"abc") without quotes or weak prefix."""
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return value[1:-1]
    return value


# --- checksums and text ---------------------------------------------------------------


def checksum_pairs(checksums: Checksums | None) -> list[tuple[str, str]]:
    """(algorithm upper case, value) in AWS element order. Raises ValueError on an
    algorithm S3 does not know (a caller's bug, not a client's)."""
    if checksums is None:
        return []
    items = checksums.items() if isinstance(checksums, Mapping) else checksums
    given = {name.upper(): value for name, value in items}
    unknown = set(given) - set(CHECKSUM_ALGORITHMS)
    if unknown:
        raise ValueError(f"unknown checksum algorithms {sorted(unknown)}")
    return [(name, given[name]) for name in CHECKSUM_ALGORITHMS if name in given]


# Characters XML 1.0 cannot carry at all, not even as references. Keys never hold C0
# controls (the core refuses them), but U+FFFE/U+FFFF and echoed request parameters can.
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def clean(text: str) -> str:
    """`text` with XML-invalid characters replaced by U+FFFD (a client that needs such a
    key exactly asks for encoding-type=url, as with AWS)."""
    return _XML_INVALID.sub("\ufffd", text)
