"""objfs.s3.handlers — one short function per S3 operation: parse, call the store, render.

`route` picks the handler from the method, whether a bucket and a key are named,
and the sub-resource in the query. Handlers raise `S3Error` (or let an
`ObjfsError` through: the app translates it by the one table in errors.py);
object bodies stream through `body.py` in both directions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from email.utils import parsedate_to_datetime

from objfs.errors import NoSuchKey, ObjfsError
from objfs.s3 import (
    acl,
    multipart,
    post_object,
    subresources,
    xml_listing,
    xml_parse,
    xml_render,
    xml_values,
)
from objfs.s3.app import OBJECT, OWNER, Handler, Response, S3Context, S3Request
from objfs.s3.body import read_small_body, stream_object_body
from objfs.s3.errors import S3Error, from_core, is_number
from objfs.s3.metadata import (
    HEADER_PREFIX,
    TAG_PREFIX,
    part_sizes,
    part_span,
    posix_from,
    posix_headers,
    user_metadata,
)
from objfs.store.types import ListPage, ObjectInfo, Versioning

_READ_CHUNK_BYTES = 1024 * 1024


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
            "GET": get_object,
            "HEAD": head_object,
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
    if "if-match" in s3.headers:
        _check_if_match_for_put(ctx, s3)
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


def _check_if_match_for_put(ctx: S3Context, s3: S3Request) -> None:
    assert s3.bucket is not None and s3.key is not None
    try:
        current = ctx.store.head_object(s3.bucket, s3.key)
    except NoSuchKey:
        raise S3Error("NoSuchKey", "The specified key does not exist.", Key=s3.key) from None
    if not _etag_matches(s3.headers["if-match"], current.etag):
        raise _precondition_failed("If-Match")


def _etag_matches(header: str, etag: str | None) -> bool:
    wanted = [part.strip().strip('"') for part in header.split(",")]
    return "*" in wanted or (etag is not None and etag in wanted)


def _object_headers(info: ObjectInfo, *, versioned: bool, checksum_mode: bool) -> dict[str, str]:
    headers = {
        "Last-Modified": xml_values.http_date(info.mtime_ns),
        "Content-Type": info.content_type,
        "Accept-Ranges": "bytes",
    }
    if info.etag is not None:
        headers["ETag"] = f'"{info.etag}"'
    tags = 0
    for name, value in info.metadata:
        if name.startswith(HEADER_PREFIX):
            headers[name[len(HEADER_PREFIX) :].title()] = value
        elif name.startswith(TAG_PREFIX):
            tags += 1
        elif ":" not in name:  # the others are kept by the faces (ACL, parts, links ...)
            headers[f"x-amz-meta-{name}"] = value
    headers.update(posix_headers(info))
    if tags:
        headers["x-amz-tagging-count"] = str(tags)
    if versioned:
        headers["x-amz-version-id"] = info.version_id
    if checksum_mode:
        for algorithm, value in info.checksums:
            headers[f"x-amz-checksum-{algorithm}"] = value
    return headers


def _evaluate_conditions(
    headers: Mapping[str, str], info: ObjectInfo, prefix: str = ""
) -> tuple[str | None, bool]:
    """AWS's order of the conditional headers (`prefix`: "x-amz-copy-source-" for a
    copy's source): If-Match, else If-Unmodified-Since; then If-None-Match, else
    If-Modified-Since. Returns (the failed precondition or None, not modified)."""
    mtime_s = info.mtime_ns // 1_000_000_000
    failed = None
    if prefix + "if-match" in headers:
        if not _etag_matches(headers[prefix + "if-match"], info.etag):
            failed = "If-Match"
    elif prefix + "if-unmodified-since" in headers:
        since = _http_seconds(headers[prefix + "if-unmodified-since"])
        if since is not None and mtime_s > since:
            failed = "If-Unmodified-Since"
    not_modified = False
    if prefix + "if-none-match" in headers:
        not_modified = _etag_matches(headers[prefix + "if-none-match"], info.etag)
    elif prefix + "if-modified-since" in headers:
        since = _http_seconds(headers[prefix + "if-modified-since"])
        not_modified = since is not None and mtime_s <= since
    return failed, not_modified


def _precondition_failed(condition: str | None = None) -> S3Error:
    message = "At least one of the pre-conditions you specified did not hold"
    if condition is None:
        return S3Error("PreconditionFailed", message)
    return S3Error("PreconditionFailed", message, Condition=condition)


def _check_conditions(s3: S3Request, info: ObjectInfo) -> int | None:
    """Returns 304 or None; raises PreconditionFailed."""
    failed, not_modified = _evaluate_conditions(s3.headers, info)
    if failed is not None:
        raise _precondition_failed(failed)
    return 304 if not_modified else None


def _http_seconds(value: str) -> int | None:
    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # AWS ignores a malformed date


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a `Range: bytes=...` header; None for the whole object (no
    header, or one S3 ignores). Raises InvalidRange when it starts past the end."""
    if header is None or not header.startswith("bytes=") or "," in header:
        return None
    first, dash, last = header[len("bytes=") :].strip().partition("-")
    if not dash or (first and not is_number(first)) or (last and not is_number(last)):
        return None
    if not first:
        if not last or int(last) == 0:
            if not last:
                return None
            raise S3Error(
                "InvalidRange",
                "The requested range is not satisfiable",
                headers={"Content-Range": f"bytes */{size}"},
                RangeRequested=header,
                ActualObjectSize=str(size),
            )
        return max(size - int(last), 0), size
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None
    if start >= size:
        raise S3Error(
            "InvalidRange",
            "The requested range is not satisfiable",
            headers={"Content-Range": f"bytes */{size}"},
            RangeRequested=header,
            ActualObjectSize=str(size),
        )
    return start, end


def _span(s3: S3Request, info: ObjectInfo, headers: dict[str, str]) -> tuple[int, int] | None:
    """The byte range a GET or HEAD asks for: `Range`, or `?partNumber=N`."""
    part = s3.query.get("partNumber")
    if part is None:
        return _range(s3.headers.get("range"), info.size_bytes)
    if "range" in s3.headers:
        raise S3Error("InvalidRequest", "Cannot specify both Range header and partNumber")
    if not is_number(part):
        raise S3Error(
            "InvalidArgument", "Part number must be an integer", ArgumentName="partNumber"
        )
    sizes = part_sizes(info.metadata)
    headers["x-amz-mp-parts-count"] = str(len(sizes) if sizes else 1)
    return part_span(sizes, info.size_bytes, int(part))


def _response_overrides(s3: S3Request, headers: dict[str, str]) -> None:
    for name in (
        "content-type",
        "content-language",
        "expires",
        "cache-control",
        "content-disposition",
        "content-encoding",
    ):
        value = s3.query.get(f"response-{name}")
        if value is not None:
            if s3.user is None:
                raise S3Error(
                    "InvalidRequest",
                    "Request specific response headers cannot be used for anonymous GET requests.",
                )
            headers[name.title()] = value


def _head_for_read(ctx: S3Context, s3: S3Request) -> ObjectInfo:
    """The version a GET or HEAD reads; a delete marker answers as AWS does (404
    for the current one, 405 when named by versionId, both with x-amz-delete-marker)."""
    assert s3.bucket is not None and s3.key is not None
    version_id = s3.query.get("versionId")
    try:
        info = ctx.store.head_object(s3.bucket, s3.key, version_id=version_id)
    except NoSuchKey:
        versions = ctx.store.list_object_versions(
            s3.bucket, prefix=s3.key, key_marker="", limit=1
        ).entries
        marker = bool(versions) and versions[0].key == s3.key and versions[0].delete_marker
        headers = {"x-amz-delete-marker": "true"} if marker else {}
        if marker:
            headers["x-amz-version-id"] = versions[0].version_id
        raise S3Error(
            "NoSuchKey", "The specified key does not exist.", headers=headers, Key=s3.key
        ) from None
    if info.delete_marker:
        raise S3Error(
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
            headers={"x-amz-delete-marker": "true", "x-amz-version-id": info.version_id},
        )
    return info


def _prepare_read(
    ctx: S3Context, s3: S3Request
) -> tuple[ObjectInfo, dict[str, str], Response | None]:
    """What GET and HEAD share: the version read (access checked), its headers,
    and the 304 answer when a condition says the client's copy is current."""
    assert s3.bucket is not None
    bucket = ctx.bucket_for(s3, s3.bucket, OBJECT)
    info = _head_for_read(ctx, s3)
    ctx.check_object(s3, bucket, info)
    headers = _object_headers(
        info,
        versioned=bucket.versioning is not Versioning.DISABLED,
        checksum_mode=s3.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED",
    )
    if _check_conditions(s3, info) == 304:
        return info, headers, Response(b"", status=304, headers={"ETag": headers.get("ETag", "")})
    return info, headers, None


async def head_object(ctx: S3Context, s3: S3Request) -> Response:
    info, headers, not_modified = _prepare_read(ctx, s3)
    if not_modified is not None:
        return not_modified
    span = _span(s3, info, headers)
    length = info.size_bytes if span is None else span[1] - span[0]
    if span is not None:
        headers = {k: v for k, v in headers.items() if not k.startswith("x-amz-checksum-")}
        headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{info.size_bytes}"
    response = Response(b"", status=200 if span is None else 206, headers=headers)
    response.headers["Content-Length"] = str(length)  # of the object: a HEAD sends no body
    return response


async def get_object(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None and s3.key is not None
    store = ctx.store
    info, headers, not_modified = _prepare_read(ctx, s3)
    if not_modified is not None:
        return not_modified
    _response_overrides(s3, headers)
    span = _span(s3, info, headers)
    if span is not None:  # a whole-object checksum says nothing about a range
        headers = {k: v for k, v in headers.items() if not k.startswith("x-amz-checksum-")}
    start, end = span if span is not None else (0, info.size_bytes)
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{info.size_bytes}"
    headers["Content-Length"] = str(end - start)
    bucket, key, version_id = s3.bucket, s3.key, info.version_id
    status = 206 if span is not None else 200
    if end - start <= _READ_CHUNK_BYTES:
        # Small: read now and answer with bytes. The same consistency, and no
        # generator for the response to drive (a fifth of a 4 KiB GET's cost).
        async with store.open_reader(bucket, key, version_id=version_id) as reader:
            data = await reader.read(start, end - start)
        return Response(data, status=status, headers=headers)

    async def body() -> AsyncIterator[bytes]:
        async with store.open_reader(bucket, key, version_id=version_id) as reader:
            if reader.info.mtime_ns != info.mtime_ns or reader.info.etag != info.etag:
                # Overwritten between the headers and the first byte (a "null"
                # version replaced): stop rather than send other bytes.
                raise S3Error("InternalError", "the object changed while being read")
            position = start
            while position < end:
                data = await reader.read(position, min(_READ_CHUNK_BYTES, end - position))
                if not data:
                    break
                position += len(data)
                yield data

    response = Response(body(), status=status, headers=headers)
    response.timeout = None
    return response


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
    _check_copy_conditions(s3, source)
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
    metadata = user_metadata(s3) if directive == "REPLACE" else None
    content_type = s3.headers.get("content-type") if directive == "REPLACE" else None
    info = await ctx.store.copy_object(
        source_bucket,
        source_key,
        s3.bucket,
        s3.key,
        version_id=source.version_id,
        metadata=metadata,
        content_type=content_type,
    )
    headers: dict[str, str] = {}
    if target.versioning is not Versioning.DISABLED:
        headers["x-amz-version-id"] = info.version_id
    if source_version is not None:
        headers["x-amz-copy-source-version-id"] = source_version
    body = xml_render.copy_object_result(info.etag or "", info.mtime_ns, dict(info.checksums))
    return Response(body, content_type="application/xml", headers=headers)


def _check_copy_conditions(s3: S3Request, source: ObjectInfo) -> None:
    """A copy's source conditions: any that does not hold is PreconditionFailed."""
    failed, not_modified = _evaluate_conditions(s3.headers, source, "x-amz-copy-source-")
    if failed is not None or not_modified:
        raise _precondition_failed()
