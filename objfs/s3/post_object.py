"""objfs.s3.post_object — browser form uploads (POST Object) with a signed policy document.

A `multipart/form-data` POST to a bucket: form fields first (key, policy,
x-amz-credential/-date/-signature, acl, Content-Type, x-amz-meta-*,
success_action_status/redirect...), then the `file` field, streamed into the
store's writer (fields after it are ignored, as AWS does). The policy is a
base64 JSON document signed with SigV4's signing key; its expiration and every
condition (exact matches, `starts-with`, `content-length-range`) are enforced,
and a field the policy does not cover is refused. Without a policy the upload
is anonymous and needs a bucket ACL that lets everyone write.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape

from quart import request

from objfs.s3 import acl, sigv4
from objfs.s3.app import OBJECT, Response, S3Context, S3Request
from objfs.s3.errors import S3Error
from objfs.s3.metadata import form_metadata
from objfs.s3.users import User

_FIELD_LIMIT_BYTES = 20 * 1024
_FIELDS_LIMIT_BYTES = 1024 * 1024
_IGNORED_IN_POLICY = {"x-amz-signature", "file", "policy", "x-ignore-"}


def _malformed(message: str) -> S3Error:
    return S3Error("MalformedPOSTRequest", message)


class FormParser:
    """A streaming multipart/form-data parser over an async iterator of chunks."""

    def __init__(self, source: AsyncIterator[bytes], boundary: bytes) -> None:
        self._source = source
        self._delimiter = b"\r\n--" + boundary
        self._buffer = bytearray(b"\r\n")  # so the first boundary looks like the others
        self._done = False

    async def _fill(self) -> bool:
        try:
            chunk = await self._source.__anext__()
        except StopAsyncIteration:
            return False
        self._buffer += chunk
        return True

    async def next_part(self) -> tuple[dict[str, str], str, str | None] | None:
        """Headers, field name and filename of the next part, or None at the end."""
        while True:
            found = self._buffer.find(self._delimiter)
            if found >= 0 and len(self._buffer) >= found + len(self._delimiter) + 2:
                break
            if not await self._fill():
                raise _malformed("the form ended before its closing boundary")
        after = found + len(self._delimiter)
        if self._buffer[after : after + 2] == b"--":
            self._done = True
            return None
        del self._buffer[:after]
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > 16 * 1024 or not await self._fill():
                raise _malformed("a form part's headers are malformed")
        end = self._buffer.index(b"\r\n\r\n")
        raw_headers = bytes(self._buffer[:end]).decode("utf-8", "replace")
        del self._buffer[: end + 4]
        headers = {}
        for line in raw_headers.split("\r\n"):
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        params = _disposition_params(disposition)
        if "name" not in params:
            raise _malformed("a form part has no name")
        return headers, params["name"], params.get("filename")

    async def part_data(self) -> AsyncIterator[bytes]:
        """The current part's bytes, as they arrive (up to the next boundary)."""
        keep = len(self._delimiter) + 4
        while True:
            found = self._buffer.find(self._delimiter)
            if found >= 0:
                if found:
                    yield bytes(self._buffer[:found])
                del self._buffer[:found]
                return
            if len(self._buffer) > keep:
                cut = len(self._buffer) - keep
                yield bytes(self._buffer[:cut])
                del self._buffer[:cut]
            if not await self._fill():
                raise _malformed("the form ended inside a part")


def _disposition_params(value: str) -> dict[str, str]:
    params = {}
    for part in value.split(";")[1:]:
        name, _, raw = part.strip().partition("=")
        params[name.strip().lower()] = raw.strip().strip('"')
    return params


async def post_object(ctx: S3Context, s3: S3Request) -> Response:
    assert s3.bucket is not None
    content_type = s3.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise S3Error(
            "PreconditionFailed", "Bucket POST must be of the enclosure-type multipart/form-data"
        )
    boundary = _disposition_params("x;" + content_type.split(";", 1)[-1]).get("boundary")
    if not boundary:
        raise _malformed("multipart/form-data needs a boundary")
    source = _body()
    parser = FormParser(source, boundary.encode("latin-1"))
    fields: dict[str, str] = {}
    total = 0
    filename: str | None = None
    while True:
        part = await parser.next_part()
        if part is None:
            raise S3Error(
                "InvalidArgument",
                "POST requires exactly one file upload per request.",
                ArgumentName="file",
            )
        _, name, part_filename = part
        if name.lower() == "file":
            filename = part_filename or ""
            break
        value = bytearray()
        async for chunk in parser.part_data():
            value += chunk
            total += len(chunk)
            if len(value) > _FIELD_LIMIT_BYTES or total > _FIELDS_LIMIT_BYTES:
                raise S3Error(
                    "MaxPostPreDataLengthExceeded",
                    "Your POST request fields preceding the upload file were too large.",
                )
        fields[name.lower()] = value.decode("utf-8", "replace")
    bucket = ctx.bucket_for(s3, s3.bucket, OBJECT)
    user, conditions = _authorize(ctx, s3, fields)
    if user is None and not ctx.bucket_acl(bucket).allows(None, acl.WRITE):
        raise S3Error("AccessDenied", "Access Denied")
    if user is not None and not (
        ctx.owns(_as(s3, user), bucket) or ctx.bucket_acl(bucket).allows(user, acl.WRITE)
    ):
        raise S3Error("AccessDenied", "Access Denied")
    if "key" not in fields:
        raise S3Error(
            "InvalidArgument", "Bucket POST must contain a field named 'key'.", ArgumentName="key"
        )
    key = fields["key"].replace("${filename}", filename or "")
    fields["key"] = key
    low, high = (
        _check_conditions(conditions, fields, s3.bucket) if conditions is not None else (0, None)
    )
    metadata = form_metadata(fields)
    owner = user.canonical_id if user is not None else acl.ALL_USERS
    wanted = acl.canned(fields["acl"], owner, bucket.owner) if "acl" in fields else None
    if wanted is not None:
        metadata[acl.OBJECT_ACL_METADATA] = wanted.encode().decode()
    size = 0
    async with ctx.store.open_writer(
        s3.bucket,
        key,
        content_type=fields.get("content-type", "binary/octet-stream"),
        metadata=metadata,
    ) as writer:
        async for chunk in parser.part_data():
            size += len(chunk)
            if high is not None and size > high:
                raise S3Error(
                    "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size"
                )
            await writer.write(chunk)
        if size < low:
            raise S3Error(
                "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size"
            )
        version = await writer.commit()
    return _success(fields, s3.bucket, key, version.etag or "")


async def _body() -> AsyncIterator[bytes]:
    async for chunk in request.body:
        if chunk:
            yield chunk


def _as(s3: S3Request, user: User) -> S3Request:
    return replace(s3, user=user)


def _authorize(
    ctx: S3Context, s3: S3Request, fields: dict[str, str]
) -> tuple[User | None, list[Any] | None]:
    """The user who signed the policy and its conditions; (None, None) without one."""
    policy = fields.get("policy")
    if policy is None:
        return None, None
    algorithm = fields.get("x-amz-algorithm", "")
    if algorithm != sigv4.ALGORITHM:
        raise S3Error(
            "InvalidRequest", "POST policies must be signed with AWS4-HMAC-SHA256 (x-amz-algorithm)"
        )
    credential = fields.get("x-amz-credential", "")
    parts = credential.split("/")
    if len(parts) != 5 or parts[3] != "s3" or parts[4] != "aws4_request":
        raise S3Error(
            "InvalidArgument",
            "the x-amz-credential field is malformed",
            ArgumentName="x-amz-credential",
        )
    access_key, date, region = parts[0], parts[1], parts[2]
    secret = ctx.users.secret_for(access_key)
    user = ctx.users.by_access_key(access_key)
    if secret is None or user is None:
        raise S3Error(
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        )
    key = sigv4.signing_key(secret, date, region)
    expected = hmac.new(key, policy.encode(), sha256).hexdigest()
    if not hmac.compare_digest(expected, fields.get("x-amz-signature", "").strip().lower()):
        raise S3Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    try:
        document = json.loads(base64.b64decode(policy, validate=True))
        expiration = datetime.fromisoformat(document["expiration"].replace("Z", "+00:00"))
        conditions = list(document["conditions"])
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise S3Error("InvalidPolicyDocument", f"Invalid Policy: {exc}") from exc
    if expiration.tzinfo is None or expiration < datetime.now(UTC):
        raise S3Error("AccessDenied", "Invalid according to Policy: Policy expired.")
    return user, conditions


def _check_conditions(
    conditions: list[Any], fields: dict[str, str], bucket: str
) -> tuple[int, int | None]:
    """Every condition holds and every field is covered; returns the length range."""
    values = {**fields, "bucket": bucket}
    covered = {"bucket"}
    low, high = 0, None
    for condition in conditions:
        if isinstance(condition, dict):
            if len(condition) != 1:
                raise S3Error(
                    "InvalidPolicyDocument", "Invalid Policy: a condition object holds one field"
                )
            ((name, wanted),) = condition.items()
            operation, name, wanted = "eq", "$" + str(name), wanted
        elif isinstance(condition, list) and len(condition) == 3:
            operation, name, wanted = str(condition[0]).lower(), condition[1], condition[2]
        else:
            raise S3Error("InvalidPolicyDocument", "Invalid Policy: a condition is malformed")
        if operation == "content-length-range":
            low, high = int(name), int(wanted)
            continue
        field = str(name).lower().removeprefix("$")
        covered.add(field)
        actual = values.get(field, "")
        if operation == "eq" and actual != str(wanted):
            raise S3Error(
                "AccessDenied",
                f"Invalid according to Policy: Policy Condition failed: {escape(str(condition))}",
            )
        if operation == "starts-with" and not actual.startswith(str(wanted)):
            raise S3Error(
                "AccessDenied",
                f"Invalid according to Policy: Policy Condition failed: {escape(str(condition))}",
            )
        if operation not in ("eq", "starts-with"):
            raise S3Error(
                "InvalidPolicyDocument", f"Invalid Policy: unknown operation {operation!r}"
            )
    for name in fields:
        if name in covered or name in _IGNORED_IN_POLICY or name.startswith("x-ignore-"):
            continue
        if name.startswith("x-amz-") and name in (
            "x-amz-credential",
            "x-amz-algorithm",
            "x-amz-date",
            "x-amz-security-token",
        ):
            continue
        raise S3Error("AccessDenied", f"Invalid according to Policy: Extra input fields: {name}")
    return low, high


def _success(fields: dict[str, str], bucket: str, key: str, etag: str) -> Response:
    headers = {"ETag": f'"{etag}"', "Location": f"/{bucket}/{key}"}
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    if redirect:
        separator = "&" if "?" in redirect else "?"
        query = urlencode({"bucket": bucket, "key": key, "etag": f'"{etag}"'})
        target = f"{redirect}{separator}{query}"
        return Response(b"", status=303, headers={**headers, "Location": target})
    status = fields.get("success_action_status", "204")
    if status == "201":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><PostResponse>'
            f"<Location>/{escape(bucket)}/{escape(key)}</Location><Bucket>{escape(bucket)}</Bucket>"
            f'<Key>{escape(key)}</Key><ETag>"{etag}"</ETag></PostResponse>'
        ).encode()
        return Response(body, status=201, headers=headers, content_type="application/xml")
    return Response(b"", status=200 if status == "200" else 204, headers=headers)
