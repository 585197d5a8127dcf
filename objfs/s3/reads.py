"""objfs.s3.reads — GetObject and HeadObject: which version, which bytes, which headers.

Both handlers prepare a read the same way (`_prepare_read`): the version asked
for (a delete marker answers as AWS does), access checked, the object's headers
(metadata, tag count, version id, checksums when x-amz-checksum-mode asks), and
304 when a condition says the client's copy is current (conditions.py evaluates
them). Then the span: a `Range` header or `?partNumber=N`; a span answers 206,
drops the whole-object checksums and gains Content-Range. HEAD answers with the
headers alone. GET reads up to 1 MiB at once and answers with bytes, and streams
anything larger from one reader, chunk by chunk, with no response timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from objfs.errors import NoSuchKey
from objfs.s3.app import OBJECT, Response, S3Context, S3Request
from objfs.s3.checksums import checksum_type
from objfs.s3.conditions import evaluate_conditions, precondition_failed
from objfs.s3.errors import S3Error, is_number
from objfs.s3.metadata import (
    HEADER_PREFIX,
    TAG_PREFIX,
    part_checksums,
    part_sizes,
    part_span,
    posix_headers,
)
from objfs.s3.xml_values import http_date
from objfs.store import Store
from objfs.store.types import ObjectInfo, Versioning

_READ_CHUNK_BYTES = 1024 * 1024


async def head_object(ctx: S3Context, s3: S3Request) -> Response:
    info, headers, not_modified = _prepare_read(ctx, s3)
    if not_modified is not None:
        return not_modified
    status, start, end = _select_span(s3, info, headers)
    response = Response(b"", status=status, headers=headers)
    response.headers["Content-Length"] = str(end - start)  # of the object: a HEAD sends no body
    return response


async def get_object(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None and s3.key is not None
    info, headers, not_modified = _prepare_read(ctx, s3)
    if not_modified is not None:
        return not_modified
    _response_overrides(s3, headers)
    status, start, end = _select_span(s3, info, headers)
    headers["Content-Length"] = str(end - start)
    if end - start <= _READ_CHUNK_BYTES:
        # Small: read now and answer with bytes. The same consistency, and no
        # generator for the response to drive (a fifth of a 4 KiB GET's cost).
        async with ctx.store.open_reader(s3.bucket, s3.key, version_id=info.version_id) as reader:
            data = await reader.read(start, end - start)
        return Response(data, status=status, headers=headers)
    body = _stream(ctx.store, s3.bucket, s3.key, info, start, end)
    response = Response(body, status=status, headers=headers)
    response.timeout = None  # a large object streams for longer than quart's 60 s
    return response


async def _stream(
    store: Store, bucket: str, key: str, info: ObjectInfo, start: int, end: int
) -> AsyncIterator[bytes]:
    """Bytes [start, end) of the version `info` describes, from one reader."""
    async with store.open_reader(bucket, key, version_id=info.version_id) as reader:
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


# -- the version and its headers -----------------------------------------------------


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


def _object_headers(info: ObjectInfo, *, versioned: bool, checksum_mode: bool) -> dict[str, str]:
    headers = {
        "Last-Modified": http_date(info.mtime_ns),
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
            headers["x-amz-checksum-type"] = checksum_type(value)
    return headers


def _check_conditions(s3: S3Request, info: ObjectInfo) -> int | None:
    """Returns 304 or None; raises PreconditionFailed."""
    failed, not_modified = evaluate_conditions(s3.headers, info)
    if failed is not None:
        raise precondition_failed(failed)
    return 304 if not_modified else None


def _response_overrides(s3: S3Request, headers: dict[str, str]) -> None:
    """A GET's response-content-type=... (and the like) query, over the stored headers."""
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


# -- the span --------------------------------------------------------------------------


def _select_span(s3: S3Request, info: ObjectInfo, headers: dict[str, str]) -> tuple[int, int, int]:
    """(status, start, end) of what a GET or HEAD answers: 200 and the whole object,
    or 206 and the span asked for. A span takes the whole-object checksums out of
    `headers` (they say nothing about a range), except that a part asked for by
    number gets the checksum it was uploaded with, and puts Content-Range in."""
    span = _span(s3, info, headers)
    if span is None:
        return 200, 0, info.size_bytes
    asked = [name for name in headers if name.startswith("x-amz-checksum-")]
    for name in asked:
        del headers[name]
    part = s3.query.get("partNumber")
    checksums = part_checksums(info) if part is not None and asked else None
    if part is not None and checksums is not None:  # _span checked the part's number
        algorithm, value = checksums[int(part) - 1]
        headers[f"x-amz-checksum-{algorithm}"] = value
    headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{info.size_bytes}"
    return 206, span[0], span[1]


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
    sizes = part_sizes(info)
    headers["x-amz-mp-parts-count"] = str(len(sizes) if sizes else 1)
    return part_span(sizes, info.size_bytes, int(part))


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a `Range: bytes=...` header; None for the whole object (no
    header, or one S3 ignores). Raises InvalidRange when it starts past the end."""
    if header is None or not header.startswith("bytes=") or "," in header:
        return None
    first, dash, last = header[len("bytes=") :].strip().partition("-")
    if not dash or (first and not is_number(first)) or (last and not is_number(last)):
        return None
    if not first:  # a suffix: the last N bytes
        if not last:
            return None
        if int(last) == 0:
            raise _unsatisfiable(header, size)
        if size == 0:  # the last N bytes of nothing: the whole (empty) object, as AWS
            return None
        return max(size - int(last), 0), size
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None
    if start >= size:
        raise _unsatisfiable(header, size)
    return start, end


def _unsatisfiable(header: str, size: int) -> S3Error:
    return S3Error(
        "InvalidRange",
        "The requested range is not satisfiable",
        headers={"Content-Range": f"bytes */{size}"},
        RangeRequested=header,
        ActualObjectSize=str(size),
    )
