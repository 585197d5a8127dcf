"""objfs.s3.handlers — the S3 dispatch table; the bucket operations and object writes.

`route` picks the handler of every request from the method, whether a bucket and
a key are named, and the sub-resource in the query. The handlers of buckets,
listings and object writes (PUT, copy, DELETE, DeleteObjects) are here; GET and
HEAD of an object are in reads.py, the rest in multipart.py, subresources.py and
post_object.py. Each is parse, call the store, render; it raises `S3Error` (or
lets an `ObjfsError` through: the app translates it by the one table in
errors.py). Object bodies come in through `body.py`.
"""

from __future__ import annotations

from objfs.errors import NoSuchKey, ObjfsError
from objfs.s3 import (
    acl,
    multipart,
    post_object,
    reads,
    subresources,
    xml_listing,
    xml_parse,
    xml_render,
    xml_values,
)
from objfs.s3.app import OBJECT, OWNER, Handler, Response, S3Context, S3Request
from objfs.s3.body import read_small_body, stream_object_body
from objfs.s3.conditions import check_copy_source
from objfs.s3.errors import S3Error, from_core, is_number
from objfs.s3.metadata import posix_from, user_metadata
from objfs.store.types import ListPage, Versioning

_NOT_YET_BUCKET = (
    "policy",
    "lifecycle",
    "website",
    "replication",
    "encryption",
    "logging",
    "notification",
    "object-lock",
)
_NOT_YET_OBJECT = (
    "retention",
    "legal-hold",
    "torrent",
    "restore",
    "select",
)


def route(s3: S3Request) -> Handler:
    """The handler for a request.

    Raises:
        S3Error: MethodNotAllowed, or NotImplemented for sub-resources not served yet.
    """
    method, query = s3.method, s3.query
    if s3.bucket is None:
        if method == "GET":
            return list_buckets
        raise _method_not_allowed()
    if method == "OPTIONS":
        return subresources.preflight
    if s3.key is None:
        return _bucket_route(method, query)
    return _object_route(method, query, "x-amz-copy-source" in s3.headers)


def _bucket_route(method: str, query: dict[str, str]) -> Handler:
    for name in _NOT_YET_BUCKET:
        if name in query:
            raise S3Error("NotImplemented", f"bucket ?{name} is not implemented yet")
    for name, subresource in _BUCKET_SUBRESOURCES.items():
        if name in query:
            if method in subresource:
                return subresource[method]
            raise _method_not_allowed()
    if method == "GET":
        if "location" in query:
            return get_bucket_location
        if "versioning" in query:
            return get_bucket_versioning
        if "uploads" in query:
            return multipart.list_multipart_uploads
        if "versions" in query:
            return list_object_versions
        return list_objects_v2 if query.get("list-type") == "2" else list_objects_v1
    if method == "PUT":
        return put_bucket_versioning if "versioning" in query else create_bucket
    if method == "POST":
        return delete_objects if "delete" in query else post_object.post_object
    table: dict[str, Handler] = {"HEAD": head_bucket, "DELETE": delete_bucket}
    if method in table:
        return table[method]
    raise _method_not_allowed()


def _object_route(method: str, query: dict[str, str], copy: bool) -> Handler:
    for name in _NOT_YET_OBJECT:
        if name in query:
            raise S3Error("NotImplemented", f"object ?{name} is not implemented yet")
    table: dict[str, Handler]
    for name, subresource in _OBJECT_SUBRESOURCES.items():
        if name in query:
            if method in subresource:
                return subresource[method]
            raise _method_not_allowed()
    if "uploadId" in query:
        table = {
            "PUT": multipart.upload_part_copy if copy else multipart.upload_part,
            "POST": multipart.complete_multipart_upload,
            "DELETE": multipart.abort_multipart_upload,
            "GET": multipart.list_parts,
        }
    elif "uploads" in query:
        table = {"POST": multipart.create_multipart_upload}
    else:
        table = {
            "PUT": copy_object if copy else put_object,
            "GET": reads.get_object,
            "HEAD": reads.head_object,
            "DELETE": delete_object,
        }
    if method in table:
        return table[method]
    raise _method_not_allowed()


_BUCKET_SUBRESOURCES: dict[str, dict[str, Handler]] = {
    "acl": {"GET": subresources.get_bucket_acl, "PUT": subresources.put_bucket_acl},
    "tagging": {
        "GET": subresources.get_bucket_tagging,
        "PUT": subresources.put_bucket_tagging,
        "DELETE": subresources.delete_bucket_tagging,
    },
    "cors": {
        "GET": subresources.get_bucket_cors,
        "PUT": subresources.put_bucket_cors,
        "DELETE": subresources.delete_bucket_cors,
    },
}
_OBJECT_SUBRESOURCES: dict[str, dict[str, Handler]] = {
    "attributes": {"GET": subresources.get_object_attributes},
    "acl": {"GET": subresources.get_object_acl, "PUT": subresources.put_object_acl},
    "tagging": {
        "GET": subresources.get_object_tagging,
        "PUT": subresources.put_object_tagging,
        "DELETE": subresources.delete_object_tagging,
    },
}


def after(ctx: S3Context, s3: S3Request, response: Response) -> None:
    """What every successful response gets: CORS headers when the bucket has rules."""
    subresources.add_cors_headers(ctx, s3, response)


def _method_not_allowed() -> S3Error:
    return S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.")


def _require_user(s3: S3Request) -> None:
    if s3.user is None:
        raise S3Error("AccessDenied", "Access Denied")


# -- buckets -------------------------------------------------------------------------


async def list_buckets(ctx: S3Context, s3: S3Request) -> Response:
    _require_user(s3)
    assert s3.user is not None
    buckets = [
        b for b in ctx.store.list_buckets() if s3.user.is_root or b.owner == s3.user.canonical_id
    ]
    body = xml_render.list_buckets(s3.user.canonical_id, s3.user.display_name, buckets)
    return Response(body, content_type="application/xml")


async def create_bucket(ctx: S3Context, s3: S3Request) -> Response:
    _require_user(s3)
    assert s3.user is not None and s3.bucket is not None
    region = xml_parse.parse_create_bucket(await read_small_body(s3))
    if region not in (None, "", ctx.config.s3.region):
        raise S3Error(
            "InvalidLocationConstraint",
            f"The specified location-constraint {region!r} is not valid here "
            f"(this node is {ctx.config.s3.region})",
        )
    try:
        existing = ctx.store.head_bucket(s3.bucket)
    except ObjfsError:
        existing = None
    if existing is not None:
        if s3.user.is_root or existing.owner == s3.user.canonical_id:
            raise S3Error(
                "BucketAlreadyOwnedByYou",
                "Your previous request to create the named bucket succeeded and you "
                "already own it.",
                BucketName=s3.bucket,
            )
        raise S3Error(
            "BucketAlreadyExists",
            "The requested bucket name is not available.",
            BucketName=s3.bucket,
        )
    wanted = acl.from_headers(dict(s3.headers), s3.user.canonical_id)
    await ctx.store.create_bucket(s3.bucket, owner=s3.user.canonical_id)
    if wanted is not None:
        await ctx.store.set_bucket_setting(s3.bucket, acl.BUCKET_ACL_SETTING, wanted.encode())
    return Response(b"", headers={"Location": f"/{s3.bucket}"})


async def head_bucket(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    ctx.bucket_for(s3, s3.bucket)
    return Response(b"", headers={"x-amz-bucket-region": ctx.config.s3.region})


async def delete_bucket(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    ctx.bucket_for(s3, s3.bucket, OWNER)
    await ctx.store.delete_bucket(s3.bucket)
    return Response(b"", status=204)


async def get_bucket_location(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    ctx.bucket_for(s3, s3.bucket)
    return Response(xml_render.location(ctx.config.s3.region), content_type="application/xml")


async def get_bucket_versioning(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    info = ctx.bucket_for(s3, s3.bucket)
    status = {Versioning.ENABLED: "Enabled", Versioning.SUSPENDED: "Suspended"}.get(info.versioning)
    return Response(xml_render.versioning(status), content_type="application/xml")


async def put_bucket_versioning(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    ctx.bucket_for(s3, s3.bucket, OWNER)
    status = xml_parse.parse_versioning(await read_small_body(s3))
    wanted = Versioning.ENABLED if status == "Enabled" else Versioning.SUSPENDED
    await ctx.store.set_bucket_versioning(s3.bucket, wanted)
    return Response(b"")


def _max_keys(s3: S3Request) -> int:
    raw = s3.query.get("max-keys", "1000")
    if not is_number(raw):
        raise S3Error(
            "InvalidArgument",
            "Provided max-keys not an integer or within integer range",
            ArgumentName="max-keys",
            ArgumentValue=raw,
        )
    return min(int(raw), 1000)


def _encoding(s3: S3Request) -> str | None:
    encoding = s3.query.get("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error(
            "InvalidArgument",
            "Invalid Encoding Method specified in Request",
            ArgumentName="encoding-type",
        )
    return encoding


def _listing(s3: S3Request) -> xml_listing.Listing:
    """What a listing asks for and its result echoes: prefix, delimiter, max-keys
    and encoding-type, the last two checked."""
    assert s3.bucket is not None
    prefix, delimiter = s3.query.get("prefix", ""), s3.query.get("delimiter") or None
    return xml_listing.Listing(s3.bucket, prefix, delimiter, _max_keys(s3), _encoding(s3))


def _list_page(
    ctx: S3Context, s3: S3Request, start_after: str
) -> tuple[xml_listing.Listing, ListPage]:
    """What a ListObjects (v1 or v2) asks for, and the store's page of it."""
    assert s3.bucket is not None
    ctx.bucket_for(s3, s3.bucket)
    listing = _listing(s3)
    page = ctx.store.list_objects(
        s3.bucket,
        prefix=listing.prefix,
        delimiter=listing.delimiter,
        start_after=start_after,
        limit=listing.max_keys,
    )
    return listing, page


async def list_objects_v2(ctx: S3Context, s3: S3Request) -> Response:
    token = s3.query.get("continuation-token")
    start_after = s3.query.get("start-after", "")
    position = xml_listing.decode_continuation_token(token) if token is not None else start_after
    listing, page = _list_page(ctx, s3, position)
    body = xml_listing.list_objects_v2(
        listing,
        page=page,
        continuation_token=token,
        start_after=start_after or None,
        fetch_owner=s3.query.get("fetch-owner") == "true",
        owner=_owner_of(ctx, s3),
    )
    return Response(body, content_type="application/xml")


async def list_objects_v1(ctx: S3Context, s3: S3Request) -> Response:
    marker = s3.query.get("marker", "")
    listing, page = _list_page(ctx, s3, marker)
    body = xml_listing.list_objects_v1(listing, page=page, marker=marker, owner=_owner_of(ctx, s3))
    return Response(body, content_type="application/xml")


async def list_object_versions(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    ctx.bucket_for(s3, s3.bucket)
    key_marker = s3.query.get("key-marker", "")
    version_id_marker = s3.query.get("version-id-marker", "")
    if version_id_marker and not key_marker:
        raise S3Error(
            "InvalidArgument",
            "A version-id marker cannot be specified without a key marker.",
            ArgumentName="version-id-marker",
        )
    listing = _listing(s3)
    page = ctx.store.list_object_versions(
        s3.bucket,
        prefix=listing.prefix,
        delimiter=listing.delimiter,
        key_marker=key_marker,
        version_id_marker=version_id_marker,
        limit=listing.max_keys,
    )
    body = xml_listing.list_object_versions(
        listing,
        entries=page.entries,
        common_prefixes=page.common_prefixes,
        is_truncated=page.is_truncated,
        key_marker=key_marker,
        version_id_marker=version_id_marker,
        next_key_marker=page.next_key_marker,
        next_version_id_marker=page.next_version_id_marker,
        owner=_owner_of(ctx, s3),
    )
    return Response(body, content_type="application/xml")


def _owner_of(ctx: S3Context, s3: S3Request) -> xml_values.Owner:
    """The bucket's owner, as listings name it (the canonical ID when no user has it)."""
    assert s3.bucket is not None
    owner = ctx.store.head_bucket(s3.bucket).owner
    user = ctx.users.by_canonical_id(owner)
    return xml_values.Owner(owner, user.display_name if user is not None else owner)


async def delete_objects(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    ctx.bucket_for(s3, s3.bucket, acl.WRITE)
    quiet, entries = xml_parse.parse_delete_objects(await read_small_body(s3, need_md5=True))
    deleted: list[xml_render.Deleted] = []
    errors: list[xml_render.DeleteError] = []
    for key, version_id in entries:
        try:
            result = await ctx.store.delete_object(s3.bucket, key, version_id=version_id)
        except NoSuchKey:
            deleted.append((key, version_id, False, None))  # S3: deleting nothing succeeds
            continue
        except ObjfsError as exc:
            error = from_core(exc)
            errors.append((key, version_id, error.code, error.message))
            continue
        if result.delete_marker:
            deleted.append((key, None, True, result.version_id))
        else:
            deleted.append((key, version_id, False, None))
    body = xml_render.delete_result([] if quiet else deleted, errors)
    return Response(body, content_type="application/xml")


# -- objects -------------------------------------------------------------------------


async def put_object(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None and s3.key is not None
    info = ctx.bucket_for(s3, s3.bucket, acl.WRITE)
    if_none_match = s3.headers.get("if-none-match")
    if if_none_match not in (None, "*"):
        raise S3Error("NotImplemented", "If-None-Match on PUT takes only '*'")
    if_match = ctx.check_if_match(s3)
    content_type = s3.headers.get("content-type", "binary/octet-stream")
    metadata, posix = posix_from(user_metadata(s3))
    metadata.update(subresources.tags_from_header(s3.headers.get("x-amz-tagging")))
    writer_id = s3.user.canonical_id if s3.user is not None else acl.ALL_USERS
    wanted = acl.from_headers(dict(s3.headers), writer_id, info.owner)
    if wanted is None and writer_id != info.owner:
        wanted = acl.private(writer_id)  # a grantee's object: its writer may read it back
    if wanted is not None:
        metadata[acl.OBJECT_ACL_METADATA] = wanted.encode().decode()
    async with ctx.store.open_writer(
        s3.bucket,
        s3.key,
        content_type=content_type,
        metadata=metadata,
        posix=posix,
        if_none_match=if_none_match == "*",
        if_match=if_match,  # checked again as the version lands: another may have meanwhile
    ) as writer:
        received = await stream_object_body(s3, writer.write)
        version = await writer.commit(
            expected_md5=received.content_md5_hex, checksums=received.checksums
        )
    headers = {"ETag": f'"{version.etag}"'}
    if info.versioning is not Versioning.DISABLED:
        headers["x-amz-version-id"] = version.version_id
    for algorithm, value in received.checksums.items():
        headers[f"x-amz-checksum-{algorithm}"] = value
    return Response(b"", headers=headers)


async def delete_object(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None and s3.key is not None
    ctx.bucket_for(s3, s3.bucket, acl.WRITE)
    version_id = s3.query.get("versionId")
    try:
        result = await ctx.store.delete_object(s3.bucket, s3.key, version_id=version_id)
    except NoSuchKey:
        return Response(b"", status=204)  # S3: deleting what is not there succeeds
    headers = {}
    if result.delete_marker:
        headers["x-amz-delete-marker"] = "true"
    if result.version_id is not None:
        headers["x-amz-version-id"] = result.version_id
    return Response(b"", status=204, headers=headers)


async def copy_object(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None and s3.key is not None
    target = ctx.bucket_for(s3, s3.bucket, acl.WRITE)
    source_bucket, source_key, source_version = xml_parse.parse_copy_source(
        s3.headers["x-amz-copy-source"]
    )
    source_info = ctx.bucket_for(s3, source_bucket, OBJECT)
    source = ctx.store.head_object(source_bucket, source_key, version_id=source_version)
    ctx.check_object(s3, source_info, source)
    check_copy_source(s3.headers, source)
    directive = s3.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error(
            "InvalidArgument",
            "Unknown metadata directive.",
            ArgumentName="x-amz-metadata-directive",
        )
    same = (source_bucket, source_key) == (s3.bucket, s3.key)
    if same and directive == "COPY" and source_version is None:
        raise S3Error(
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to "
            "itself without changing the object's metadata, storage class, website "
            "redirect location or encryption attributes.",
        )
    metadata, posix, content_type = None, None, None
    if directive == "REPLACE":
        metadata, posix = posix_from(user_metadata(s3), source.posix)
        content_type = s3.headers.get("content-type")
    info = await ctx.store.copy_object(
        source_bucket,
        source_key,
        s3.bucket,
        s3.key,
        version_id=source.version_id,
        metadata=metadata,
        content_type=content_type,
        posix=posix,
    )
    headers: dict[str, str] = {}
    if target.versioning is not Versioning.DISABLED:
        headers["x-amz-version-id"] = info.version_id
    if source_version is not None:
        headers["x-amz-copy-source-version-id"] = source_version
    body = xml_render.copy_object_result(info.etag or "", info.mtime_ns, dict(info.checksums))
    return Response(body, content_type="application/xml", headers=headers)
