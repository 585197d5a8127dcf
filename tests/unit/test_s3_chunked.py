"""aws-chunked bodies decode to their payload, in any split, and every defect is refused.

Method: bodies come from AWS's published streaming example (its literal chunk
signatures), from awscrt's published trailer vector, from botocore's own
aws-chunked writer (the unsigned trailer mode boto3 sends over HTTPS), and from
an encoder written here from the AWS spec, which is first checked against the
published signatures. Small bodies are fed split at every byte and cut at every
byte; single-field damage must raise the right S3 error.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import itertools
import random
import time
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.httpchecksum import (
    AwsChunkedWrapper,
    CrtCrc32cChecksum,
    CrtCrc32Checksum,
    CrtCrc64NvmeChecksum,
    Sha1Checksum,
    Sha256Checksum,
)

from objfs.s3.checksums import Checksum, trailer_checksum, verify_checksum
from objfs.s3.chunked import AwsChunkedDecoder
from objfs.s3.errors import S3Error
from objfs.s3.sigv4 import (
    STREAMING_SIGNED_PAYLOAD,
    STREAMING_SIGNED_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_PAYLOAD_TRAILER,
    UNSIGNED_PAYLOAD,
    HttpRequest,
    Identity,
    signing_key,
    verify,
)

SIGNED = STREAMING_SIGNED_PAYLOAD
SIGNED_TRAILER = STREAMING_SIGNED_PAYLOAD_TRAILER
UNSIGNED_TRAILER = STREAMING_UNSIGNED_PAYLOAD_TRAILER
MODES = [SIGNED, SIGNED_TRAILER, UNSIGNED_TRAILER]
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

ACCESS_KEY = "AKIDOBJFSTEST0001"
SECRET = "objfs/Secret+Key=0123456789abcdefghijklmn"

# AWS's published example: "Signature Calculations for the Authorization Header:
# Transferring Payload in Multiple Chunks" - 66560 bytes of "a" in 65536 + 1024 + 0.
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
AWS_CHUNK_SIGNATURES = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
]
# awscrt's chunk signer test (aws-crt-swift ChunkSignerTests): the same chunks, then the
# trailers first:1st, second:2nd, third:3rd signed after the final chunk.
CRT_TRAILER_SIGNATURE = "df5735bd9f3295cd9386572292562fefc93ba94e80a0a1ddcbd652c4e0a75e6c"


def aws_identity(mode: str = SIGNED) -> Identity:
    return Identity(
        access_key="AKIAIOSFODNN7EXAMPLE",
        payload_hash=mode,
        signature=AWS_SEED,
        signing_key=signing_key(AWS_SECRET, "20130524", "us-east-1"),
        scope="20130524/us-east-1/s3/aws4_request",
        amz_date="20130524T000000Z",
    )


class _FixedPayloadAuth(S3SigV4Auth):  # type: ignore[misc]
    """botocore's signer with a given x-amz-content-sha256 (a STREAMING-* value)."""

    def __init__(self, payload: str) -> None:
        super().__init__(Credentials(ACCESS_KEY, SECRET), "s3", "eu-west-1")
        self._payload = payload

    def payload(self, request: Any) -> str:
        return self._payload


def seed_identity(mode: str) -> Identity:
    """The identity of a PUT signed by botocore for `mode`, as verify() returns it."""
    request = AWSRequest(
        method="PUT",
        url="http://objfs.test:9000/bucket/key",
        headers={"Content-Encoding": "aws-chunked", "X-Amz-Decoded-Content-Length": "17"},
    )
    _FixedPayloadAuth(mode).add_auth(request)
    headers = {name.lower(): value for name, value in request.headers.items()}
    headers["host"] = "objfs.test:9000"
    stamp = datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    identity = verify(
        HttpRequest("PUT", "/bucket/key", "", headers), {ACCESS_KEY: SECRET}.get, now=stamp
    )
    assert identity is not None and identity.payload_hash == mode
    return identity


# --- an encoder written from the AWS spec --------------------------------------------------


def _hmac_hex(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def encode(
    payload: bytes,
    chunk_size: int,
    *,
    mode: str,
    identity: Identity | None = None,
    trailers: dict[str, str] | None = None,
) -> bytes:
    """An aws-chunked body, as the AWS docs describe it, for any of the three modes."""
    chunks = [payload[i : i + chunk_size] for i in range(0, len(payload), chunk_size)] + [b""]
    body = bytearray()
    previous = identity.signature if identity else ""
    for chunk in chunks:
        if mode == UNSIGNED_TRAILER:
            body += f"{len(chunk):x}\r\n".encode()
        else:
            assert identity is not None
            string_to_sign = "\n".join(
                [
                    "AWS4-HMAC-SHA256-PAYLOAD",
                    identity.amz_date,
                    identity.scope,
                    previous,
                    EMPTY_SHA256,
                    hashlib.sha256(chunk).hexdigest(),
                ]
            )
            previous = _hmac_hex(identity.signing_key, string_to_sign)
            body += f"{len(chunk):x};chunk-signature={previous}\r\n".encode()
        if chunk:
            body += chunk + b"\r\n"
    for name, value in (trailers or {}).items():
        body += f"{name}:{value}\r\n".encode()
    if mode == SIGNED_TRAILER:
        assert identity is not None
        canonical = "".join(f"{name}:{value}\n" for name, value in sorted((trailers or {}).items()))
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-TRAILER",
                identity.amz_date,
                identity.scope,
                previous,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        signature = _hmac_hex(identity.signing_key, string_to_sign)
        body += f"x-amz-trailer-signature:{signature}\r\n".encode()
    body += b"\r\n"
    return bytes(body)


async def _source(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def decode(parts: Iterable[bytes], **options: Any) -> tuple[bytes, dict[str, str]]:
    decoder = AwsChunkedDecoder(_source(parts), **options)
    received = bytearray()
    async for data in decoder:
        assert data, "the decoder yields no empty bytes"
        received += data
    assert decoder.decoded_size_bytes == len(received)
    return bytes(received), decoder.trailers


async def refused(parts: Iterable[bytes], code: str, **options: Any) -> S3Error:
    with pytest.raises(S3Error) as raised:
        await decode(parts, **options)
    assert raised.value.code == code, (raised.value.code, raised.value.message)
    return raised.value


def splits(body: bytes, cuts: Iterable[int]) -> list[bytes]:
    edges = [0, *sorted(cuts), len(body)]
    return [body[start:end] for start, end in itertools.pairwise(edges)]


PAYLOAD = bytes(range(256)) * 3 + b"tail"  # 772 bytes


def small_case(mode: str) -> tuple[bytes, dict[str, Any], dict[str, str]]:
    """(body, decoder options, trailers) of PAYLOAD in 300-byte chunks."""
    identity = seed_identity(mode) if mode != UNSIGNED_TRAILER else None
    trailers = {} if mode == SIGNED else {"x-amz-checksum-crc32c": _b64("crc32c", PAYLOAD)}
    body = encode(PAYLOAD, 300, mode=mode, identity=identity, trailers=trailers)
    return body, {"identity": identity, "mode": mode}, trailers


def _b64(algorithm: str, data: bytes) -> str:
    checksum = Checksum(algorithm)
    checksum.update(data)
    return checksum.base64()


# --- published vectors ---------------------------------------------------------------------


def aws_example_body(final: bytes = b"\r\n") -> bytes:
    sizes = [65536, 1024, 0]
    body = b""
    for size, signature in zip(sizes, AWS_CHUNK_SIGNATURES, strict=True):
        body += f"{size:x};chunk-signature={signature}\r\n".encode()
        if size:
            body += b"a" * size + b"\r\n"
    return body + final


async def test_aws_example_body_decodes_with_its_published_signatures() -> None:
    body = aws_example_body()
    payload, trailers = await decode([body], identity=aws_identity(), mode=SIGNED)
    assert payload == b"a" * 66560
    assert trailers == {}
    assert len(body) == 66824  # the example's Content-Length


def test_the_spec_encoder_reproduces_the_published_signatures() -> None:
    assert encode(b"a" * 66560, 65536, mode=SIGNED, identity=aws_identity()) == aws_example_body()


async def test_crt_trailer_vector_verifies() -> None:
    trailer_lines = b"first:1st\r\nsecond:2nd\r\nthird:3rd\r\n"
    signature_line = f"x-amz-trailer-signature:{CRT_TRAILER_SIGNATURE}\r\n".encode()
    body = aws_example_body(final=trailer_lines + signature_line + b"\r\n")
    identity = aws_identity(SIGNED_TRAILER)
    payload, trailers = await decode([body], identity=identity, mode=SIGNED_TRAILER)
    assert payload == b"a" * 66560
    assert trailers == {"first": "1st", "second": "2nd", "third": "3rd"}
    trailers_sent = {"first": "1st", "second": "2nd", "third": "3rd"}
    encoded = encode(
        b"a" * 66560, 65536, mode=SIGNED_TRAILER, identity=identity, trailers=trailers_sent
    )
    assert encoded == body


async def test_crt_trailer_vector_with_a_changed_trailer_is_refused() -> None:
    lines = b"first:1st\r\nsecond:2nd\r\nthird:4th\r\n"
    signature_line = f"x-amz-trailer-signature:{CRT_TRAILER_SIGNATURE}\r\n".encode()
    body = aws_example_body(final=lines + signature_line + b"\r\n")
    error = await refused(
        [body], "SignatureDoesNotMatch", identity=aws_identity(SIGNED_TRAILER), mode=SIGNED_TRAILER
    )
    assert error.extra["StringToSign"].startswith("AWS4-HMAC-SHA256-TRAILER\n")


# --- any split, any cut ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_every_two_way_split_of_a_small_body_decodes(mode: str) -> None:
    body, options, trailers = small_case(mode)
    for cut in range(len(body) + 1):
        assert await decode(splits(body, [cut]), **options) == (PAYLOAD, trailers), cut


@pytest.mark.parametrize("mode", MODES)
async def test_a_body_fed_one_byte_at_a_time_decodes(mode: str) -> None:
    body, options, trailers = small_case(mode)
    parts = [body[i : i + 1] for i in range(len(body))]
    assert await decode(parts, **options) == (PAYLOAD, trailers)


@pytest.mark.parametrize("mode", MODES)
async def test_random_splits_with_empty_parts_decode(mode: str) -> None:
    body, options, trailers = small_case(mode)
    rng = random.Random(20260101)
    for _ in range(200):
        cuts = [rng.randrange(len(body) + 1) for _ in range(rng.randrange(1, 12))]
        assert await decode(splits(body, cuts), **options) == (PAYLOAD, trailers)


@pytest.mark.parametrize("mode", MODES)
async def test_every_truncation_is_an_incomplete_body(mode: str) -> None:
    body, options, _ = small_case(mode)
    for length in range(len(body)):
        error = await refused([body[:length]], "IncompleteBody", **options)
        assert error.status == 400


@pytest.mark.parametrize("mode", MODES)
async def test_data_after_the_end_is_refused(mode: str) -> None:
    body, options, _ = small_case(mode)
    await refused([body, b"x"], "IncompleteBody", **options)
    await refused([body + b"\r\n"], "IncompleteBody", **options)


@pytest.mark.parametrize("mode", MODES)
async def test_an_empty_object_decodes(mode: str) -> None:
    identity = seed_identity(mode) if mode != UNSIGNED_TRAILER else None
    trailers = {} if mode == SIGNED else {"x-amz-checksum-crc32": "AAAAAA=="}
    body = encode(b"", 100, mode=mode, identity=identity, trailers=trailers)
    assert await decode([body], identity=identity, mode=mode, decoded_length=0) == (b"", trailers)


# --- signatures ------------------------------------------------------------------------------


def _flip_signature(body: bytes, occurrence: int, marker: bytes = b"chunk-signature=") -> bytes:
    at = -1
    for _ in range(occurrence + 1):
        at = body.index(marker, at + 1)
    at += len(marker)
    flipped = b"1" if body[at : at + 1] == b"0" else b"0"
    return body[:at] + flipped + body[at + 1 :]


@pytest.mark.parametrize("mode", [SIGNED, SIGNED_TRAILER])
@pytest.mark.parametrize("occurrence", [0, 1, 3])  # the first, a middle, the final chunk
async def test_a_bad_chunk_signature_is_refused(mode: str, occurrence: int) -> None:
    body, options, _ = small_case(mode)
    error = await refused([_flip_signature(body, occurrence)], "SignatureDoesNotMatch", **options)
    assert error.status == 403
    assert error.extra["StringToSign"].startswith("AWS4-HMAC-SHA256-PAYLOAD\n")


async def test_a_bad_chunk_is_not_yielded() -> None:
    body, options, _ = small_case(SIGNED)
    decoder = AwsChunkedDecoder(_source([_flip_signature(body, 1)]), **options)
    assert await anext(decoder) == PAYLOAD[:300]
    with pytest.raises(S3Error, match="signature"):
        await anext(decoder)


@pytest.mark.parametrize("mode", [SIGNED, SIGNED_TRAILER])
async def test_changed_chunk_data_is_refused(mode: str) -> None:
    body, options, _ = small_case(mode)
    at = body.index(PAYLOAD[400:410])
    changed = body[:at] + b"X" + body[at + 1 :]
    await refused([changed], "SignatureDoesNotMatch", **options)


async def test_chunks_signed_for_another_request_are_refused() -> None:
    body, _, _ = small_case(SIGNED)
    other = seed_identity(SIGNED)  # a new request: same key, its own seed signature
    other_seed = Identity(
        other.access_key, SIGNED, "f" * 64, other.signing_key, other.scope, other.amz_date
    )
    await refused([body], "SignatureDoesNotMatch", identity=other_seed, mode=SIGNED)


async def test_a_bad_trailer_signature_is_refused() -> None:
    body, options, _ = small_case(SIGNED_TRAILER)
    changed = _flip_signature(body, 0, marker=b"x-amz-trailer-signature:")
    await refused([changed], "SignatureDoesNotMatch", **options)


async def test_a_changed_signed_trailer_value_is_refused() -> None:
    body, options, trailers = small_case(SIGNED_TRAILER)
    value = trailers["x-amz-checksum-crc32c"].encode()
    changed = body.replace(value, b"AAAAAA==")
    await refused([changed], "SignatureDoesNotMatch", **options)


async def test_signed_trailers_sent_in_any_order_are_signed_sorted() -> None:
    identity = seed_identity(SIGNED_TRAILER)
    trailers = {"x-amz-meta-z": "last", "x-amz-checksum-crc32": _b64("crc32", PAYLOAD)}
    body = encode(PAYLOAD, 300, mode=SIGNED_TRAILER, identity=identity, trailers=trailers)
    assert body.index(b"x-amz-meta-z") < body.index(b"x-amz-checksum-crc32")
    assert await decode([body], identity=identity, mode=SIGNED_TRAILER) == (PAYLOAD, trailers)


async def test_a_signed_trailer_without_its_signature_is_refused() -> None:
    identity = seed_identity(SIGNED_TRAILER)
    body = encode(PAYLOAD, 300, mode=SIGNED, identity=identity, trailers={"x-amz-meta-a": "b"})
    await refused([body], "IncompleteBody", identity=identity, mode=SIGNED_TRAILER)


# --- trailers and real client bodies ---------------------------------------------------------


BOTOCORE_CHECKSUMS = {
    "crc32": CrtCrc32Checksum,
    "crc32c": CrtCrc32cChecksum,
    "crc64nvme": CrtCrc64NvmeChecksum,
    "sha1": Sha1Checksum,
    "sha256": Sha256Checksum,
}


@pytest.mark.parametrize("algorithm", sorted(BOTOCORE_CHECKSUMS))
@pytest.mark.parametrize("chunk_size", [1, 1000, 1024 * 1024])
async def test_botocore_unsigned_trailer_bodies_decode(algorithm: str, chunk_size: int) -> None:
    payload = random.Random(chunk_size).randbytes(5000)
    name = f"x-amz-checksum-{algorithm}"
    wrapper = AwsChunkedWrapper(
        io.BytesIO(payload),
        checksum_cls=BOTOCORE_CHECKSUMS[algorithm],
        checksum_name=name,
        chunk_size=chunk_size,
    )
    body = wrapper.read()
    received, trailers = await decode(
        [body[i : i + 4096] for i in range(0, len(body), 4096)],
        identity=None,
        mode=UNSIGNED_TRAILER,
        decoded_length=len(payload),
    )
    assert received == payload
    assert set(trailers) == {name}
    verify_checksum(algorithm, trailer_checksum(trailers, algorithm), _b64(algorithm, payload))


async def test_a_boto3_https_upload_decodes_after_its_signature_verifies() -> None:
    import boto3
    from botocore.config import Config

    class Sent(Exception):
        pass

    captured: list[Any] = []

    def stop(request: Any, **_: Any) -> None:
        captured.append(request)
        raise Sent

    client = boto3.client(
        "s3",
        endpoint_url="https://objfs.test:9443",
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
        config=Config(signature_version="s3v4", retries={"total_max_attempts": 1}),
    )
    client.meta.events.register("before-send.s3.*", stop)
    payload = random.Random(7).randbytes(3 * 1024 * 1024 + 11)
    with pytest.raises(Sent):
        client.put_object(Bucket="bucket", Key="k", Body=io.BytesIO(payload))
    request = captured[0]
    headers = {name.lower(): value.decode() for name, value in request.headers.items()}
    headers["host"] = "objfs.test:9443"
    stamp = datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    http = HttpRequest("PUT", "/bucket/k", "", headers)
    identity = verify(http, {ACCESS_KEY: SECRET}.get, now=stamp)
    assert identity is not None
    body = request.body.read()
    received, trailers = await decode(
        [body],
        identity=identity,
        mode=headers["x-amz-content-sha256"],
        decoded_length=int(headers["x-amz-decoded-content-length"]),
    )
    assert received == payload
    assert trailers == {"x-amz-checksum-crc32": _b64("crc32", payload)}


async def test_trailer_names_are_lowercased_and_values_trimmed() -> None:
    body = b"3\r\nabc\r\n0\r\nX-Amz-Checksum-CRC32:  NSRBwg== \r\nx-amz-meta-n:a  b\r\n\r\n"
    _, trailers = await decode([body], identity=None, mode=UNSIGNED_TRAILER)
    assert trailers == {"x-amz-checksum-crc32": "NSRBwg==", "x-amz-meta-n": "a b"}


async def test_trailers_are_set_only_at_the_end() -> None:
    body, options, trailers = small_case(UNSIGNED_TRAILER)
    decoder = AwsChunkedDecoder(_source([body]), **options)
    await anext(decoder)
    assert decoder.trailers == {}
    async for _ in decoder:
        pass
    assert decoder.trailers == trailers


# --- lengths and framing ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_decoded_length_must_match(mode: str) -> None:
    body, options, trailers = small_case(mode)
    assert await decode([body], decoded_length=len(PAYLOAD), **options) == (PAYLOAD, trailers)
    for wrong in [0, len(PAYLOAD) - 1, len(PAYLOAD) + 1]:
        await refused([body], "IncompleteBody", decoded_length=wrong, **options)


def _unsigned_cases() -> list[tuple[str, bytes]]:
    return [
        ("size not hex", b"zz\r\nabc\r\n0\r\n\r\n"),
        ("size with 0x", b"0x3\r\nabc\r\n0\r\n\r\n"),
        ("size with sign", b"+3\r\nabc\r\n0\r\n\r\n"),
        ("size with space", b" 3\r\nabc\r\n0\r\n\r\n"),
        ("empty size", b"\r\nabc\r\n0\r\n\r\n"),
        ("size of 17 digits", b"00000000000000003\r\nabc\r\n0\r\n\r\n"),
        ("LF without CR", b"3;xy\nabc\r\n0\r\n\r\n"),
        ("trailer ending in LF without CR", b"3\r\nabc\r\n0\r\na:bc\n\r\n"),
        ("data longer than its size", b"3\r\nabcd\r\n0\r\n\r\n"),
        ("data shorter than its size", b"4\r\nabc\r\n0\r\n\r\n"),
        ("no CRLF after data", b"3\r\nabc0\r\n\r\n"),
        ("no final chunk", b"3\r\nabc\r\n\r\n"),
        ("trailer without colon", b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32\r\n\r\n"),
        ("trailer with empty name", b"3\r\nabc\r\n0\r\n:v\r\n\r\n"),
        ("trailer name with space", b"3\r\nabc\r\n0\r\nx amz:v\r\n\r\n"),
        ("trailer not ASCII", "3\r\nabc\r\n0\r\nx-ü:v\r\n\r\n".encode()),
        ("repeated trailer", b"3\r\nabc\r\n0\r\na:1\r\na:2\r\n\r\n"),
        ("line too long", b"3" + b";x" * 3000 + b"\r\nabc\r\n0\r\n\r\n"),
        ("endless line", b"3" * 100_000),
        ("too many trailers", b"0\r\n" + b"".join(b"t%d:v\r\n" % i for i in range(65)) + b"\r\n"),
    ]


@pytest.mark.parametrize("body", [pytest.param(body, id=name) for name, body in _unsigned_cases()])
async def test_malformed_framing_is_an_incomplete_body(body: bytes) -> None:
    await refused([body], "IncompleteBody", identity=None, mode=UNSIGNED_TRAILER)


async def test_unsigned_chunk_extensions_are_ignored() -> None:
    body = b"3;ext=1\r\nabc\r\n0;chunk-signature=whatever\r\n\r\n"
    assert await decode([body], identity=None, mode=UNSIGNED_TRAILER) == (b"abc", {})


@pytest.mark.parametrize(
    "header",
    [
        b"12c",  # no signature
        b"12c;chunk-signature=",
        b"12c;chunk-signature=" + b"A" * 64,  # upper-case hex
        b"12c;chunk-signature=" + b"0" * 63,
        b"12c;chunk-signature=" + b"0" * 65,
        b"12c;signature=" + b"0" * 64,
    ],
)
async def test_malformed_signed_chunk_headers_are_refused(header: bytes) -> None:
    body, options, _ = small_case(SIGNED)
    changed = header + body[body.index(b"\r\n") :]
    await refused([changed], "IncompleteBody", **options)


async def test_trailers_in_the_signed_mode_without_trailers_are_refused() -> None:
    identity = seed_identity(SIGNED)
    body = encode(PAYLOAD, 300, mode=SIGNED, identity=identity, trailers={"a": "b"})
    await refused([body], "IncompleteBody", identity=identity, mode=SIGNED)


async def test_a_chunk_over_the_limit_is_refused_before_it_is_read() -> None:
    body = b"1000001\r\n"  # 16 MiB + 1, and nothing of it sent
    error = await refused([body], "InvalidRequest", identity=None, mode=UNSIGNED_TRAILER)
    assert "limit" in error.message
    small = b"11\r\n" + b"x" * 17 + b"\r\n0\r\n\r\n"
    options: dict[str, Any] = {"identity": None, "mode": UNSIGNED_TRAILER}
    await refused([small], "InvalidRequest", chunk_size_bytes_max=16, **options)


async def test_a_chunk_over_the_decoded_length_is_refused_before_it_is_read() -> None:
    error = await refused(
        [b"ffff\r\n"], "IncompleteBody", identity=None, mode=UNSIGNED_TRAILER, decoded_length=10
    )
    assert "decoded length" in error.message


async def test_a_body_that_failed_never_looks_complete() -> None:
    # After the error the rest would parse as one more empty body: it must not end cleanly.
    body = b"3\r\nabc\r\n0\r\n\r\n" + b"0\r\n\r\n"
    decoder = AwsChunkedDecoder(_source([body]), identity=None, mode=UNSIGNED_TRAILER)
    assert await anext(decoder) == b"abc"
    for _ in range(2):
        with pytest.raises(S3Error, match="data after the end"):
            await anext(decoder)


async def test_an_error_is_raised_again_on_later_iterations() -> None:
    decoder = AwsChunkedDecoder(
        _source([b"3\r\nabc\r\n0\r\n"]), identity=None, mode=UNSIGNED_TRAILER
    )
    assert await anext(decoder) == b"abc"
    for _ in range(2):
        with pytest.raises(S3Error, match="terminated unexpectedly"):
            await anext(decoder)


# --- construction ----------------------------------------------------------------------------


def test_an_unknown_mode_is_not_implemented() -> None:
    for mode in ["STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", UNSIGNED_PAYLOAD, "x"]:
        with pytest.raises(S3Error) as raised:
            AwsChunkedDecoder(_source([]), identity=None, mode=mode)
        assert raised.value.code == "NotImplemented"


@pytest.mark.parametrize("mode", [SIGNED, SIGNED_TRAILER])
def test_signed_modes_need_an_identity_signed_for_them(mode: str) -> None:
    presigned = Identity(ACCESS_KEY, UNSIGNED_PAYLOAD, "0" * 64, b"k", "d/r/s3/aws4_request", "t")
    other_mode = aws_identity(SIGNED_TRAILER if mode == SIGNED else SIGNED)
    for identity in [None, presigned, other_mode]:
        with pytest.raises(S3Error) as raised:
            AwsChunkedDecoder(_source([]), identity=identity, mode=mode)
        assert raised.value.code == "InvalidRequest"


# --- streaming and speed ---------------------------------------------------------------------


async def test_unsigned_bytes_are_yielded_as_they_arrive() -> None:
    async def source() -> AsyncIterator[bytes]:
        yield b"a;x\r\n01234"
        raise AssertionError("read past the first received bytes")

    decoder = AwsChunkedDecoder(source(), identity=None, mode=UNSIGNED_TRAILER)
    assert await anext(decoder) == b"01234"


async def test_signed_chunks_are_yielded_whole_once_checked() -> None:
    body, options, _ = small_case(SIGNED)
    parts = [body[i : i + 7] for i in range(0, len(body), 7)]
    decoder = AwsChunkedDecoder(_source(parts), **options)
    assert [len(data) async for data in decoder] == [300, 300, 172]


@pytest.mark.parametrize("mode", MODES)
async def test_a_large_body_decodes_fast(mode: str) -> None:
    """64 MiB in 1 MiB chunks, received in 64 KiB reads, well above 100 MB/s."""
    identity = seed_identity(mode) if mode != UNSIGNED_TRAILER else None
    block = random.Random(1).randbytes(1024 * 1024)
    payload = block * 64
    trailers = {} if mode == SIGNED else {"x-amz-checksum-crc32": _b64("crc32", payload)}
    body = encode(payload, 1024 * 1024, mode=mode, identity=identity, trailers=trailers)
    reads = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    decoder = AwsChunkedDecoder(_source(reads), identity=identity, mode=mode)
    digest = hashlib.sha256()
    started = time.perf_counter()
    async for data in decoder:
        digest.update(data)
    elapsed_s = time.perf_counter() - started
    assert digest.digest() == hashlib.sha256(payload).digest()
    assert decoder.trailers == trailers
    assert len(payload) / elapsed_s > 100e6, f"{len(payload) / elapsed_s / 1e6:.0f} MB/s"
