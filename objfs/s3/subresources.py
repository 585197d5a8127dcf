"""objfs.s3.subresources — the ?acl, ?tagging and ?cors sub-resources, and CORS itself.

Bucket ACLs, tags and CORS rules are bucket settings in the core (one durable
record each change); object ACLs and tags are entries of the object's metadata
(`a:acl`, `t:KEY`), changed in place on the current version. CORS: an `OPTIONS`
preflight is answered from the bucket's rules, and an actual request that
carries `Origin` gets the matching rule's headers.
"""

from __future__ import annotations

import fnmatch
import json
from urllib.parse import parse_qsl

from objfs.errors import ObjfsError
from objfs.s3 import acl, xml_parse, xml_render, xml_values
from objfs.s3.app import OBJECT, OWNER, Response, S3Context, S3Request
from objfs.s3.body import read_small_body
from objfs.s3.checksums import checksum_type
from objfs.s3.errors import S3Error
from objfs.s3.metadata import TAG_PREFIX, part_checksums, part_sizes
from objfs.store.types import BucketInfo

TAGGING_SETTING = "tagging"
CORS_SETTING = "cors"


# -- ACLs --------------------------------------------------------------------------


async def get_bucket_acl(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    info = ctx.bucket_for(s3, s3.bucket, acl.READ_ACP)
    return _acl_response(ctx, ctx.bucket_acl(info))


async def put_bucket_acl(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    info = ctx.bucket_for(s3, s3.bucket, acl.WRITE_ACP)
    wanted = await _acl_from_request(s3, info.owner)
    await ctx.store.set_bucket_setting(s3.bucket, acl.BUCKET_ACL_SETTING, wanted.encode())
    return Response(b"")


async def get_object_acl(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None and s3.key is not None
    bucket = ctx.bucket_for(s3, s3.bucket, OBJECT)
    info = ctx.store.head_object(s3.bucket, s3.key, version_id=s3.query.get("versionId"))
    ctx.check_object(s3, bucket, info, acl.READ_ACP)
    from objfs.s3.app import object_acl

    return _acl_response(ctx, object_acl(bucket, info))


async def put_object_acl(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None and s3.key is not None
    bucket = ctx.bucket_for(s3, s3.bucket, OBJECT)
    info = ctx.store.head_object(s3.bucket, s3.key)
    ctx.check_object(s3, bucket, info, acl.WRITE_ACP)
    wanted = await _acl_from_request(s3, bucket.owner)
    metadata = dict(info.metadata)
    metadata[acl.OBJECT_ACL_METADATA] = wanted.encode().decode()
    await ctx.store.set_attributes(s3.bucket, s3.key, metadata=metadata)
    return Response(b"")


async def _acl_from_request(s3: S3Request, owner: str) -> acl.Acl:
    from_headers = acl.from_headers(dict(s3.headers), owner)
    body = await read_small_body(s3)
    if from_headers is not None:
        if body.strip():
            raise S3Error("UnexpectedContent", "This request does not support content")
        return from_headers
    if not body.strip():
        raise S3Error("MissingSecurityHeader", "Your request was missing a required header")
    policy = xml_parse.parse_access_control_policy(body)
    return acl.from_policy(owner, policy.grants)


def _acl_response(ctx: S3Context, value: acl.Acl) -> Response:
    user = ctx.users.by_canonical_id(value.owner)
    body = xml_render.access_control_policy(
        value.owner, user.display_name if user else None, acl.rendered_grants(value)
    )
    return Response(body, content_type="application/xml")


# -- tagging -------------------------------------------------------------------------


async def get_bucket_tagging(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    info = ctx.bucket_for(s3, s3.bucket, OWNER)
    raw = info.setting(TAGGING_SETTING)
    if raw is None:
        raise S3Error("NoSuchTagSet", "The TagSet does not exist", status=404)
    tags = [(k, v) for k, v in json.loads(raw)]
    return Response(xml_render.tagging(tags), content_type="application/xml")


async def put_bucket_tagging(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    ctx.bucket_for(s3, s3.bucket, OWNER)
    tags = xml_parse.parse_tagging(await read_small_body(s3), max_tags=xml_parse.BUCKET_TAGS_MAX)
    await ctx.store.set_bucket_setting(s3.bucket, TAGGING_SETTING, json.dumps(tags).encode())
    return Response(b"", status=204)


async def delete_bucket_tagging(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    ctx.bucket_for(s3, s3.bucket, OWNER)
    await ctx.store.set_bucket_setting(s3.bucket, TAGGING_SETTING, None)
    return Response(b"", status=204)


def tags_from_header(value: str | None) -> dict[str, str]:
    """Object tags from `x-amz-tagging` (a URL query string), as metadata entries.

    Raises:
        S3Error: InvalidTag, as `xml.check_tags`.
    """
    if not value:
        return {}
    tags = xml_parse.check_tags(
        parse_qsl(value, keep_blank_values=True), max_tags=xml_parse.OBJECT_TAGS_MAX
    )
    return {TAG_PREFIX + k: v for k, v in tags}


async def get_object_tagging(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None and s3.key is not None
    bucket = ctx.bucket_for(s3, s3.bucket, OBJECT)
    info = ctx.store.head_object(s3.bucket, s3.key, version_id=s3.query.get("versionId"))
    ctx.check_object(s3, bucket, info)
    tags = [(k[len(TAG_PREFIX) :], v) for k, v in info.metadata if k.startswith(TAG_PREFIX)]
    response = Response(xml_render.tagging(tags), content_type="application/xml")
    response.headers["x-amz-version-id"] = info.version_id
    return response


async def put_object_tagging(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None and s3.key is not None
    ctx.bucket_for(s3, s3.bucket, acl.WRITE)
    _current_only(ctx, s3)
    tags = xml_parse.parse_tagging(await read_small_body(s3), max_tags=xml_parse.OBJECT_TAGS_MAX)
    info = ctx.store.head_object(s3.bucket, s3.key)
    metadata = {k: v for k, v in info.metadata if not k.startswith(TAG_PREFIX)}
    metadata.update({TAG_PREFIX + k: v for k, v in tags})
    await ctx.store.set_attributes(s3.bucket, s3.key, metadata=metadata)
    return Response(b"", headers={"x-amz-version-id": info.version_id})


async def delete_object_tagging(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None and s3.key is not None
    ctx.bucket_for(s3, s3.bucket, acl.WRITE)
    _current_only(ctx, s3)
    info = ctx.store.head_object(s3.bucket, s3.key)
    metadata = {k: v for k, v in info.metadata if not k.startswith(TAG_PREFIX)}
    await ctx.store.set_attributes(s3.bucket, s3.key, metadata=metadata)
    return Response(b"", status=204, headers={"x-amz-version-id": info.version_id})


def _current_only(ctx: S3Context, s3: S3Request) -> None:
    """Tags change in place on the current version; naming an older one is refused."""
    assert s3.bucket is not None and s3.key is not None
    version_id = s3.query.get("versionId")
    if version_id and version_id != ctx.store.head_object(s3.bucket, s3.key).version_id:
        raise S3Error("NotImplemented", "tags of a noncurrent version cannot be changed here")


# -- CORS ----------------------------------------------------------------------------


async def get_bucket_cors(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    info = ctx.bucket_for(s3, s3.bucket, OWNER)
    raw = info.setting(CORS_SETTING)
    if raw is None:
        raise S3Error(
            "NoSuchCORSConfiguration", "The CORS configuration does not exist", status=404
        )
    return Response(raw, content_type="application/xml")


async def put_bucket_cors(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    ctx.bucket_for(s3, s3.bucket, OWNER)
    rules = xml_parse.parse_cors_configuration(await read_small_body(s3, need_md5=False))
    await ctx.store.set_bucket_setting(
        s3.bucket, CORS_SETTING, xml_render.cors_configuration(rules)
    )
    return Response(b"")


async def delete_bucket_cors(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    ctx.bucket_for(s3, s3.bucket, OWNER)
    await ctx.store.set_bucket_setting(s3.bucket, CORS_SETTING, None)
    return Response(b"", status=204)


def _rules(info: BucketInfo) -> list[xml_values.CorsRule]:
    raw = info.setting(CORS_SETTING)
    return [] if raw is None else xml_parse.parse_cors_configuration(raw)


def _matching(
    rules: list[xml_values.CorsRule], origin: str, method: str, headers: list[str]
) -> xml_values.CorsRule | None:
    for rule in rules:
        if not any(fnmatch.fnmatchcase(origin, pattern) for pattern in rule.allowed_origins):
            continue
        if method not in rule.allowed_methods:
            continue
        allowed = [h.lower() for h in rule.allowed_headers]
        if all(any(fnmatch.fnmatchcase(h, a) for a in allowed) for h in headers):
            return rule
    return None


def _cors_headers(rule: xml_values.CorsRule, origin: str, method: str) -> dict[str, str]:
    headers = {
        "Access-Control-Allow-Origin": "*" if rule.allowed_origins == ("*",) else origin,
        "Access-Control-Allow-Methods": ", ".join(rule.allowed_methods),
        "Vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
    }
    if rule.expose_headers:
        headers["Access-Control-Expose-Headers"] = ", ".join(rule.expose_headers)
    if rule.max_age_seconds is not None:
        headers["Access-Control-Max-Age"] = str(rule.max_age_seconds)
    if rule.allowed_origins != ("*",):
        headers["Access-Control-Allow-Credentials"] = "true"
    return headers


async def preflight(ctx: S3Context, s3: S3Request) -> Response:
    """`OPTIONS`: whether the bucket's CORS rules allow the request a browser asks about."""
    assert s3.bucket is not None
    origin = s3.headers.get("origin")
    method = s3.headers.get("access-control-request-method")
    if not origin or not method:
        raise S3Error(
            "BadRequest", "Insufficient information. Origin request header needed.", status=400
        )
    try:
        info = ctx.store.head_bucket(s3.bucket)
    except ObjfsError:
        info = None
    requested = [
        h.strip().lower()
        for h in s3.headers.get("access-control-request-headers", "").split(",")
        if h.strip()
    ]
    rule = _matching(_rules(info), origin, method, requested) if info is not None else None
    if rule is None:
        raise S3Error(
            "AccessForbidden", "CORSResponse: This CORS request is not allowed.", status=403
        )
    headers = _cors_headers(rule, origin, method)
    if requested:
        headers["Access-Control-Allow-Headers"] = ", ".join(requested)
    return Response(b"", headers=headers)


def add_cors_headers(ctx: S3Context, s3: S3Request, response: Response) -> None:
    """On an actual request with `Origin`, the headers of the first matching rule."""
    origin = s3.headers.get("origin")
    if not origin or s3.bucket is None or s3.method == "OPTIONS":
        return
    try:
        info = ctx.store.head_bucket(s3.bucket)
    except ObjfsError:
        return
    if info.setting(CORS_SETTING) is None:
        return
    rule = _matching(_rules(info), origin, s3.method, [])
    if rule is not None:
        for name, value in _cors_headers(rule, origin, s3.method).items():
            response.headers[name] = value


# -- attributes ----------------------------------------------------------------------


async def get_object_attributes(ctx: S3Context, s3: S3Request) -> Response:
    """GetObjectAttributes: the attributes named in `x-amz-object-attributes`."""
    assert s3.bucket is not None and s3.key is not None
    bucket = ctx.bucket_for(s3, s3.bucket, OBJECT)
    info = ctx.store.head_object(s3.bucket, s3.key, version_id=s3.query.get("versionId"))
    ctx.check_object(s3, bucket, info)
    wanted = {
        name.strip().lower()
        for name in s3.headers.get("x-amz-object-attributes", "").split(",")
        if name.strip()
    }
    if not wanted:
        raise S3Error("InvalidArgument", "x-amz-object-attributes header is required")
    parts = None
    if "objectparts" in wanted:
        sizes = part_sizes(info)
        if sizes is not None:
            checksums = part_checksums(info)
            parts = xml_render.ObjectParts(
                total_parts_count=len(sizes),
                parts=tuple(
                    xml_render.Part(
                        part_number=n,
                        size_bytes=size,
                        checksums=() if checksums is None else (checksums[n - 1],),
                    )
                    for n, size in enumerate(sizes[:1000], 1)
                ),
                is_truncated=len(sizes) > 1000,
            )
    body = xml_render.get_object_attributes(
        etag=info.etag if "etag" in wanted else None,
        checksums=info.checksums if "checksum" in wanted else None,
        checksum_type=checksum_type(info.checksums[0][1])
        if "checksum" in wanted and info.checksums
        else None,
        object_parts=parts,
        storage_class="STANDARD" if "storageclass" in wanted else None,
        object_size=info.size_bytes if "objectsize" in wanted else None,
    )
    response = Response(body, content_type="application/xml")
    response.headers["Last-Modified"] = xml_values.http_date(info.mtime_ns)
    response.headers["x-amz-version-id"] = info.version_id
    return response
