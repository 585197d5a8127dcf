"""objfs.s3.multipart — S3 multipart uploads, kept as ordinary objects of an internal bucket.

An upload of KEY in BUCKET is, in the internal bucket `.objfs-uploads` (no S3
name can reach it; `list_buckets` leaves it out):

- `BUCKET/UPLOAD_ID`: an empty object whose metadata holds the target key, the
  owner, the content type and the object's metadata; its mtime is the
  initiation time;
- `BUCKET/UPLOAD_ID/NNNNN`: one object per part, stored (and durable, and
  checked) like any object; its ETag is the part's MD5.

Complete composes the parts into the target by reference (`Store.compose_object`:
one record, no byte copied), then deletes the upload's objects; their segments
stay referenced by the new version. A crash between the two leaves the upload
listed though complete: Abort (or a second Complete) removes it. UploadPartCopy
composes a range of another object the same way.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable

from objfs.errors import BucketAlreadyExists, NoSuchKey, ObjfsError
from objfs.s3 import acl, checksums, xml_listing, xml_parse, xml_render, xml_values
from objfs.s3.app import OBJECT, Response, S3Context, S3Request
from objfs.s3.body import hash_chunk, read_small_body, stream_object_body
from objfs.s3.conditions import check_copy_source
from objfs.s3.errors import S3Error, is_number
from objfs.s3.metadata import PART_CHECKSUMS, PART_SIZES, posix_from, user_metadata
from objfs.store import names
from objfs.store.types import ComposeSource, ObjectInfo, Versioning

UPLOADS_BUCKET = ".objfs-uploads"
MIN_PART_BYTES = 5 * 1024 * 1024  # every part but the last (S3's rule)
MAX_PART_NUMBER = 10_000
MAX_PART_BYTES = 5 * 1024**3
_META_KEY = "key"
_META_OWNER = "owner"
_META_CHECKSUM = "checksum"  # "ALGORITHM:TYPE" when the upload was created with one
_USER_PREFIX = "m:"


async def _uploads_bucket(ctx: S3Context) -> None:
    try:
        ctx.store.head_bucket(UPLOADS_BUCKET)
    except ObjfsError:
        try:
            await ctx.store.create_bucket(UPLOADS_BUCKET, owner="objfs", internal=True)
        except BucketAlreadyExists:
            pass


def _upload_key(bucket: str, upload_id: str) -> str:
    return f"{bucket}/{upload_id}"


def _part_key(bucket: str, upload_id: str, part_number: int) -> str:
    return f"{bucket}/{upload_id}/{part_number:05d}"


def _no_such_upload(upload_id: str) -> S3Error:
    return S3Error(
        "NoSuchUpload",
        "The specified multipart upload does not exist. The upload ID may be invalid, "
        "or the upload may have been aborted or completed.",
        UploadId=upload_id,
    )


def _upload(ctx: S3Context, s3: S3Request) -> tuple[str, ObjectInfo]:
    """(upload id, its record) for the request's uploadId, which must be for its key."""
    assert s3.bucket is not None and s3.key is not None
    upload_id = s3.query.get("uploadId", "")
    if not upload_id.isalnum():
        raise _no_such_upload(upload_id)
    try:
        info = ctx.store.head_object(UPLOADS_BUCKET, _upload_key(s3.bucket, upload_id))
    except ObjfsError:
        raise _no_such_upload(upload_id) from None
    if dict(info.metadata).get(_META_KEY) != s3.key:
        raise _no_such_upload(upload_id)
    return upload_id, info


def _checksum_of(upload: ObjectInfo) -> tuple[str, str] | None:
    """(algorithm, COMPOSITE | FULL_OBJECT) the upload was created with, or None."""
    raw = dict(upload.metadata).get(_META_CHECKSUM)
    if raw is None:
        return None
    algorithm, _, kind = raw.partition(":")
    return algorithm, kind


def _checksum_headers(checksum: tuple[str, str] | None) -> dict[str, str]:
    if checksum is None:
        return {}
    return {"x-amz-checksum-algorithm": checksum[0].upper(), "x-amz-checksum-type": checksum[1]}


def _part_number(s3: S3Request) -> int:
    raw = s3.query.get("partNumber", "")
    if not is_number(raw) or not 1 <= int(raw) <= MAX_PART_NUMBER:
        raise S3Error(
            "InvalidArgument",
            f"Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive",
            ArgumentName="partNumber",
            ArgumentValue=raw,
        )
    return int(raw)


async def create_multipart_upload(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None and s3.key is not None
    ctx.bucket_for(s3, s3.bucket, acl.WRITE)
    names.check_key(s3.key)  # a key Complete would refuse: refused before any part comes
    checksum = checksums.upload_checksum(s3.headers)
    await _uploads_bucket(ctx)
    upload_id = secrets.token_hex(16)
    owner = s3.user.canonical_id if s3.user is not None else acl.ALL_USERS
    metadata = {_META_KEY: s3.key, _META_OWNER: owner}
    if checksum is not None:
        metadata[_META_CHECKSUM] = ":".join(checksum)
    for name, value in user_metadata(s3).items():
        metadata[_USER_PREFIX + name] = value
    await ctx.store.put_object(
        UPLOADS_BUCKET,
        _upload_key(s3.bucket, upload_id),
        b"",
        content_type=s3.headers.get("content-type", "binary/octet-stream"),
        metadata=metadata,
    )
    body = xml_render.initiate_multipart_upload(s3.bucket, s3.key, upload_id)
    return Response(body, content_type="application/xml", headers=_checksum_headers(checksum))


async def upload_part(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    ctx.bucket_for(s3, s3.bucket, acl.WRITE)
    part_number = _part_number(s3)
    upload_id, upload = _upload(ctx, s3)
    checksum = _checksum_of(upload)
    algorithm = None if checksum is None else checksum[0]
    sent = checksums.requested_checksums(s3.headers)
    if algorithm is not None and any(name != algorithm for name in sent):
        raise S3Error(
            "InvalidRequest",
            f"Checksum Type mismatch occurred, expected checksum Type: {algorithm}, "
            f"actual checksum Type: {next(iter(sent))}",
        )
    async with ctx.store.open_writer(
        UPLOADS_BUCKET, _part_key(s3.bucket, upload_id, part_number)
    ) as writer:
        received = await stream_object_body(s3, writer.write, compute=algorithm)
        if received.size_bytes > MAX_PART_BYTES:
            raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
        version = await writer.commit(
            expected_md5=received.content_md5_hex, checksums=received.checksums
        )
    await _drop_part_if_upload_ended(ctx, s3.bucket, upload_id, part_number)
    headers = {"ETag": f'"{version.etag}"'}
    for algorithm, value in received.checksums.items():
        headers[f"x-amz-checksum-{algorithm}"] = value
    return Response(b"", headers=headers)


async def upload_part_copy(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    ctx.bucket_for(s3, s3.bucket, acl.WRITE)
    part_number = _part_number(s3)
    upload_id, upload = _upload(ctx, s3)
    checksum = _checksum_of(upload)
    source_bucket, source_key, source_version = xml_parse.parse_copy_source(
        s3.headers["x-amz-copy-source"]
    )
    source_info = ctx.bucket_for(s3, source_bucket, OBJECT)
    source = ctx.store.head_object(source_bucket, source_key, version_id=source_version)
    ctx.check_object(s3, source_info, source)
    check_copy_source(s3.headers, source)
    start, end = _copy_range(s3.headers.get("x-amz-copy-source-range"), source.size_bytes)
    whole_source = (start, end) == (0, source.size_bytes) and "-" not in (source.etag or "-")
    part_checksums: dict[str, str] = {}
    if whole_source and checksum is None and source.etag is not None:
        etag = source.etag  # its MD5 is known: nothing to read
    else:
        etag, part_checksums = await _digests_of_range(
            ctx, source, start, end, None if checksum is None else checksum[0]
        )
    info = await ctx.store.compose_object(
        UPLOADS_BUCKET,
        _part_key(s3.bucket, upload_id, part_number),
        [ComposeSource(source_bucket, source_key, source.version_id, start, end - start)],
        etag=etag,
        checksums=part_checksums,
    )
    await _drop_part_if_upload_ended(ctx, s3.bucket, upload_id, part_number)
    body = xml_render.copy_part_result(etag, info.mtime_ns, part_checksums)
    return Response(body, content_type="application/xml")


async def _drop_part_if_upload_ended(
    ctx: S3Context, bucket: str, upload_id: str, part_number: int
) -> None:
    """After a part is stored: if its upload was completed or aborted while the part
    came in (Abort lists the parts once, after it deletes the record), delete the
    part, which nothing would ever delete or list again, and answer NoSuchUpload.

    Raises:
        S3Error: NoSuchUpload.
    """
    try:
        ctx.store.head_object(UPLOADS_BUCKET, _upload_key(bucket, upload_id))
        return
    except NoSuchKey:
        pass
    # (Deleting what the Abort deleted already is no error.)
    await ctx.store.delete_object(UPLOADS_BUCKET, _part_key(bucket, upload_id, part_number))
    raise _no_such_upload(upload_id)


def _copy_range(header: str | None, size: int) -> tuple[int, int]:
    if header is None:
        return 0, size
    spec = header.removeprefix("bytes=")
    first, dash, last = spec.partition("-")
    if header == spec or not dash or not is_number(first) or not is_number(last):
        raise S3Error(
            "InvalidArgument",
            "The x-amz-copy-source-range value must be of the form bytes=first-last where "
            "first and last are the zero-based offsets of the first and last bytes to copy",
            ArgumentName="x-amz-copy-source-range",
            ArgumentValue=header,
        )
    start, end = int(first), int(last) + 1
    if start >= end or end > size:
        raise S3Error(
            "InvalidRange", "The requested range is not satisfiable", ActualObjectSize=str(size)
        )
    return start, end


async def _digests_of_range(
    ctx: S3Context, source: ObjectInfo, start: int, end: int, algorithm: str | None
) -> tuple[str, dict[str, str]]:
    """The MD5 (hex) of a byte range of `source` and, with `algorithm`, its checksum."""
    digest = hashlib.md5()
    checksum = None if algorithm is None else checksums.Checksum(algorithm)
    hashers: list[Callable[[bytes], object]] = [digest.update]
    if checksum is not None:
        hashers.append(checksum.update)
    async with ctx.store.open_reader(
        source.bucket, source.key, version_id=source.version_id
    ) as reader:
        position = start
        while position < end:
            data = await reader.read(position, min(1 << 20, end - position))
            if not data:
                break
            await hash_chunk(hashers, data)
            position += len(data)
    if checksum is None:
        return digest.hexdigest(), {}
    return digest.hexdigest(), {checksum.algorithm: checksum.base64()}


async def complete_multipart_upload(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None and s3.key is not None
    bucket_info = ctx.bucket_for(s3, s3.bucket, acl.WRITE)
    upload_id, upload = _upload(ctx, s3)
    wanted = xml_parse.parse_complete_multipart(await read_small_body(s3))
    if_none_match = s3.headers.get("if-none-match")
    if if_none_match not in (None, "*"):
        raise S3Error("NotImplemented", "If-None-Match on CompleteMultipartUpload takes only '*'")
    if not wanted:
        raise S3Error("MalformedXML", "You must specify at least one part")
    checksum = _checksum_of(upload)
    sources, digests, sizes, part_checksums = [], [], [], []
    for index, (part_number, etag, sent) in enumerate(wanted):
        try:
            part = ctx.store.head_object(
                UPLOADS_BUCKET, _part_key(s3.bucket, upload_id, part_number)
            )
        except NoSuchKey:
            raise _invalid_part(part_number) from None
        if part.etag is None or part.etag != etag.strip('"'):
            raise _invalid_part(part_number)
        if index < len(wanted) - 1 and part.size_bytes < MIN_PART_BYTES:
            raise S3Error(
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed object size.",
                PartNumber=str(part_number),
            )
        if checksum is not None:
            value = dict(part.checksums).get(checksum[0])
            if value is None or sent.get(checksum[0], value) != value:
                raise _invalid_part(part_number)  # none: stored by an objfs before checksums
            part_checksums.append((value, part.size_bytes))
        sources.append(ComposeSource(UPLOADS_BUCKET, part.key, part.version_id))
        digests.append(bytes.fromhex(part.etag))
        sizes.append(part.size_bytes)
    etag = f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(wanted)}"
    metadata = {
        name[len(_USER_PREFIX) :]: value
        for name, value in upload.metadata
        if name.startswith(_USER_PREFIX)
    }
    metadata, posix = posix_from(metadata)
    metadata[PART_SIZES] = ",".join(str(size) for size in sizes)
    object_checksums: dict[str, str] = {}
    if checksum is not None:
        algorithm, kind = checksum
        value = checksums.combined_checksum(algorithm, kind, part_checksums)
        claimed = s3.headers.get(checksums.header_name(algorithm))
        if kind == checksums.FULL_OBJECT and claimed is not None:
            checksums.verify_checksum(algorithm, claimed, value)
        object_checksums[algorithm] = value
        metadata[PART_CHECKSUMS] = ",".join(value for value, _ in part_checksums)
    info = await ctx.store.compose_object(
        s3.bucket,
        s3.key,
        sources,
        etag=etag,
        content_type=upload.content_type,
        metadata=metadata,
        checksums=object_checksums,
        if_none_match=if_none_match == "*",
        if_match=ctx.check_if_match(s3),
        posix=posix,
    )
    await _remove_upload(ctx, s3.bucket, upload_id)
    body = xml_render.complete_multipart_upload(
        f"/{s3.bucket}/{s3.key}",
        s3.bucket,
        s3.key,
        etag,
        object_checksums,
        checksum_type=None if checksum is None else checksum[1],
    )
    headers = {}
    if bucket_info.versioning is not Versioning.DISABLED:
        headers["x-amz-version-id"] = info.version_id
    return Response(body, content_type="application/xml", headers=headers)


def _invalid_part(part_number: int) -> S3Error:
    return S3Error(
        "InvalidPart",
        "One or more of the specified parts could not be found. The part may not have been "
        "uploaded, or the specified entity tag may not match the part's entity tag.",
        PartNumber=str(part_number),
    )


async def _remove_upload(ctx: S3Context, bucket: str, upload_id: str) -> None:
    """Delete the upload's record first (so it stops being listed), then its parts."""
    await ctx.store.delete_object(UPLOADS_BUCKET, _upload_key(bucket, upload_id))
    prefix = _upload_key(bucket, upload_id) + "/"
    while True:
        page = ctx.store.list_objects(UPLOADS_BUCKET, prefix=prefix, limit=1000)
        for item in page.objects:
            await ctx.store.delete_object(UPLOADS_BUCKET, item.key)
        if not page.is_truncated:
            return


async def abort_multipart_upload(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    ctx.bucket_for(s3, s3.bucket, acl.WRITE)
    upload_id, _ = _upload(ctx, s3)
    await _remove_upload(ctx, s3.bucket, upload_id)
    return Response(b"", status=204)


async def list_parts(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None and s3.key is not None
    ctx.bucket_for(s3, s3.bucket)
    upload_id, upload = _upload(ctx, s3)
    marker_raw = s3.query.get("part-number-marker", "0") or "0"
    max_raw = s3.query.get("max-parts", "1000") or "1000"
    if not is_number(marker_raw) or not is_number(max_raw):
        raise S3Error("InvalidArgument", "part-number-marker and max-parts are whole numbers")
    marker, max_parts = int(marker_raw), min(int(max_raw), 1000)
    checksum = _checksum_of(upload)
    start_after = _part_key(s3.bucket, upload_id, marker) if marker else ""
    page = ctx.store.list_objects(
        UPLOADS_BUCKET,
        prefix=_upload_key(s3.bucket, upload_id) + "/",
        start_after=start_after,
        limit=max_parts,
    )
    parts = [
        xml_render.Part(
            part_number=int(item.key.rsplit("/", 1)[1]),
            size_bytes=item.size_bytes,
            etag=item.etag,
            mtime_ns=item.mtime_ns,
            checksums=item.checksums,
        )
        for item in page.objects
    ]
    owner = _owner(ctx, upload)
    body = xml_render.list_parts(
        s3.bucket,
        s3.key,
        upload_id,
        parts=parts,
        part_number_marker=marker,
        next_part_number_marker=parts[-1].part_number if parts and page.is_truncated else None,
        max_parts=max_parts,
        is_truncated=page.is_truncated,
        owner=owner,
        initiator=owner,
        checksum_algorithm=None if checksum is None else checksum[0].upper(),
        checksum_type=None if checksum is None else checksum[1],
    )
    return Response(body, content_type="application/xml")


def _owner(ctx: S3Context, upload: ObjectInfo) -> xml_values.Owner:
    owner_id = dict(upload.metadata).get(_META_OWNER, "")
    user = ctx.users.by_canonical_id(owner_id)
    return xml_values.Owner(owner_id, user.display_name if user is not None else None)


async def list_multipart_uploads(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    ctx.bucket_for(s3, s3.bucket)
    query = s3.query
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter") or None
    key_marker = query.get("key-marker", "")
    upload_id_marker = query.get("upload-id-marker", "")
    max_raw = query.get("max-uploads", "1000") or "1000"
    if not is_number(max_raw):
        raise S3Error("InvalidArgument", "max-uploads is a whole number")
    max_uploads = min(int(max_raw), 1000)
    uploads = _all_uploads(ctx, s3.bucket)
    entries: list[xml_listing.Upload] = []
    prefixes: list[str] = []
    truncated = False
    passed_marker = False
    last_is_prefix = False  # whether the page ends with a common prefix (the next marker)
    for key, initiated, upload_id, info in uploads:
        if not key.startswith(prefix):
            continue
        # After key-marker alone: later keys only. With upload-id-marker: the uploads
        # of key-marker that come after that one, then later keys.
        if (
            key_marker
            and key <= key_marker
            and (key < key_marker or not upload_id_marker or not passed_marker)
        ):
            passed_marker = passed_marker or upload_id == upload_id_marker
            continue
        if delimiter is not None and delimiter in key[len(prefix) :]:
            common = key[: len(prefix) + key[len(prefix) :].index(delimiter) + len(delimiter)]
            if key_marker.startswith(common):
                continue  # rolled up on an earlier page (its NextKeyMarker is the prefix)
            if common not in prefixes:
                if len(entries) + len(prefixes) == max_uploads:
                    truncated = True
                    break
                prefixes.append(common)
                last_is_prefix = True
            continue
        if len(entries) + len(prefixes) == max_uploads:
            truncated = True
            break
        owner = _owner(ctx, info)
        entries.append(
            xml_listing.Upload(
                key=key, upload_id=upload_id, initiated_ns=initiated, owner=owner, initiator=owner
            )
        )
        last_is_prefix = False
    next_key_marker = next_upload_id_marker = None
    if truncated and last_is_prefix:
        next_key_marker = prefixes[-1]
    elif truncated and entries:
        next_key_marker, next_upload_id_marker = entries[-1].key, entries[-1].upload_id
    encoding_type = xml_listing.check_encoding_type(query.get("encoding-type"))
    body = xml_listing.list_multipart_uploads(
        xml_listing.Listing(s3.bucket, prefix, delimiter, max_uploads, encoding_type),
        uploads=entries,
        common_prefixes=prefixes,
        is_truncated=truncated,
        key_marker=key_marker,
        upload_id_marker=upload_id_marker,
        next_key_marker=next_key_marker,
        next_upload_id_marker=next_upload_id_marker,
    )
    return Response(body, content_type="application/xml")


def _all_uploads(ctx: S3Context, bucket: str) -> list[tuple[str, int, str, ObjectInfo]]:
    """(target key, initiated ns, upload id, record) of every upload in a bucket, in
    S3's order: by key, then by initiation."""
    try:
        ctx.store.head_bucket(UPLOADS_BUCKET)
    except ObjfsError:
        return []
    found = []
    start_after = ""
    while True:
        page = ctx.store.list_objects(
            UPLOADS_BUCKET, prefix=f"{bucket}/", delimiter="/", start_after=start_after
        )
        for item in page.objects:
            key = dict(item.metadata).get(_META_KEY, "")
            found.append((key, item.mtime_ns, item.key.rsplit("/", 1)[1], item))
        if not page.is_truncated or page.next_start_after is None:
            break
        start_after = page.next_start_after
    found.sort(key=lambda entry: (entry[0], entry[1]))
    return found
