"""objfs.s3.chunked — decoding of aws-chunked request bodies (SigV4 streaming uploads).

Owns the chunk framing, the chunk signature chain that starts at the request's
seed signature, and the trailers (with their signature when signed). Pure
protocol: it reads an async iterator of body bytes and yields payload bytes; it
never touches the store, the web framework or a clock. Memory is bounded by one
chunk (signed modes hold a chunk until its signature is checked).

Grammar (every line ends in CRLF; `sig` is 64 lowercase hex digits):
    body    = *chunk final trailer* CRLF
    chunk   = hex-size [";chunk-signature=" sig] CRLF data CRLF
    final   = "0" [";chunk-signature=" sig] CRLF
    trailer = name ":" value CRLF        (x-amz-trailer-signature:sig is the last one)
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import AsyncIterator
from typing import final

import trio

from objfs.s3.errors import S3Error
from objfs.s3.sigv4 import (
    EMPTY_SHA256_HEX,
    STREAMING_PAYLOADS,
    STREAMING_SIGNED_PAYLOAD,
    STREAMING_SIGNED_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_PAYLOAD_TRAILER,
    Identity,
    canonical_header_value,
)

MODES = STREAMING_PAYLOADS
# botocore sends 1 MiB chunks and the AWS examples 64 KiB; a signed chunk is held whole.
CHUNK_SIZE_BYTES_MAX = 16 * 1024 * 1024
LINE_SIZE_BYTES_MAX = 4096  # a chunk header or a trailer line; real ones are under 200 bytes
TRAILER_COUNT_MAX = 64
TRAILER_SIGNATURE = "x-amz-trailer-signature"

_SIGNED_HEADER = re.compile(rb"([0-9a-fA-F]{1,16});chunk-signature=([0-9a-f]{64})")
_UNSIGNED_HEADER = re.compile(rb"([0-9a-fA-F]{1,16})(?:;.*)?", re.DOTALL)
_TRAILER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


_HASH_OFF_LOOP_BYTES = 128 * 1024


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@final
class AwsChunkedDecoder:
    """Async iterator of the payload bytes of an aws-chunked body.

    Iterate it to the end: the last chunk's framing, the trailers and their
    signature are checked only then, and `trailers` is set only then. Any error
    is raised again by later iterations, so a body that failed never looks
    complete. In the signed modes a chunk is yielded only once its signature is
    checked; in the unsigned mode bytes are yielded as they arrive. Iterating
    checkpoints only as often as the source does.
    """

    def __init__(
        self,
        source: AsyncIterator[bytes],
        *,
        identity: Identity | None,
        mode: str,
        decoded_length: int | None = None,
        chunk_size_bytes_max: int = CHUNK_SIZE_BYTES_MAX,
    ) -> None:
        """Args:
          source: the raw body, in reads of any size (each `bytes`).
          identity: the verified signer; required by the signed modes.
          mode: the request's x-amz-content-sha256 value (one of MODES).
          decoded_length: x-amz-decoded-content-length, if the client sent it.
          chunk_size_bytes_max: the largest chunk accepted.

        Raises:
          S3Error: NotImplemented for a mode not in MODES; InvalidRequest for a
            signed mode without an identity whose payload hash is that mode.
        """
        if mode not in MODES:
            raise S3Error("NotImplemented", f"x-amz-content-sha256 {mode!r} is not implemented")
        signed = mode != STREAMING_UNSIGNED_PAYLOAD_TRAILER
        if signed and (identity is None or identity.payload_hash != mode):
            raise S3Error(
                "InvalidRequest",
                f"x-amz-content-sha256 {mode} needs a request signed in the Authorization header",
            )
        self._reader = _Reader(source)
        self._identity = identity if signed else None
        self._mode = mode
        self._decoded_length = decoded_length
        self._chunk_size_bytes_max = chunk_size_bytes_max
        self._previous_signature = identity.signature if identity is not None else ""
        self._chunk_left_bytes = 0
        self._chunk_signature = ""
        self._decoded_size_bytes = 0
        self._finished = False
        self._error: S3Error | None = None
        self.trailers: dict[str, str] = {}

    @property
    def decoded_size_bytes(self) -> int:
        """How many payload bytes were yielded so far."""
        return self._decoded_size_bytes

    def __aiter__(self) -> AwsChunkedDecoder:
        return self

    async def __anext__(self) -> bytes:
        """The next payload bytes (never empty).

        Raises:
          S3Error: IncompleteBody (bad framing, an early end, a length that is
            not decoded_length), SignatureDoesNotMatch (a chunk or the
            trailer), InvalidRequest (a chunk over chunk_size_bytes_max).
        """
        if self._error is not None:
            raise self._error
        try:
            while not self._finished:
                if self._chunk_left_bytes == 0:
                    await self._begin_chunk()
                elif self._identity is None:
                    return await self._next_unsigned_bytes()
                else:
                    return await self._next_signed_chunk(self._identity)
        except S3Error as error:
            self._error = error
            raise
        raise StopAsyncIteration

    async def _begin_chunk(self) -> None:
        """Read a chunk header; the final (empty) chunk also ends the body."""
        line = await self._reader.read_line()
        pattern = _UNSIGNED_HEADER if self._identity is None else _SIGNED_HEADER
        match = pattern.fullmatch(line)
        if match is None:
            raise _malformed(f"bad chunk header {line[:80]!r}")
        size_bytes = int(match[1], 16)
        if self._identity is not None:
            self._chunk_signature = match[2].decode("ascii")
        if size_bytes > self._chunk_size_bytes_max:
            raise S3Error(
                "InvalidRequest",
                f"A chunk of {size_bytes} bytes is over the limit of "
                f"{self._chunk_size_bytes_max} bytes",
            )
        expected = self._decoded_length
        if expected is not None and self._decoded_size_bytes + size_bytes > expected:
            raise _incomplete(f"the chunks hold more than the decoded length {expected}")
        if size_bytes == 0:
            await self._finish()
        self._chunk_left_bytes = size_bytes

    async def _next_unsigned_bytes(self) -> bytes:
        """The next received bytes of the current chunk, as they arrive."""
        view = await self._reader.read_some(self._chunk_left_bytes)
        self._chunk_left_bytes -= len(view)
        if self._chunk_left_bytes == 0:
            await self._reader.expect_crlf()
        self._decoded_size_bytes += len(view)
        return bytes(view)

    async def _next_signed_chunk(self, identity: Identity) -> bytes:
        """The whole current chunk, once its signature is checked."""
        views: list[memoryview] = []
        while self._chunk_left_bytes:
            view = await self._reader.read_some(self._chunk_left_bytes)
            views.append(view)
            self._chunk_left_bytes -= len(view)
        await self._reader.expect_crlf()
        data = b"".join(views)
        if len(data) >= _HASH_OFF_LOOP_BYTES:  # ~0.7 ms per MiB: not on the event loop
            chunk_sha256 = await trio.to_thread.run_sync(_sha256_hex, data)
        else:
            chunk_sha256 = _sha256_hex(data)
        self._check_chunk_signature(identity, chunk_sha256)
        self._decoded_size_bytes += len(data)
        return data

    async def _finish(self) -> None:
        """After the final chunk: trailers, their signature, the end of the body, the length."""
        identity = self._identity
        if identity is not None:
            self._check_chunk_signature(identity, EMPTY_SHA256_HEX)
        lines = await self._read_trailer_lines()
        if lines and self._mode == STREAMING_SIGNED_PAYLOAD:
            raise _malformed("trailers after the final chunk, but x-amz-content-sha256 has none")
        trailers, signature = _parse_trailers(lines)
        if self._mode == STREAMING_SIGNED_PAYLOAD_TRAILER:
            assert identity is not None  # signed modes have one (checked in __init__)
            if signature is None:
                raise _malformed(f"no {TRAILER_SIGNATURE} after the trailers")
            self._check_trailer_signature(identity, trailers, signature)
        if not await self._reader.at_end():
            raise _malformed("data after the end of the aws-chunked body")
        expected = self._decoded_length
        if expected is not None and self._decoded_size_bytes != expected:
            raise _incomplete(f"the chunks hold less than the decoded length {expected}")
        self.trailers = trailers
        self._finished = True

    async def _read_trailer_lines(self) -> list[bytes]:
        """The lines after the final chunk header, up to the empty line that ends the body."""
        lines: list[bytes] = []
        while line := await self._reader.read_line():
            if len(lines) == TRAILER_COUNT_MAX:
                raise _malformed(f"more than {TRAILER_COUNT_MAX} trailers")
            lines.append(line)
        return lines

    def _check_chunk_signature(self, identity: Identity, chunk_sha256_hex: str) -> None:
        """Check the current chunk's signature; it becomes the previous signature."""
        to_sign = "\n".join(
            (
                "AWS4-HMAC-SHA256-PAYLOAD",
                identity.amz_date,
                identity.scope,
                self._previous_signature,
                EMPTY_SHA256_HEX,
                chunk_sha256_hex,
            )
        )
        _check_signature(identity, to_sign, self._chunk_signature)
        self._previous_signature = self._chunk_signature

    def _check_trailer_signature(
        self, identity: Identity, trailers: dict[str, str], signature: str
    ) -> None:
        """The trailer signature chains from the final chunk's, over the sorted trailers."""
        canonical = "".join(f"{name}:{trailers[name]}\n" for name in sorted(trailers))
        to_sign = "\n".join(
            (
                "AWS4-HMAC-SHA256-TRAILER",
                identity.amz_date,
                identity.scope,
                self._previous_signature,
                hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
            )
        )
        _check_signature(identity, to_sign, signature)


@final
class _Reader:
    """Buffered reads over an async iterator of bytes: lines, and views of at most n bytes.

    `read_some` returns a view into the received bytes without copying them;
    only lines (small) are assembled into a new buffer.
    """

    def __init__(self, source: AsyncIterator[bytes]) -> None:
        self._source = source
        self._data = b""
        self._view = memoryview(self._data)
        self._offset = 0

    async def _fill(self) -> bool:
        """Make unread bytes available; False at the end of the source."""
        while self._offset == len(self._data):
            try:
                received = await anext(self._source)
            except StopAsyncIteration:
                return False
            # A view must outlive later receives, so mutable buffers are copied once.
            self._data = received if isinstance(received, bytes) else bytes(received)
            self._view = memoryview(self._data)
            self._offset = 0
        return True

    async def read_some(self, size_bytes_max: int) -> memoryview:
        """1 to size_bytes_max bytes; raises IncompleteBody at the end of the source."""
        if not await self._fill():
            raise _incomplete("the body ended inside a chunk")
        start = self._offset
        self._offset = min(len(self._data), start + size_bytes_max)
        return self._view[start : self._offset]

    async def read_line(self) -> bytes:
        """The next line without its CRLF; raises IncompleteBody at the end of the source."""
        line = bytearray()
        line_size_bytes_max = LINE_SIZE_BYTES_MAX + 2  # with its CRLF
        while len(line) < line_size_bytes_max:
            if not await self._fill():
                raise _incomplete("the body ended inside a chunk header or a trailer")
            # Look no further than the line may reach, so a body without LF costs no memory.
            window_end = min(len(self._data), self._offset + line_size_bytes_max - len(line))
            newline = self._data.find(b"\n", self._offset, window_end)
            end = window_end if newline < 0 else newline + 1
            line += self._view[self._offset : end]
            self._offset = end
            if newline >= 0:
                if not line.endswith(b"\r\n"):
                    raise _malformed("a line ends in LF without CR")
                return bytes(line[:-2])
        raise _malformed(f"a line longer than {LINE_SIZE_BYTES_MAX} bytes")

    async def expect_crlf(self) -> None:
        """The CRLF after chunk data."""
        received = b""
        while len(received) < 2:
            received += await self.read_some(2 - len(received))
        if received != b"\r\n":
            raise _malformed("chunk data is longer than its size or lacks its CRLF")

    async def at_end(self) -> bool:
        """Whether the source has no more bytes (reads it to find out)."""
        return not await self._fill()


def _parse_trailers(lines: list[bytes]) -> tuple[dict[str, str], str | None]:
    """Trailers by lowercase name (values canonical), and the trailer signature if any."""
    trailers: dict[str, str] = {}
    signature: str | None = None
    for raw in lines:
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            raise _malformed("a trailer that is not ASCII") from None
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not _TRAILER_NAME.fullmatch(name):
            raise _malformed(f"bad trailer line {line[:80]!r}")
        if name == TRAILER_SIGNATURE:
            signature = value.strip()
        elif name in trailers:
            raise _malformed(f"trailer {name} given twice")
        else:
            trailers[name] = canonical_header_value(value)
    return trailers, signature


def _check_signature(identity: Identity, to_sign: str, provided: str) -> None:
    expected = hmac.new(identity.signing_key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    if not (_SIGNATURE.fullmatch(provided) and hmac.compare_digest(expected, provided)):
        raise S3Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            AWSAccessKeyId=identity.access_key,
            StringToSign=to_sign,
            SignatureProvided=provided,
        )


def _incomplete(detail: str) -> S3Error:
    return S3Error("IncompleteBody", f"The request body terminated unexpectedly: {detail}")


def _malformed(detail: str) -> S3Error:
    return S3Error("IncompleteBody", f"The aws-chunked body is malformed: {detail}")
