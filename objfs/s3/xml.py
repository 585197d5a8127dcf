"""objfs.s3.xml — the S3 XML vocabulary: render response bodies, parse request bodies.

Pure functions over plain values (core types or the small frozen types below) to
and from bytes; no web framework, no store calls. Responses are built with
ElementTree; request bodies are read ONLY through defusedxml with DTDs, entities and
external references forbidden, and anything unreadable becomes S3Error("MalformedXML").
Names and shapes follow the AWS S3 API (botocore's service model is the test oracle).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email.utils
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import quote_plus, unquote

from defusedxml import ElementTree as _defused

from objfs.s3.errors import S3Error
from objfs.store.types import BucketInfo, ListPage, ObjectInfo, Versioning

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
XSI_NAMESPACE = "http://www.w3.org/2001/XMLSchema-instance"
_PROLOG = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_MALFORMED = (
    "The XML you provided was not well-formed or did not validate against our published schema"
)

DELETE_OBJECTS_MAX = 1000
PART_NUMBER_MAX = 10_000
OBJECT_TAGS_MAX = 10
BUCKET_TAGS_MAX = 50
TAG_KEY_CHARS_MAX = 128
TAG_VALUE_CHARS_MAX = 256
CORS_RULES_MAX = 100
ACL_GRANTS_MAX = 100
_TOKEN_CHARS_MAX = 4096  # a token for a 1024-byte key is 1368 base64 characters
CORS_METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
PERMISSIONS = ("FULL_CONTROL", "WRITE", "WRITE_ACP", "READ", "READ_ACP")
GROUP_URIS = tuple(
    "http://acs.amazonaws.com/groups/" + name
    for name in ("global/AllUsers", "global/AuthenticatedUsers", "s3/LogDelivery")
)
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
# (key, version_id, delete_marker, delete_marker_version_id)
Deleted: TypeAlias = tuple[str, str | None, bool, str | None]
# (key, version_id, code, message)
DeleteError: TypeAlias = tuple[str, str | None, str, str]


@dataclass(frozen=True, slots=True)
class Owner:
    """An <Owner>/<Initiator>: canonical user ID and (optional) display name."""

    id: str
    display_name: str | None = None


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a multipart upload, for ListParts and GetObjectAttributes."""

    part_number: int
    size_bytes: int
    etag: str | None = None  # hex, unquoted; ListParts only
    mtime_ns: int | None = None  # ListParts only
    checksums: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ObjectParts:
    """The <ObjectParts> of GetObjectAttributes: one page of an object's parts."""

    total_parts_count: int
    parts: tuple[Part, ...] = ()
    part_number_marker: int = 0
    next_part_number_marker: int | None = None
    max_parts: int = 1000
    is_truncated: bool = False


@dataclass(frozen=True, slots=True)
class Upload:
    """One in-progress multipart upload, for ListMultipartUploads."""

    key: str
    upload_id: str
    initiated_ns: int
    owner: Owner | None = None
    initiator: Owner | None = None
    storage_class: str = "STANDARD"
    checksum_algorithm: str | None = None


@dataclass(frozen=True, slots=True)
class CorsRule:
    """One <CORSRule>. Methods are upper case; at least one origin and one method."""

    allowed_origins: tuple[str, ...]
    allowed_methods: tuple[str, ...]
    allowed_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age_seconds: int | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class AccessControlPolicy:
    """A parsed <AccessControlPolicy>; the owner is None when the body has none."""

    owner_id: str | None
    owner_name: str | None
    grants: tuple[Grant, ...]


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


# --- rendering helpers ----------------------------------------------------------------

# Characters XML 1.0 cannot carry at all, not even as references. Keys never hold C0
# controls (the core refuses them), but U+FFFE/U+FFFF and echoed request parameters can.
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(text: str) -> str:
    """`text` with XML-invalid characters replaced by U+FFFD (a client that needs such a
    key exactly asks for encoding-type=url, as with AWS)."""
    return _XML_INVALID.sub("\ufffd", text)


def _url(text: str) -> str:
    """encoding-type=url as S3 does it: form encoding, "/" kept, space as "+"
    (botocore decodes with unquote_plus). Example: "a b+c/d=e" -> "a+b%2Bc/d%3De"."""
    return quote_plus(text, safe="/", errors="replace")


def _root(tag: str) -> ET.Element:
    return ET.Element(tag, xmlns=S3_NAMESPACE)


def _add(parent: ET.Element, tag: str, text: str | int | bool | None = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    if isinstance(text, bool):
        child.text = "true" if text else "false"
    elif isinstance(text, int):
        child.text = str(text)
    elif text is not None:
        child.text = _clean(text)
    return child


def _document(root: ET.Element) -> bytes:
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return _PROLOG + body


def _owner(parent: ET.Element, tag: str, owner: Owner) -> None:
    element = _add(parent, tag)
    _add(element, "ID", owner.id)
    if owner.display_name is not None:
        _add(element, "DisplayName", owner.display_name)


def _checksum_pairs(checksums: Checksums | None) -> list[tuple[str, str]]:
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


def _checksums(parent: ET.Element, checksums: Checksums | None, kind: str | None) -> None:
    for name, value in _checksum_pairs(checksums):
        _add(parent, "Checksum" + name, value)
    if kind is not None:
        _add(parent, "ChecksumType", kind)


def check_encoding_type(value: str | None) -> str | None:
    """The encoding-type query parameter: None or "url".

    Raises:
        S3Error: InvalidArgument for any other value, as AWS.
    """
    if value is None or value == "url":
        return value
    raise S3Error(
        "InvalidArgument",
        "Invalid Encoding Method specified in Request",
        ArgumentName="encoding-type",
        ArgumentValue=_clean(value),
    )


def _encoder(encoding_type: str | None) -> Callable[[str], str]:
    return _url if check_encoding_type(encoding_type) == "url" else _clean


# --- errors, buckets ------------------------------------------------------------------


def error(code: str, message: str, resource: str | None, request_id: str, /, **extra: str) -> bytes:
    """The <Error> body of a failed request (no namespace, as AWS).

    Args:
        code, message: the S3 error code and its text.
        resource: the bucket or object path the request named; omitted when None.
        request_id: the x-amz-request-id of the response.
        **extra: more elements (BucketName, Key, ArgumentName...) in the given order.
    """
    root = ET.Element("Error")
    _add(root, "Code", code)
    _add(root, "Message", message)
    for tag, text in extra.items():
        _add(root, tag, text)
    if resource is not None:
        _add(root, "Resource", resource)
    _add(root, "RequestId", request_id)
    return _document(root)


def list_buckets(
    owner_id: str,
    owner_name: str | None,
    buckets: Sequence[BucketInfo],
    *,
    region: str | None = None,
) -> bytes:
    """ListAllMyBucketsResult; `region` (when given) is each bucket's BucketRegion."""
    root = _root("ListAllMyBucketsResult")
    _owner(root, "Owner", Owner(owner_id, owner_name))
    listing = _add(root, "Buckets")
    for bucket in buckets:
        entry = _add(listing, "Bucket")
        _add(entry, "Name", bucket.name)
        _add(entry, "CreationDate", last_modified_iso(bucket.created_ns))
        if region is not None:
            _add(entry, "BucketRegion", region)
    return _document(root)


def location(region: str | None) -> bytes:
    """GetBucketLocation: <LocationConstraint>, empty for us-east-1 (and None), as AWS."""
    root = _root("LocationConstraint")
    if region and region != "us-east-1":
        root.text = _clean(region)
    return _document(root)


def versioning(status: Versioning | str | None) -> bytes:
    """GetBucketVersioning: Status Enabled/Suspended, or an empty configuration when
    versioning was never turned on (None, "" or Versioning.DISABLED)."""
    if isinstance(status, Versioning):
        status = {Versioning.ENABLED: "Enabled", Versioning.SUSPENDED: "Suspended"}.get(status)
    root = _root("VersioningConfiguration")
    if status:
        _add(root, "Status", status)
    return _document(root)


# --- listings -------------------------------------------------------------------------


def _contents(
    parent: ET.Element,
    tag: str,
    info: ObjectInfo,
    owner: Owner | None,
    encode: Callable[[str], str],
) -> None:
    """One <Contents> / <Version> / <DeleteMarker> entry, in the element order AWS sends."""
    entry = _add(parent, tag)
    _add(entry, "Key", encode(info.key))
    if tag != "Contents":
        _add(entry, "VersionId", info.version_id)
        _add(entry, "IsLatest", info.is_latest)
    _add(entry, "LastModified", last_modified_iso(info.mtime_ns))
    if tag != "DeleteMarker":
        if info.etag is not None:
            _add(entry, "ETag", quote_etag(info.etag))
        for name, _value in _checksum_pairs(info.checksums):
            _add(entry, "ChecksumAlgorithm", name)
        _add(entry, "Size", info.size_bytes)
    if owner is not None:
        _owner(entry, "Owner", owner)
    if tag != "DeleteMarker":
        _add(entry, "StorageClass", "STANDARD")


def _common_prefixes(
    parent: ET.Element, prefixes: Iterable[str], encode: Callable[[str], str]
) -> None:
    for prefix in prefixes:
        _add(_add(parent, "CommonPrefixes"), "Prefix", encode(prefix))


def _unpack(
    page: ListPage, objects: Sequence[ObjectInfo], common_prefixes: Sequence[str]
) -> tuple[Sequence[ObjectInfo], Sequence[str], bool]:
    if objects or common_prefixes:
        raise ValueError("pass a page or its objects and common prefixes, not both")
    return page.objects, page.common_prefixes, page.is_truncated


def encode_continuation_token(start_after: str) -> str:
    """The opaque NextContinuationToken for a listing that goes on after `start_after`
    (URL-safe base64 of its UTF-8: a position, not a secret; forging one is no more
    than sending start-after)."""
    return base64.urlsafe_b64encode(start_after.encode("utf-8", "surrogatepass")).decode()


def decode_continuation_token(token: str) -> str:
    """The position a continuation-token names (see encode_continuation_token).

    Raises:
        S3Error: InvalidArgument for a token this node did not make, as AWS.
    """
    try:
        if not token or len(token) > _TOKEN_CHARS_MAX:
            raise ValueError("empty or too long")
        raw = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True)
        return raw.decode("utf-8", "surrogatepass")
    except (ValueError, binascii.Error) as exc:  # UnicodeErrors are ValueErrors
        raise S3Error(
            "InvalidArgument",
            "The continuation token provided is incorrect",
            ArgumentName="continuation-token",
        ) from exc


def list_objects_v2(
    bucket: str,
    *,
    page: ListPage | None = None,
    objects: Sequence[ObjectInfo] = (),
    common_prefixes: Sequence[str] = (),
    is_truncated: bool = False,
    prefix: str = "",
    delimiter: str | None = None,
    max_keys: int = 1000,
    encoding_type: str | None = None,
    continuation_token: str | None = None,
    next_continuation_token: str | None = None,
    start_after: str | None = None,
    key_count: int | None = None,
    fetch_owner: bool = False,
    owner: Owner | None = None,
) -> bytes:
    """ListBucketResult of ListObjectsV2.

    Args:
        page: the store's page; it gives objects, common prefixes, is_truncated and
            (when truncated) next_continuation_token = encode_continuation_token(
            page.next_start_after). Or pass those four yourself.
        objects, common_prefixes: the page, each in key order.
        encoding_type: None or "url"; with "url" Key, Prefix, Delimiter, StartAfter and
            CommonPrefixes/Prefix are URL-encoded (tokens never are).
        continuation_token, start_after: echoed when not None/empty (pass start_after
            only when no continuation token displaced it, as AWS).
        next_continuation_token: rendered when not None (give it when truncated).
        key_count: defaults to len(objects) + len(common_prefixes).
        fetch_owner, owner: each entry carries <Owner> only with fetch_owner and an owner.

    Raises:
        S3Error: InvalidArgument for an encoding_type other than None/"url".
    """
    encode = _encoder(encoding_type)
    if page is not None:
        objects, common_prefixes, is_truncated = _unpack(page, objects, common_prefixes)
        if page.next_start_after is not None:
            next_continuation_token = encode_continuation_token(page.next_start_after)
    root = _root("ListBucketResult")
    _add(root, "Name", bucket)
    _add(root, "Prefix", encode(prefix))
    if continuation_token:
        _add(root, "ContinuationToken", continuation_token)
    if next_continuation_token is not None:
        _add(root, "NextContinuationToken", next_continuation_token)
    if start_after:
        _add(root, "StartAfter", encode(start_after))
    count = len(objects) + len(common_prefixes) if key_count is None else key_count
    _add(root, "KeyCount", count)
    _add(root, "MaxKeys", max_keys)
    if delimiter:
        _add(root, "Delimiter", encode(delimiter))
    if encoding_type is not None:
        _add(root, "EncodingType", encoding_type)
    _add(root, "IsTruncated", is_truncated)
    for info in objects:
        _contents(root, "Contents", info, owner if fetch_owner else None, encode)
    _common_prefixes(root, common_prefixes, encode)
    return _document(root)


def list_objects_v1(
    bucket: str,
    *,
    page: ListPage | None = None,
    objects: Sequence[ObjectInfo] = (),
    common_prefixes: Sequence[str] = (),
    is_truncated: bool = False,
    prefix: str = "",
    delimiter: str | None = None,
    max_keys: int = 1000,
    encoding_type: str | None = None,
    marker: str = "",
    next_marker: str | None = None,
    owner: Owner | None = None,
) -> bytes:
    """ListBucketResult of ListObjects (v1).

    Marker is always present (empty when none was sent). NextMarker is rendered only
    with a delimiter and a truncated page, as AWS (without one, clients continue from
    the last key); the caller passes the last key or common prefix of the page, or
    passes `page` (the store's ListPage: objects, common prefixes, is_truncated and
    next_start_after as the next marker).
    With encoding_type "url": Key, Prefix, Delimiter, Marker, NextMarker and
    CommonPrefixes/Prefix are URL-encoded. Every entry carries `owner` when given.

    Raises:
        S3Error: InvalidArgument for an encoding_type other than None/"url".
    """
    encode = _encoder(encoding_type)
    if page is not None:
        objects, common_prefixes, is_truncated = _unpack(page, objects, common_prefixes)
        next_marker = page.next_start_after
    root = _root("ListBucketResult")
    _add(root, "Name", bucket)
    _add(root, "Prefix", encode(prefix))
    _add(root, "Marker", encode(marker))
    if delimiter and is_truncated and next_marker is not None:
        _add(root, "NextMarker", encode(next_marker))
    _add(root, "MaxKeys", max_keys)
    if delimiter:
        _add(root, "Delimiter", encode(delimiter))
    if encoding_type is not None:
        _add(root, "EncodingType", encoding_type)
    _add(root, "IsTruncated", is_truncated)
    for info in objects:
        _contents(root, "Contents", info, owner, encode)
    _common_prefixes(root, common_prefixes, encode)
    return _document(root)


def list_object_versions(
    bucket: str,
    *,
    entries: Sequence[ObjectInfo],
    common_prefixes: Sequence[str] = (),
    is_truncated: bool = False,
    prefix: str = "",
    delimiter: str | None = None,
    max_keys: int = 1000,
    encoding_type: str | None = None,
    key_marker: str = "",
    version_id_marker: str = "",
    next_key_marker: str | None = None,
    next_version_id_marker: str | None = None,
    owner: Owner | None = None,
) -> bytes:
    """ListVersionsResult: <Version> and <DeleteMarker> entries (ObjectInfo.delete_marker
    says which) in the order given: key order, newest version of a key first.

    The next markers are rendered when not None (give them when truncated). With
    encoding_type "url": Key, Prefix, Delimiter, KeyMarker, NextKeyMarker and
    CommonPrefixes/Prefix are URL-encoded; version ids never are.

    Raises:
        S3Error: InvalidArgument for an encoding_type other than None/"url".
    """
    encode = _encoder(encoding_type)
    root = _root("ListVersionsResult")
    _add(root, "Name", bucket)
    _add(root, "Prefix", encode(prefix))
    _add(root, "KeyMarker", encode(key_marker))
    _add(root, "VersionIdMarker", version_id_marker)
    if next_key_marker is not None:
        _add(root, "NextKeyMarker", encode(next_key_marker))
    if next_version_id_marker is not None:
        _add(root, "NextVersionIdMarker", next_version_id_marker)
    _add(root, "MaxKeys", max_keys)
    if delimiter:
        _add(root, "Delimiter", encode(delimiter))
    if encoding_type is not None:
        _add(root, "EncodingType", encoding_type)
    _add(root, "IsTruncated", is_truncated)
    for info in entries:
        _contents(root, "DeleteMarker" if info.delete_marker else "Version", info, owner, encode)
    _common_prefixes(root, common_prefixes, encode)
    return _document(root)


# --- objects --------------------------------------------------------------------------


def delete_result(deleted: Sequence[Deleted], errors: Sequence[DeleteError]) -> bytes:
    """DeleteResult of DeleteObjects. In quiet mode pass no `deleted` (AWS lists only
    the errors then).

    Args:
        deleted: (key, version_id, delete_marker, delete_marker_version_id); None
            values and a False delete_marker leave their elements out.
        errors: (key, version_id, code, message) for keys that could not be deleted.
    """
    root = _root("DeleteResult")
    for key, version_id, delete_marker, marker_version_id in deleted:
        entry = _add(root, "Deleted")
        _add(entry, "Key", key)
        if version_id is not None:
            _add(entry, "VersionId", version_id)
        if delete_marker:
            _add(entry, "DeleteMarker", True)
        if marker_version_id is not None:
            _add(entry, "DeleteMarkerVersionId", marker_version_id)
    for key, version_id, code, message in errors:
        entry = _add(root, "Error")
        _add(entry, "Key", key)
        if version_id is not None:
            _add(entry, "VersionId", version_id)
        _add(entry, "Code", code)
        _add(entry, "Message", message)
    return _document(root)


def _copy_result(
    tag: str, etag: str, last_modified_ns: int, checksums: Checksums | None, kind: str | None
) -> bytes:
    root = _root(tag)
    _add(root, "ETag", quote_etag(etag))
    _add(root, "LastModified", last_modified_iso(last_modified_ns))
    _checksums(root, checksums, kind)
    return _document(root)


def copy_object_result(
    etag: str,
    last_modified_ns: int,
    checksums: Checksums | None = None,
    *,
    checksum_type: str | None = None,
) -> bytes:
    """CopyObjectResult: the new object's ETag (quoted here), time and checksums."""
    return _copy_result("CopyObjectResult", etag, last_modified_ns, checksums, checksum_type)


def copy_part_result(etag: str, last_modified_ns: int, checksums: Checksums | None = None) -> bytes:
    """CopyPartResult of UploadPartCopy: the part's ETag (quoted here), time, checksums."""
    return _copy_result("CopyPartResult", etag, last_modified_ns, checksums, None)


def get_object_attributes(
    *,
    etag: str | None = None,
    checksums: Checksums | None = None,
    checksum_type: str | None = None,
    object_parts: ObjectParts | None = None,
    storage_class: str | None = None,
    object_size: int | None = None,
) -> bytes:
    """GetObjectAttributesOutput with the attributes asked for (None leaves one out).

    The ETag is rendered WITHOUT quotes: GetObjectAttributes is the one S3 body that
    does so. <Checksum> appears when there are checksums or a checksum_type.
    """
    root = _root("GetObjectAttributesOutput")
    if etag is not None:
        _add(root, "ETag", unquote_etag(etag))
    if _checksum_pairs(checksums) or checksum_type is not None:
        _checksums(_add(root, "Checksum"), checksums, checksum_type)
    if object_parts is not None:
        element = _add(root, "ObjectParts")
        _add(element, "PartsCount", object_parts.total_parts_count)
        _add(element, "PartNumberMarker", object_parts.part_number_marker)
        if object_parts.next_part_number_marker is not None:
            _add(element, "NextPartNumberMarker", object_parts.next_part_number_marker)
        _add(element, "MaxParts", object_parts.max_parts)
        _add(element, "IsTruncated", object_parts.is_truncated)
        for part in object_parts.parts:
            entry = _add(element, "Part")
            _add(entry, "PartNumber", part.part_number)
            _add(entry, "Size", part.size_bytes)
            _checksums(entry, part.checksums, None)
    if storage_class is not None:
        _add(root, "StorageClass", storage_class)
    if object_size is not None:
        _add(root, "ObjectSize", object_size)
    return _document(root)


def parse_copy_source(value: str) -> tuple[str, str, str | None]:
    """(bucket, key, version_id or None) of an x-amz-copy-source header.

    The header is "[/]bucket/key[?versionId=id]" with bucket and key percent-encoded
    (SDKs encode "+" as %2B, so a literal "+" stays "+": no form decoding).

    Raises:
        S3Error: InvalidArgument (no bucket or key, bad encoding, empty versionId).
    """
    path, _, query = value.strip().partition("?")
    try:
        bucket, _, key = unquote(path.removeprefix("/"), errors="strict").partition("/")
        # Not parse_qsl: botocore appends the version id unencoded, and "+" is no space.
        version_ids = [
            unquote(field[len("versionId=") :], errors="strict")
            for field in query.split("&")
            if field.startswith("versionId=")
        ]
    except UnicodeDecodeError as exc:
        raise _copy_source_error("is not percent-encoded UTF-8") from exc
    if not bucket or not key:
        raise _copy_source_error("must name the source bucket and key: bucket/key")
    if version_ids and not version_ids[0]:
        raise _copy_source_error("names an empty versionId")
    return bucket, key, version_ids[0] if version_ids else None


def _copy_source_error(detail: str) -> S3Error:
    return S3Error(
        "InvalidArgument", f"x-amz-copy-source {detail}", ArgumentName="x-amz-copy-source"
    )


# --- multipart ------------------------------------------------------------------------


def initiate_multipart_upload(bucket: str, key: str, upload_id: str) -> bytes:
    """InitiateMultipartUploadResult of CreateMultipartUpload."""
    root = _root("InitiateMultipartUploadResult")
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "UploadId", upload_id)
    return _document(root)


def complete_multipart_upload(
    location: str,
    bucket: str,
    key: str,
    etag: str,
    checksums: Checksums | None = None,
    *,
    checksum_type: str | None = None,
) -> bytes:
    """CompleteMultipartUploadResult; `etag` is the multipart ETag ("<hex>-<parts>")."""
    root = _root("CompleteMultipartUploadResult")
    _add(root, "Location", location)
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "ETag", quote_etag(etag))
    _checksums(root, checksums, checksum_type)
    return _document(root)


def list_parts(
    bucket: str,
    key: str,
    upload_id: str,
    *,
    parts: Sequence[Part],
    part_number_marker: int = 0,
    next_part_number_marker: int | None = None,
    max_parts: int = 1000,
    is_truncated: bool = False,
    owner: Owner | None = None,
    initiator: Owner | None = None,
    storage_class: str = "STANDARD",
    checksum_algorithm: str | None = None,
    checksum_type: str | None = None,
) -> bytes:
    """ListPartsResult: one page of an upload's parts in part-number order.

    NextPartNumberMarker is rendered when not None (AWS gives the last part listed).
    """
    root = _root("ListPartsResult")
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "UploadId", upload_id)
    if initiator is not None:
        _owner(root, "Initiator", initiator)
    if owner is not None:
        _owner(root, "Owner", owner)
    _add(root, "StorageClass", storage_class)
    _add(root, "PartNumberMarker", part_number_marker)
    if next_part_number_marker is not None:
        _add(root, "NextPartNumberMarker", next_part_number_marker)
    _add(root, "MaxParts", max_parts)
    _add(root, "IsTruncated", is_truncated)
    if checksum_algorithm is not None:
        _add(root, "ChecksumAlgorithm", checksum_algorithm)
    if checksum_type is not None:
        _add(root, "ChecksumType", checksum_type)
    for part in parts:
        entry = _add(root, "Part")
        _add(entry, "PartNumber", part.part_number)
        if part.mtime_ns is not None:
            _add(entry, "LastModified", last_modified_iso(part.mtime_ns))
        if part.etag is not None:
            _add(entry, "ETag", quote_etag(part.etag))
        _add(entry, "Size", part.size_bytes)
        _checksums(entry, part.checksums, None)
    return _document(root)


def list_multipart_uploads(
    bucket: str,
    *,
    uploads: Sequence[Upload],
    common_prefixes: Sequence[str] = (),
    is_truncated: bool = False,
    prefix: str = "",
    delimiter: str | None = None,
    max_uploads: int = 1000,
    encoding_type: str | None = None,
    key_marker: str = "",
    upload_id_marker: str = "",
    next_key_marker: str | None = None,
    next_upload_id_marker: str | None = None,
) -> bytes:
    """ListMultipartUploadsResult: uploads in (key, initiation) order.

    The next markers are rendered when not None. With encoding_type "url": Key, Prefix,
    Delimiter, KeyMarker, NextKeyMarker and CommonPrefixes/Prefix are URL-encoded.

    Raises:
        S3Error: InvalidArgument for an encoding_type other than None/"url".
    """
    encode = _encoder(encoding_type)
    root = _root("ListMultipartUploadsResult")
    _add(root, "Bucket", bucket)
    _add(root, "KeyMarker", encode(key_marker))
    _add(root, "UploadIdMarker", upload_id_marker)
    if next_key_marker is not None:
        _add(root, "NextKeyMarker", encode(next_key_marker))
    if next_upload_id_marker is not None:
        _add(root, "NextUploadIdMarker", next_upload_id_marker)
    if delimiter:
        _add(root, "Delimiter", encode(delimiter))
    _add(root, "Prefix", encode(prefix))
    _add(root, "MaxUploads", max_uploads)
    if encoding_type is not None:
        _add(root, "EncodingType", encoding_type)
    _add(root, "IsTruncated", is_truncated)
    for upload in uploads:
        entry = _add(root, "Upload")
        _add(entry, "Key", encode(upload.key))
        _add(entry, "UploadId", upload.upload_id)
        if upload.initiator is not None:
            _owner(entry, "Initiator", upload.initiator)
        if upload.owner is not None:
            _owner(entry, "Owner", upload.owner)
        _add(entry, "StorageClass", upload.storage_class)
        _add(entry, "Initiated", last_modified_iso(upload.initiated_ns))
        if upload.checksum_algorithm is not None:
            _add(entry, "ChecksumAlgorithm", upload.checksum_algorithm)
    _common_prefixes(root, common_prefixes, encode)
    return _document(root)


# --- subresources: tagging, ACL, CORS -------------------------------------------------


def tagging(tags: Iterable[tuple[str, str]]) -> bytes:
    """Tagging of GetObjectTagging / GetBucketTagging."""
    root = _root("Tagging")
    tag_set = _add(root, "TagSet")
    for key, value in tags:
        tag = _add(tag_set, "Tag")
        _add(tag, "Key", key)
        _add(tag, "Value", value)
    return _document(root)


def access_control_policy(owner_id: str, owner_name: str | None, grants: Iterable[Grant]) -> bytes:
    """AccessControlPolicy of GetBucketAcl / GetObjectAcl.

    Args:
        grants: (grantee_type, id_or_uri, display_name, permission) with grantee_type
            "CanonicalUser" (an ID) or "Group" (a URI); display_name may be None.
    """
    root = _root("AccessControlPolicy")
    _owner(root, "Owner", Owner(owner_id, owner_name))
    acl = _add(root, "AccessControlList")
    for grantee_type, identity, display_name, permission in grants:
        grant = _add(acl, "Grant")
        grantee = _add(grant, "Grantee")
        grantee.set(f"{{{XSI_NAMESPACE}}}type", grantee_type)
        if grantee_type == "Group":
            _add(grantee, "URI", identity)
        else:
            _add(grantee, "ID", identity)
            if display_name is not None:
                _add(grantee, "DisplayName", display_name)
        _add(grant, "Permission", permission)
    return _document(root)


def cors_configuration(rules: Iterable[CorsRule]) -> bytes:
    """CORSConfiguration of GetBucketCors."""
    root = _root("CORSConfiguration")
    for rule in rules:
        element = _add(root, "CORSRule")
        if rule.id is not None:
            _add(element, "ID", rule.id)
        for tag, values in (
            ("AllowedHeader", rule.allowed_headers),
            ("AllowedMethod", rule.allowed_methods),
            ("AllowedOrigin", rule.allowed_origins),
            ("ExposeHeader", rule.expose_headers),
        ):
            for value in values:
                _add(element, tag, value)
        if rule.max_age_seconds is not None:
            _add(element, "MaxAgeSeconds", rule.max_age_seconds)
    return _document(root)


# --- parsing --------------------------------------------------------------------------
#
# Every parser reads the body through defusedxml (no DTD, no entity declarations, no
# external references: billion laughs and XXE fail before any expansion) and walks the
# tree iteratively, so depth costs nothing. Element names are matched without their
# namespace: SDKs send S3's, some tools none, old docs a misspelt one. Unknown elements
# are ignored (newer SDKs add fields); known ones must hold text, appear once, and be
# valid, or the parse fails with an S3Error. The caller caps the body size.

_INTEGER = re.compile(r"\s*([+-]?[0-9]{1,18})\s*")


def _malformed(detail: str, code: str = "MalformedXML") -> S3Error:
    return S3Error(code, f"{_MALFORMED} ({_clean(detail)[:200]})")


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _parse(body: bytes, root_tag: str) -> ET.Element:
    """The root element of a request body, which must be <root_tag>."""
    if not body.strip():
        raise _malformed("the request body is empty")
    try:
        root: ET.Element = _defused.fromstring(
            body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except (ET.ParseError, ValueError, LookupError) as exc:
        # ValueError: defusedxml's DTDForbidden/EntitiesForbidden/ExternalReferenceForbidden;
        # LookupError: an encoding declaration naming no codec.
        raise _malformed(f"{type(exc).__name__}: {exc}") from exc
    if _local(root.tag) != root_tag:
        raise _malformed(f"the root element must be <{root_tag}>, not <{_local(root.tag)}>")
    return root


def _children(parent: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in parent if _local(child.tag) == name]


def _element(parent: ET.Element, name: str) -> ET.Element | None:
    """The one child <name> of `parent`, None when absent; twice is malformed."""
    found = _children(parent, name)
    if len(found) > 1:
        raise _malformed(f"<{name}> appears more than once")
    return found[0] if found else None


def _text(element: ET.Element) -> str:
    if len(element):
        raise _malformed(f"<{_local(element.tag)}> must hold text, not elements")
    return element.text or ""


def _one(parent: ET.Element, name: str) -> str | None:
    """The text of the one child <name>, None when absent."""
    element = _element(parent, name)
    return None if element is None else _text(element)


def _integer(text: str, name: str) -> int:
    match = _INTEGER.fullmatch(text)
    if match is None:
        raise _malformed(f"<{name}> must be an integer")
    return int(match.group(1))


def parse_create_bucket(body: bytes) -> str | None:
    """The LocationConstraint of a CreateBucket body; None for an empty body or
    constraint (us-east-1). The caller compares it with its own region.

    Raises:
        S3Error: MalformedXML.
    """
    if not body.strip():
        return None
    constraint = _one(_parse(body, "CreateBucketConfiguration"), "LocationConstraint")
    return constraint.strip() or None if constraint is not None else None


def parse_versioning(body: bytes) -> str:
    """The Status of a PutBucketVersioning body: "Enabled" or "Suspended".

    Raises:
        S3Error: MalformedXML (not a VersioningConfiguration);
            IllegalVersioningConfigurationException (no or another Status);
            NotImplemented (MfaDelete Enabled: objfs has no MFA).
    """
    root = _parse(body, "VersioningConfiguration")
    status = (_one(root, "Status") or "").strip()
    mfa_delete = (_one(root, "MfaDelete") or "Disabled").strip()
    if status not in ("Enabled", "Suspended") or mfa_delete not in ("Enabled", "Disabled"):
        raise S3Error(
            "IllegalVersioningConfigurationException",
            "The Versioning element must be specified: Status Enabled or Suspended",
        )
    if mfa_delete == "Enabled":
        raise S3Error("NotImplemented", "MFA delete is not supported")
    return status


def parse_delete_objects(body: bytes) -> tuple[bool, list[tuple[str, str | None]]]:
    """Quiet and the (key, version_id or None) entries of a DeleteObjects body, in order.

    Keys are returned exactly as sent (even empty): checking them is the caller's, per
    key, as AWS reports bad keys in the result rather than failing the request.

    Raises:
        S3Error: MalformedXML (no <Object>, more than 1000, an <Object> without <Key>,
            a <Quiet> other than true/false).
    """
    root = _parse(body, "Delete")
    quiet_text = (_one(root, "Quiet") or "false").strip().lower()
    if quiet_text not in ("true", "false"):
        raise _malformed("<Quiet> must be true or false")
    entries: list[tuple[str, str | None]] = []
    for element in _children(root, "Object"):
        if len(entries) == DELETE_OBJECTS_MAX:
            raise _malformed(f"at most {DELETE_OBJECTS_MAX} objects can be deleted at once")
        key = _one(element, "Key")
        if key is None:
            raise _malformed("every <Object> needs a <Key>")
        entries.append((key, _one(element, "VersionId")))
    if not entries:
        raise _malformed("<Delete> names no <Object>")
    return quiet_text == "true", entries


def parse_complete_multipart(body: bytes) -> list[tuple[int, str, dict[str, str]]]:
    """The (part_number, etag unquoted, checksums) of a CompleteMultipartUpload body.

    Checksums map lower-case algorithm names ("crc32c") to the base64 values sent.

    Raises:
        S3Error: MalformedXML (no <Part>, a part without PartNumber/ETag, a non-integer);
            InvalidArgument (a part number outside 1..10000);
            InvalidPartOrder (part numbers not strictly ascending).
    """
    root = _parse(body, "CompleteMultipartUpload")
    parts: list[tuple[int, str, dict[str, str]]] = []
    previous = 0
    for element in _children(root, "Part"):
        number_text, etag = _one(element, "PartNumber"), _one(element, "ETag")
        if number_text is None or etag is None:
            raise _malformed("every <Part> needs a <PartNumber> and an <ETag>")
        number = _integer(number_text, "PartNumber")
        if not 1 <= number <= PART_NUMBER_MAX:
            raise S3Error(
                "InvalidArgument",
                f"Part number must be an integer between 1 and {PART_NUMBER_MAX}, inclusive",
                ArgumentName="partNumber",
                ArgumentValue=str(number),
            )
        if number <= previous:
            raise S3Error(
                "InvalidPartOrder",
                "The list of parts was not in ascending order. "
                "The parts list must be specified in order by part number.",
            )
        previous = number
        checksums: dict[str, str] = {}
        for algorithm in CHECKSUM_ALGORITHMS:
            value = _one(element, "Checksum" + algorithm)
            if value is not None:
                checksums[algorithm.lower()] = value.strip()
        parts.append((number, unquote_etag(etag), checksums))
    if not parts:
        raise _malformed("<CompleteMultipartUpload> names no <Part>")
    return parts


def check_tags(tags: Sequence[tuple[str, str]], *, max_tags: int) -> list[tuple[str, str]]:
    """`tags` as a list if S3 accepts them (also for the x-amz-tagging header).

    Raises:
        S3Error: InvalidTag (more than max_tags, an empty or duplicate key, a key over
            128 or a value over 256 characters, a key in the reserved "aws:" space).
    """
    if len(tags) > max_tags:
        raise S3Error("InvalidTag", f"A tag set can hold at most {max_tags} tags")
    seen: set[str] = set()
    for key, value in tags:
        if not key or len(key) > TAG_KEY_CHARS_MAX:
            raise S3Error("InvalidTag", f"The TagKey must be 1 to {TAG_KEY_CHARS_MAX} characters")
        if len(value) > TAG_VALUE_CHARS_MAX:
            raise S3Error(
                "InvalidTag", f"The TagValue must be at most {TAG_VALUE_CHARS_MAX} characters"
            )
        if key.lower().startswith("aws:"):
            raise S3Error("InvalidTag", "Your TagKey cannot be prefixed with aws:")
        if key in seen:
            raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key")
        seen.add(key)
    return list(tags)


def parse_tagging(body: bytes, *, max_tags: int = OBJECT_TAGS_MAX) -> list[tuple[str, str]]:
    """The (key, value) tags of a PutObjectTagging / PutBucketTagging body, in order.

    Args:
        max_tags: OBJECT_TAGS_MAX (10) for objects, BUCKET_TAGS_MAX (50) for buckets.

    Raises:
        S3Error: MalformedXML (no single <TagSet>, a <Tag> without Key or Value);
            InvalidTag (see check_tags).
    """
    root = _parse(body, "Tagging")
    tag_set = _element(root, "TagSet")
    if tag_set is None:
        raise _malformed("<Tagging> needs a <TagSet>")
    tags: list[tuple[str, str]] = []
    for element in _children(tag_set, "Tag"):
        key, value = _one(element, "Key"), _one(element, "Value")
        if key is None or value is None:
            raise _malformed("every <Tag> needs a <Key> and a <Value>")
        tags.append((key, value))
        if len(tags) > max_tags:
            break  # enough to refuse; check_tags says why
    return check_tags(tags, max_tags=max_tags)


def _acl_error(detail: str) -> S3Error:
    return S3Error(
        "MalformedACLError",
        f"The XML you provided was not well-formed or did not validate against our "
        f"published schema ({_clean(detail)[:200]})",
    )


def _grant(element: ET.Element) -> Grant:
    grantee = _element(element, "Grantee")
    permission = (_one(element, "Permission") or "").strip()
    if grantee is None or permission not in PERMISSIONS:
        raise _acl_error(f"every <Grant> needs a <Grantee> and one of {', '.join(PERMISSIONS)}")
    kind = next((v.strip() for k, v in grantee.attrib.items() if _local(k) == "type"), None)
    identity, uri = _one(grantee, "ID"), _one(grantee, "URI")
    if kind is None:  # no xsi:type: say what the children say
        kind = "CanonicalUser" if identity is not None else "Group" if uri is not None else ""
    if kind == "CanonicalUser" and identity is not None and identity.strip():
        return (kind, identity.strip(), _one(grantee, "DisplayName"), permission)
    if kind == "Group" and uri is not None:
        if uri.strip() not in GROUP_URIS:
            raise S3Error("InvalidArgument", "Invalid group uri", ArgumentName="uri")
        return (kind, uri.strip(), None, permission)
    if kind == "AmazonCustomerByEmail":
        raise S3Error("NotImplemented", "grants to an email address are not supported")
    raise _acl_error("a <Grantee> needs xsi:type CanonicalUser with <ID> or Group with <URI>")


def parse_access_control_policy(body: bytes) -> AccessControlPolicy:
    """The owner and grants of a PutBucketAcl / PutObjectAcl body.

    Raises:
        S3Error: MalformedXML (not XML, another root); MalformedACLError (a grant without
            grantee or valid permission, more than 100 grants); InvalidArgument (an
            unknown group URI); NotImplemented (grants by email address).
    """
    root = _parse(body, "AccessControlPolicy")
    owner = _element(root, "Owner")
    owner_id = None if owner is None else _one(owner, "ID")
    owner_name = None if owner is None else _one(owner, "DisplayName")
    acl = _element(root, "AccessControlList")
    elements = [] if acl is None else _children(acl, "Grant")
    if len(elements) > ACL_GRANTS_MAX:
        raise _acl_error(f"an ACL holds at most {ACL_GRANTS_MAX} grants")
    return AccessControlPolicy(owner_id, owner_name, tuple(_grant(e) for e in elements))


def _cors_rule(element: ET.Element) -> CorsRule:
    def values(name: str) -> tuple[str, ...]:
        return tuple(_text(child).strip() for child in _children(element, name))

    origins, methods = values("AllowedOrigin"), values("AllowedMethod")
    headers = values("AllowedHeader")
    if not origins or not methods:
        raise _malformed("every <CORSRule> needs an <AllowedOrigin> and an <AllowedMethod>")
    for method in methods:
        if method not in CORS_METHODS:
            raise S3Error(
                "InvalidRequest",
                f"Found unsupported HTTP method in CORS config. Unsupported method is {method}",
            )
    for tag, patterns in (("AllowedOrigin", origins), ("AllowedHeader", headers)):
        for pattern in patterns:
            if pattern.count("*") > 1:
                raise S3Error(
                    "InvalidRequest", f'{tag} "{pattern}" can not have more than one wildcard.'
                )
    max_age_text = _one(element, "MaxAgeSeconds")
    max_age = None if max_age_text is None else _integer(max_age_text, "MaxAgeSeconds")
    if max_age is not None and max_age < 0:
        raise _malformed("<MaxAgeSeconds> must not be negative")
    rule_id = _one(element, "ID")
    if rule_id is not None and len(rule_id) > 255:
        raise S3Error("InvalidArgument", "The ID of a CORS rule is at most 255 characters")
    return CorsRule(origins, methods, headers, values("ExposeHeader"), max_age, rule_id)


def parse_cors_configuration(body: bytes) -> list[CorsRule]:
    """The rules of a PutBucketCors body, in order.

    Raises:
        S3Error: MalformedXML (no rule, more than 100, a rule without origin or method,
            a bad MaxAgeSeconds); InvalidRequest (a method other than GET PUT POST DELETE
            HEAD, an origin or header with two wildcards); InvalidArgument (an ID over 255).
    """
    root = _parse(body, "CORSConfiguration")
    elements = _children(root, "CORSRule")
    if not elements:
        raise _malformed("<CORSConfiguration> needs at least one <CORSRule>")
    if len(elements) > CORS_RULES_MAX:
        raise _malformed(f"a CORS configuration holds at most {CORS_RULES_MAX} rules")
    return [_cors_rule(element) for element in elements]
