"""objfs.s3.xml_render — every S3 response body except the paged listings.

The <Error> body; the bucket documents (ListBuckets, location, versioning); the
object documents (DeleteObjects, CopyObject, GetObjectAttributes); the multipart
documents (initiate, complete, ListParts); and the sub-resources (tagging, ACL,
CORS). Pure functions from plain values (core types or the small frozen types
here and in xml_values) to bytes, built with xml_build; no web framework, no
store calls. Listings are in xml_listing, request bodies in xml_parse. Names and
shapes follow the AWS S3 API (botocore's service model is the test oracle).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from objfs.s3.xml_build import add, add_checksums, add_owner, s3_root, to_bytes
from objfs.s3.xml_values import (
    XSI_NAMESPACE,
    Checksums,
    CorsRule,
    Grant,
    Owner,
    checksum_pairs,
    clean,
    last_modified_iso,
    quote_etag,
    unquote_etag,
)
from objfs.store.types import BucketInfo, Versioning

# (key, version_id, delete_marker, delete_marker_version_id)
Deleted: TypeAlias = tuple[str, str | None, bool, str | None]
# (key, version_id, code, message)
DeleteError: TypeAlias = tuple[str, str | None, str, str]


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
    add(root, "Code", code)
    add(root, "Message", message)
    for tag, text in extra.items():
        add(root, tag, text)
    if resource is not None:
        add(root, "Resource", resource)
    add(root, "RequestId", request_id)
    return to_bytes(root)


def list_buckets(
    owner_id: str,
    owner_name: str | None,
    buckets: Sequence[BucketInfo],
    *,
    region: str | None = None,
) -> bytes:
    """ListAllMyBucketsResult; `region` (when given) is each bucket's BucketRegion."""
    root = s3_root("ListAllMyBucketsResult")
    add_owner(root, "Owner", Owner(owner_id, owner_name))
    listing = add(root, "Buckets")
    for bucket in buckets:
        entry = add(listing, "Bucket")
        add(entry, "Name", bucket.name)
        add(entry, "CreationDate", last_modified_iso(bucket.created_ns))
        if region is not None:
            add(entry, "BucketRegion", region)
    return to_bytes(root)


def location(region: str | None) -> bytes:
    """GetBucketLocation: <LocationConstraint>, empty for us-east-1 (and None), as AWS."""
    root = s3_root("LocationConstraint")
    if region and region != "us-east-1":
        root.text = clean(region)
    return to_bytes(root)


def versioning(status: Versioning | str | None) -> bytes:
    """GetBucketVersioning: Status Enabled/Suspended, or an empty configuration when
    versioning was never turned on (None, "" or Versioning.DISABLED)."""
    if isinstance(status, Versioning):
        status = {Versioning.ENABLED: "Enabled", Versioning.SUSPENDED: "Suspended"}.get(status)
    root = s3_root("VersioningConfiguration")
    if status:
        add(root, "Status", status)
    return to_bytes(root)


# --- objects --------------------------------------------------------------------------


def delete_result(deleted: Sequence[Deleted], errors: Sequence[DeleteError]) -> bytes:
    """DeleteResult of DeleteObjects. In quiet mode pass no `deleted` (AWS lists only
    the errors then).

    Args:
        deleted: (key, version_id, delete_marker, delete_marker_version_id); None
            values and a False delete_marker leave their elements out.
        errors: (key, version_id, code, message) for keys that could not be deleted.
    """
    root = s3_root("DeleteResult")
    for key, version_id, delete_marker, marker_version_id in deleted:
        entry = add(root, "Deleted")
        add(entry, "Key", key)
        if version_id is not None:
            add(entry, "VersionId", version_id)
        if delete_marker:
            add(entry, "DeleteMarker", True)
        if marker_version_id is not None:
            add(entry, "DeleteMarkerVersionId", marker_version_id)
    for key, version_id, code, message in errors:
        entry = add(root, "Error")
        add(entry, "Key", key)
        if version_id is not None:
            add(entry, "VersionId", version_id)
        add(entry, "Code", code)
        add(entry, "Message", message)
    return to_bytes(root)


def _copy_result(
    tag: str, etag: str, last_modified_ns: int, checksums: Checksums | None, kind: str | None
) -> bytes:
    root = s3_root(tag)
    add(root, "ETag", quote_etag(etag))
    add(root, "LastModified", last_modified_iso(last_modified_ns))
    add_checksums(root, checksums, kind)
    return to_bytes(root)


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
    root = s3_root("GetObjectAttributesOutput")
    if etag is not None:
        add(root, "ETag", unquote_etag(etag))
    if checksum_pairs(checksums) or checksum_type is not None:
        add_checksums(add(root, "Checksum"), checksums, checksum_type)
    if object_parts is not None:
        element = add(root, "ObjectParts")
        add(element, "PartsCount", object_parts.total_parts_count)
        add(element, "PartNumberMarker", object_parts.part_number_marker)
        if object_parts.next_part_number_marker is not None:
            add(element, "NextPartNumberMarker", object_parts.next_part_number_marker)
        add(element, "MaxParts", object_parts.max_parts)
        add(element, "IsTruncated", object_parts.is_truncated)
        for part in object_parts.parts:
            entry = add(element, "Part")
            add(entry, "PartNumber", part.part_number)
            add(entry, "Size", part.size_bytes)
            add_checksums(entry, part.checksums, None)
    if storage_class is not None:
        add(root, "StorageClass", storage_class)
    if object_size is not None:
        add(root, "ObjectSize", object_size)
    return to_bytes(root)


# --- multipart ------------------------------------------------------------------------


def initiate_multipart_upload(bucket: str, key: str, upload_id: str) -> bytes:
    """InitiateMultipartUploadResult of CreateMultipartUpload."""
    root = s3_root("InitiateMultipartUploadResult")
    add(root, "Bucket", bucket)
    add(root, "Key", key)
    add(root, "UploadId", upload_id)
    return to_bytes(root)


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
    root = s3_root("CompleteMultipartUploadResult")
    add(root, "Location", location)
    add(root, "Bucket", bucket)
    add(root, "Key", key)
    add(root, "ETag", quote_etag(etag))
    add_checksums(root, checksums, checksum_type)
    return to_bytes(root)


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
    root = s3_root("ListPartsResult")
    add(root, "Bucket", bucket)
    add(root, "Key", key)
    add(root, "UploadId", upload_id)
    if initiator is not None:
        add_owner(root, "Initiator", initiator)
    if owner is not None:
        add_owner(root, "Owner", owner)
    add(root, "StorageClass", storage_class)
    add(root, "PartNumberMarker", part_number_marker)
    if next_part_number_marker is not None:
        add(root, "NextPartNumberMarker", next_part_number_marker)
    add(root, "MaxParts", max_parts)
    add(root, "IsTruncated", is_truncated)
    if checksum_algorithm is not None:
        add(root, "ChecksumAlgorithm", checksum_algorithm)
    if checksum_type is not None:
        add(root, "ChecksumType", checksum_type)
    for part in parts:
        entry = add(root, "Part")
        add(entry, "PartNumber", part.part_number)
        if part.mtime_ns is not None:
            add(entry, "LastModified", last_modified_iso(part.mtime_ns))
        if part.etag is not None:
            add(entry, "ETag", quote_etag(part.etag))
        add(entry, "Size", part.size_bytes)
        add_checksums(entry, part.checksums, None)
    return to_bytes(root)


# --- subresources: tagging, ACL, CORS -------------------------------------------------


def tagging(tags: Iterable[tuple[str, str]]) -> bytes:
    """Tagging of GetObjectTagging / GetBucketTagging."""
    root = s3_root("Tagging")
    tag_set = add(root, "TagSet")
    for key, value in tags:
        tag = add(tag_set, "Tag")
        add(tag, "Key", key)
        add(tag, "Value", value)
    return to_bytes(root)


def access_control_policy(owner_id: str, owner_name: str | None, grants: Iterable[Grant]) -> bytes:
    """AccessControlPolicy of GetBucketAcl / GetObjectAcl.

    Args:
        grants: (grantee_type, id_or_uri, display_name, permission) with grantee_type
            "CanonicalUser" (an ID) or "Group" (a URI); display_name may be None.
    """
    root = s3_root("AccessControlPolicy")
    add_owner(root, "Owner", Owner(owner_id, owner_name))
    acl = add(root, "AccessControlList")
    for grantee_type, identity, display_name, permission in grants:
        grant = add(acl, "Grant")
        grantee = add(grant, "Grantee")
        grantee.set(f"{{{XSI_NAMESPACE}}}type", grantee_type)
        if grantee_type == "Group":
            add(grantee, "URI", identity)
        else:
            add(grantee, "ID", identity)
            if display_name is not None:
                add(grantee, "DisplayName", display_name)
        add(grant, "Permission", permission)
    return to_bytes(root)


def cors_configuration(rules: Iterable[CorsRule]) -> bytes:
    """CORSConfiguration of GetBucketCors."""
    root = s3_root("CORSConfiguration")
    for rule in rules:
        element = add(root, "CORSRule")
        if rule.id is not None:
            add(element, "ID", rule.id)
        for tag, values in (
            ("AllowedHeader", rule.allowed_headers),
            ("AllowedMethod", rule.allowed_methods),
            ("AllowedOrigin", rule.allowed_origins),
            ("ExposeHeader", rule.expose_headers),
        ):
            for value in values:
                add(element, tag, value)
        if rule.max_age_seconds is not None:
            add(element, "MaxAgeSeconds", rule.max_age_seconds)
    return to_bytes(root)
