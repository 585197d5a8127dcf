"""objfs.s3.body — request bodies: small XML documents, and object bodies streamed to a writer.

An object body arrives plain or aws-chunked (signed chunks, or unsigned with a
trailer), is checked against every digest the client sent — the signed payload
hash, Content-MD5 (the writer checks that one before its commit), and
`x-amz-checksum-*` from a header or a trailer — and is handed to the store's
writer chunk by chunk, so no body is ever held whole. Hashing a large chunk runs
in a worker thread, off the event loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import trio
from quart import request

from objfs.s3 import sigv4
from objfs.s3.app import S3Request
from objfs.s3.checksums import Checksum, requested_checksums
from objfs.s3.chunked import AwsChunkedDecoder
from objfs.s3.errors import S3Error, is_number

SMALL_BODY_LIMIT_BYTES = 1024 * 1024  # XML documents (DeleteObjects: 1000 keys fit)
_HASH_OFF_LOOP_BYTES = 128 * 1024
_UNSIGNED = "UNSIGNED-PAYLOAD"


@dataclass
class Received:
    """What an object body turned out to be, once it has all passed."""

    size_bytes: int = 0
    content_md5_hex: str | None = None  # for the writer to check before it commits
    checksums: dict[str, str] = field(default_factory=dict)  # algorithm -> base64, verified


async def read_small_body(s3: S3Request, *, need_md5: bool = False) -> bytes:
    """A request body of at most 1 MiB (XML), checked against Content-MD5 if sent.

    Raises:
        S3Error: MaxMessageLengthExceeded, InvalidDigest, BadDigest, or
            InvalidRequest when `need_md5` and no Content-MD5 or checksum was sent.
    """
    parts = []
    total = 0
    async for chunk in _payload(s3):
        total += len(chunk)
        if total > SMALL_BODY_LIMIT_BYTES:
            raise S3Error("MaxMessageLengthExceeded", "Your request was too big.")
        parts.append(chunk)
    body = b"".join(parts)
    if s3.identity is not None and _is_hex_sha256(s3.identity.payload_hash):
        sigv4.verify_payload_hash(s3.identity, hashlib.sha256(body).hexdigest())
    expected = _content_md5(s3)
    if expected is not None and hashlib.md5(body).hexdigest() != expected:
        raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.")
    if need_md5 and expected is None and not requested_checksums(s3.headers):
        raise S3Error("InvalidRequest", "Missing required header for this request: Content-MD5")
    return body


async def stream_object_body(
    s3: S3Request, write: Callable[[bytes], Awaitable[None]], *, compute: str | None = None
) -> Received:
    """Pass an object body to `write` chunk by chunk, verifying every digest sent;
    `compute` names a checksum algorithm to compute when none of it is sent (a part
    of an upload that has one).

    Raises:
        S3Error: MissingContentLength, IncompleteBody, XAmzContentSHA256Mismatch,
            BadDigest, InvalidDigest, SignatureDoesNotMatch (a chunk's signature).
    """
    headers = s3.headers
    mode = headers.get("x-amz-content-sha256", _UNSIGNED)
    chunked = mode.startswith("STREAMING-") or "aws-chunked" in headers.get("content-encoding", "")
    if (
        "content-length" not in headers
        and not chunked
        and (headers.get("transfer-encoding", "").lower() != "chunked")
    ):
        raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.")
    received = Received(content_md5_hex=_content_md5(s3))
    expected = requested_checksums(headers)  # algorithm -> base64 ('' if from a trailer)
    checksums = {algorithm: Checksum(algorithm) for algorithm in expected}
    if compute is not None and compute not in checksums:
        checksums[compute] = Checksum(compute)
    payload_sha256 = hashlib.sha256() if _is_hex_sha256(mode) else None
    hashers: list[Callable[[bytes], object]] = [c.update for c in checksums.values()]
    if payload_sha256 is not None:
        hashers.append(payload_sha256.update)
    source = _payload(s3)
    decoder: AwsChunkedDecoder | None = None
    if chunked:
        decoder = AwsChunkedDecoder(
            source,
            identity=s3.identity,
            mode=mode,
            decoded_length=_int_header(headers, "x-amz-decoded-content-length"),
        )
        source = decoder.__aiter__()
    async for chunk in source:
        if hashers:
            await hash_chunk(hashers, chunk)
        received.size_bytes += len(chunk)
        await write(chunk)
    declared = _int_header(headers, "content-length")
    if not chunked and declared is not None and received.size_bytes != declared:
        raise S3Error(
            "IncompleteBody",
            "You did not provide the number of bytes specified by the Content-Length HTTP header.",
        )
    if payload_sha256 is not None and payload_sha256.hexdigest() != mode.lower():
        raise S3Error(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ClientComputedContentSHA256=mode,
            S3ComputedContentSHA256=payload_sha256.hexdigest(),
        )
    trailers = decoder.trailers if decoder is not None else {}
    for algorithm, checksum in checksums.items():
        got = checksum.base64()
        if algorithm not in expected:  # computed, not sent
            received.checksums[algorithm] = got
            continue
        wanted = expected[algorithm] or trailers.get(f"x-amz-checksum-{algorithm}", "")
        if not wanted:
            raise S3Error(
                "InvalidRequest",
                f"The x-amz-checksum-{algorithm} trailer was declared but not sent.",
            )
        if wanted != got:
            raise S3Error(
                "BadDigest",
                f"The {algorithm.upper()} you specified did not match the calculated checksum.",
            )
        received.checksums[algorithm] = got
    return received


async def hash_chunk(hashers: list[Callable[[bytes], object]], chunk: bytes) -> None:
    """Feed `chunk` to every hasher: in a worker thread when it is large enough
    that hashing would hold the event loop (hashlib and the CRCs let go of the GIL)."""
    if len(chunk) >= _HASH_OFF_LOOP_BYTES:
        await trio.to_thread.run_sync(_update_all, hashers, chunk)
    else:
        _update_all(hashers, chunk)


def _update_all(hashers: list[Callable[[bytes], object]], chunk: bytes) -> None:
    for update in hashers:
        update(chunk)


async def _payload(s3: S3Request) -> AsyncIterator[bytes]:
    async for chunk in request.body:
        if chunk:
            yield chunk


def _content_md5(s3: S3Request) -> str | None:
    value = s3.headers.get("content-md5")
    if value is None:
        return None
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 16:
        raise S3Error("InvalidDigest", "The Content-MD5 you specified is not valid.")
    return digest.hex()


def _is_hex_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value)


def _int_header(headers: object, name: str) -> int | None:
    assert isinstance(headers, dict)
    value = headers.get(name)
    if value is None:
        return None
    if not is_number(value):
        raise S3Error("InvalidArgument", f"{name} must be a whole number", ArgumentName=name)
    return int(value)
