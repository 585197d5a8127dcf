"""objfs.s3.xml_listing — the bodies of S3's paged listings, and how they page.

ListObjectsV2, ListObjects (v1), ListObjectVersions and ListMultipartUploads
render here. They share what their request asked for (`Listing`: bucket, prefix,
delimiter, page size, encoding-type), the <Contents>-shaped entries and the
<CommonPrefixes>, encoding-type=url (keys and prefixes form-encoded, as AWS) and
the opaque continuation tokens of ListObjectsV2. Pure functions to bytes, built
with xml_build; element order is AWS's (botocore's service model is the oracle).
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import quote_plus

from objfs.s3.errors import S3Error
from objfs.s3.xml_build import add, add_owner, s3_root, to_bytes
from objfs.s3.xml_values import Owner, checksum_pairs, clean, last_modified_iso, quote_etag
from objfs.store.types import ListPage, ObjectInfo

_TOKEN_CHARS_MAX = 4096  # a token for a 1024-byte key is 1368 base64 characters
_Encode: TypeAlias = Callable[[str], str]  # a key or prefix as the listing carries it


@dataclass(frozen=True, slots=True)
class Listing:
    """What a listing result echoes of its request.

    `max_keys` is the page size asked for (MaxKeys; MaxUploads for uploads);
    `encoding_type` is None or "url", and is checked when the body is rendered.
    """

    bucket: str
    prefix: str = ""
    delimiter: str | None = None
    max_keys: int = 1000
    encoding_type: str | None = None


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


# --- encoding-type and continuation tokens --------------------------------------------


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
        ArgumentValue=clean(value),
    )


def _url(text: str) -> str:
    """encoding-type=url as S3 does it: form encoding, "/" kept, space as "+"
    (botocore decodes with unquote_plus). Example: "a b+c/d=e" -> "a+b%2Bc/d%3De"."""
    return quote_plus(text, safe="/", errors="replace")


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


# --- the parts every listing shares ---------------------------------------------------


def _open(tag: str, listing: Listing, name_tag: str = "Name") -> tuple[ET.Element, _Encode]:
    """The root <tag> holding the bucket's name, and how this listing encodes keys.

    Raises:
        S3Error: InvalidArgument for an encoding_type other than None/"url".
    """
    encode = _url if check_encoding_type(listing.encoding_type) == "url" else clean
    root = s3_root(tag)
    add(root, name_tag, listing.bucket)
    return root, encode


def _echo(root: ET.Element, listing: Listing, encode: _Encode, is_truncated: bool) -> None:
    """MaxKeys, Delimiter (when one was given), EncodingType (when asked), IsTruncated."""
    add(root, "MaxKeys", listing.max_keys)
    if listing.delimiter:
        add(root, "Delimiter", encode(listing.delimiter))
    if listing.encoding_type is not None:
        add(root, "EncodingType", listing.encoding_type)
    add(root, "IsTruncated", is_truncated)


def _contents(
    parent: ET.Element,
    tag: str,
    info: ObjectInfo,
    owner: Owner | None,
    encode: _Encode,
) -> None:
    """One <Contents> / <Version> / <DeleteMarker> entry, in the element order AWS sends."""
    entry = add(parent, tag)
    add(entry, "Key", encode(info.key))
    if tag != "Contents":
        add(entry, "VersionId", info.version_id)
        add(entry, "IsLatest", info.is_latest)
    add(entry, "LastModified", last_modified_iso(info.mtime_ns))
    if tag != "DeleteMarker":
        if info.etag is not None:
            add(entry, "ETag", quote_etag(info.etag))
        for name, _value in checksum_pairs(info.checksums):
            add(entry, "ChecksumAlgorithm", name)
        add(entry, "Size", info.size_bytes)
    if owner is not None:
        add_owner(entry, "Owner", owner)
    if tag != "DeleteMarker":
        add(entry, "StorageClass", "STANDARD")


def _close(root: ET.Element, prefixes: Iterable[str], encode: _Encode) -> bytes:
    """The <CommonPrefixes> that end every listing, then the document's bytes."""
    for prefix in prefixes:
        add(add(root, "CommonPrefixes"), "Prefix", encode(prefix))
    return to_bytes(root)


def _unpack(
    page: ListPage, objects: Sequence[ObjectInfo], common_prefixes: Sequence[str]
) -> tuple[Sequence[ObjectInfo], Sequence[str], bool]:
    if objects or common_prefixes:
        raise ValueError("pass a page or its objects and common prefixes, not both")
    return page.objects, page.common_prefixes, page.is_truncated


# --- the listings ---------------------------------------------------------------------


def list_objects_v2(
    listing: Listing,
    *,
    page: ListPage | None = None,
    objects: Sequence[ObjectInfo] = (),
    common_prefixes: Sequence[str] = (),
    is_truncated: bool = False,
    continuation_token: str | None = None,
    next_continuation_token: str | None = None,
    start_after: str | None = None,
    key_count: int | None = None,
    fetch_owner: bool = False,
    owner: Owner | None = None,
) -> bytes:
    """ListBucketResult of ListObjectsV2.

    Args:
        listing: with encoding_type "url", Key, Prefix, Delimiter, StartAfter and
            CommonPrefixes/Prefix are URL-encoded (tokens never are).
        page: the store's page; it gives objects, common prefixes, is_truncated and
            (when truncated) next_continuation_token = encode_continuation_token(
            page.next_start_after). Or pass those four yourself.
        objects, common_prefixes: the page, each in key order.
        continuation_token, start_after: echoed when not None/empty (pass start_after
            only when no continuation token displaced it, as AWS).
        next_continuation_token: rendered when not None (give it when truncated).
        key_count: defaults to len(objects) + len(common_prefixes).
        fetch_owner, owner: each entry carries <Owner> only with fetch_owner and an owner.

    Raises:
        S3Error: InvalidArgument for an encoding_type other than None/"url".
    """
    root, encode = _open("ListBucketResult", listing)
    if page is not None:
        objects, common_prefixes, is_truncated = _unpack(page, objects, common_prefixes)
        if page.next_start_after is not None:
            next_continuation_token = encode_continuation_token(page.next_start_after)
    add(root, "Prefix", encode(listing.prefix))
    if continuation_token:
        add(root, "ContinuationToken", continuation_token)
    if next_continuation_token is not None:
        add(root, "NextContinuationToken", next_continuation_token)
    if start_after:
        add(root, "StartAfter", encode(start_after))
    count = len(objects) + len(common_prefixes) if key_count is None else key_count
    add(root, "KeyCount", count)
    _echo(root, listing, encode, is_truncated)
    for info in objects:
        _contents(root, "Contents", info, owner if fetch_owner else None, encode)
    return _close(root, common_prefixes, encode)


def list_objects_v1(
    listing: Listing,
    *,
    page: ListPage | None = None,
    objects: Sequence[ObjectInfo] = (),
    common_prefixes: Sequence[str] = (),
    is_truncated: bool = False,
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
    root, encode = _open("ListBucketResult", listing)
    if page is not None:
        objects, common_prefixes, is_truncated = _unpack(page, objects, common_prefixes)
        next_marker = page.next_start_after
    add(root, "Prefix", encode(listing.prefix))
    add(root, "Marker", encode(marker))
    if listing.delimiter and is_truncated and next_marker is not None:
        add(root, "NextMarker", encode(next_marker))
    _echo(root, listing, encode, is_truncated)
    for info in objects:
        _contents(root, "Contents", info, owner, encode)
    return _close(root, common_prefixes, encode)


def list_object_versions(
    listing: Listing,
    *,
    entries: Sequence[ObjectInfo],
    common_prefixes: Sequence[str] = (),
    is_truncated: bool = False,
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
    root, encode = _open("ListVersionsResult", listing)
    add(root, "Prefix", encode(listing.prefix))
    add(root, "KeyMarker", encode(key_marker))
    add(root, "VersionIdMarker", version_id_marker)
    if next_key_marker is not None:
        add(root, "NextKeyMarker", encode(next_key_marker))
    if next_version_id_marker is not None:
        add(root, "NextVersionIdMarker", next_version_id_marker)
    _echo(root, listing, encode, is_truncated)
    for info in entries:
        _contents(root, "DeleteMarker" if info.delete_marker else "Version", info, owner, encode)
    return _close(root, common_prefixes, encode)


def list_multipart_uploads(
    listing: Listing,
    *,
    uploads: Sequence[Upload],
    common_prefixes: Sequence[str] = (),
    is_truncated: bool = False,
    key_marker: str = "",
    upload_id_marker: str = "",
    next_key_marker: str | None = None,
    next_upload_id_marker: str | None = None,
) -> bytes:
    """ListMultipartUploadsResult: uploads in (key, initiation) order.

    `listing.max_keys` is rendered as MaxUploads. The next markers are rendered when
    not None. With encoding_type "url": Key, Prefix, Delimiter, KeyMarker,
    NextKeyMarker and CommonPrefixes/Prefix are URL-encoded.

    Raises:
        S3Error: InvalidArgument for an encoding_type other than None/"url".
    """
    root, encode = _open("ListMultipartUploadsResult", listing, name_tag="Bucket")
    add(root, "KeyMarker", encode(key_marker))
    add(root, "UploadIdMarker", upload_id_marker)
    if next_key_marker is not None:
        add(root, "NextKeyMarker", encode(next_key_marker))
    if next_upload_id_marker is not None:
        add(root, "NextUploadIdMarker", next_upload_id_marker)
    if listing.delimiter:
        add(root, "Delimiter", encode(listing.delimiter))
    add(root, "Prefix", encode(listing.prefix))
    add(root, "MaxUploads", listing.max_keys)
    if listing.encoding_type is not None:
        add(root, "EncodingType", listing.encoding_type)
    add(root, "IsTruncated", is_truncated)
    for upload in uploads:
        entry = add(root, "Upload")
        add(entry, "Key", encode(upload.key))
        add(entry, "UploadId", upload.upload_id)
        if upload.initiator is not None:
            add_owner(entry, "Initiator", upload.initiator)
        if upload.owner is not None:
            add_owner(entry, "Owner", upload.owner)
        add(entry, "StorageClass", upload.storage_class)
        add(entry, "Initiated", last_modified_iso(upload.initiated_ns))
        if upload.checksum_algorithm is not None:
            add(entry, "ChecksumAlgorithm", upload.checksum_algorithm)
    return _close(root, common_prefixes, encode)
