"""S3 checksums compute what AWS SDKs compute, and checksum headers are checked as S3 checks them.

Method: each algorithm against its published check value ("123456789"), against
botocore's own checksum classes and zlib, in any split of the data; headers
from real boto3 requests (captured before sending) are accepted; one defect at a
time in the headers must raise the code and message S3 answers.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import random
import zlib
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.httpchecksum import (
    CrtCrc32cChecksum,
    CrtCrc32Checksum,
    CrtCrc64NvmeChecksum,
    Sha1Checksum,
    Sha256Checksum,
)

from objfs.s3 import checksums
from objfs.s3.checksums import (
    ALGORITHMS,
    DIGEST_SIZE_BYTES,
    Checksum,
    content_md5_matches,
    decode_checksum,
    header_name,
    parse_content_md5,
    requested_checksums,
    trailer_algorithm,
    trailer_checksum,
    verify_checksum,
)
from objfs.s3.errors import S3Error

CHECK_DATA = b"123456789"
CHECK_VALUES = {
    "crc32": "cbf43926",
    "crc32c": "e3069283",
    "crc64nvme": "ae8b14860a799888",
    "sha1": "f7c3bc1d808e04732adf679965ccc34ca7ae3441",
    "sha256": "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225",
}
BOTOCORE_CLASSES = {
    "crc32": CrtCrc32Checksum,
    "crc32c": CrtCrc32cChecksum,
    "crc64nvme": CrtCrc64NvmeChecksum,
    "sha1": Sha1Checksum,
    "sha256": Sha256Checksum,
}


def b64(algorithm: str, data: bytes) -> str:
    checksum = Checksum(algorithm)
    checksum.update(data)
    return checksum.base64()


def raises(code: str, call: Any, *args: Any) -> S3Error:
    with pytest.raises(S3Error) as raised:
        call(*args)
    assert raised.value.code == code, (raised.value.code, raised.value.message)
    return raised.value


# --- the algorithms --------------------------------------------------------------------------


def test_the_algorithms_are_s3s_five() -> None:
    assert ALGORITHMS == ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")
    assert set(DIGEST_SIZE_BYTES) == set(ALGORITHMS)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_check_values_of_123456789(algorithm: str) -> None:
    checksum = Checksum(algorithm)
    checksum.update(CHECK_DATA)
    assert checksum.digest().hex() == CHECK_VALUES[algorithm]
    assert checksum.base64() == base64.b64encode(bytes.fromhex(CHECK_VALUES[algorithm])).decode()
    assert len(checksum.digest()) == DIGEST_SIZE_BYTES[algorithm]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_empty_data_has_the_digest_of_nothing(algorithm: str) -> None:
    expected = BOTOCORE_CLASSES[algorithm]()
    assert Checksum(algorithm).base64() == expected.b64digest()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_any_split_of_the_data_gives_botocores_checksum(algorithm: str) -> None:
    rng = random.Random(algorithm)
    data = rng.randbytes(300_000)
    expected = BOTOCORE_CLASSES[algorithm]()
    expected.update(data)
    for _ in range(20):
        cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(1, 8)))
        checksum = Checksum(algorithm)
        for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
            checksum.update(data[start:end])
        assert checksum.base64() == expected.b64digest()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_bytearray_and_memoryview_are_accepted(algorithm: str) -> None:
    data = bytes(range(256)) * 10
    checksum = Checksum(algorithm)
    checksum.update(bytearray(data[:100]))
    checksum.update(memoryview(data)[100:])
    assert checksum.base64() == b64(algorithm, data)


def test_crc32_is_zlibs_crc32() -> None:
    data = random.Random(3).randbytes(100_000)
    assert Checksum("crc32").digest() == (0).to_bytes(4, "big")
    assert b64("crc32", data) == base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_crc32_runs_in_isal_where_pyeclibs_wheel_brings_it() -> None:
    """boto3 sends a CRC32 with every upload: zlib's (~2.4 GB/s) would cost a
    64 MiB PUT ~25 ms of node CPU, ISA-L's ~6 ms."""
    bundled = [f for f in importlib.metadata.files("pyeclib") or () if "libisal" in f.name]
    if not bundled:
        pytest.skip("this pyeclib brings no ISA-L")
    crc32 = checksums._CRCS["crc32"]
    assert crc32 is not zlib.crc32
    data = random.Random(4).randbytes(1 << 20)
    assert crc32(data, 0) == zlib.crc32(data)
    assert crc32(data[5:], crc32(data[:5], 0)) == zlib.crc32(data)
    assert crc32(memoryview(data)[7:], crc32(data[:7], 0)) == zlib.crc32(data)


def test_an_unknown_algorithm_is_a_caller_bug() -> None:
    for name in ["md5", "CRC32", "sha512", ""]:
        with pytest.raises(ValueError, match="unknown checksum algorithm"):
            Checksum(name)


# --- requested checksums: what boto3 sends ---------------------------------------------------


class _Sent(Exception):
    pass


def boto3_put_headers(**params: Any) -> dict[str, str]:
    captured: list[Any] = []

    def stop(request: Any, **_: Any) -> None:
        captured.append(request)
        raise _Sent

    client = boto3.client(
        "s3",
        endpoint_url="http://objfs.test:9000",
        region_name="us-east-1",
        aws_access_key_id="AK",
        aws_secret_access_key="SK",
        config=Config(signature_version="s3v4", retries={"total_max_attempts": 1}),
    )
    client.meta.events.register("before-send.s3.*", stop)
    with pytest.raises(_Sent):
        client.put_object(Bucket="bucket", Key="key", **params)
    return {
        name.lower(): value.decode() if isinstance(value, bytes) else value
        for name, value in captured[0].headers.items()
    }


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_boto3_checksum_headers_are_accepted_and_match(algorithm: str) -> None:
    body = b"hello objfs"
    headers = boto3_put_headers(Body=body, ChecksumAlgorithm=algorithm.upper())
    assert headers["x-amz-sdk-checksum-algorithm"] == algorithm.upper()
    requested = requested_checksums(headers)
    assert requested == {algorithm: b64(algorithm, body)}
    verify_checksum(algorithm, requested[algorithm], b64(algorithm, body))


def test_boto3_default_crc32_and_a_given_value_are_accepted() -> None:
    assert requested_checksums(boto3_put_headers(Body=b"x")) == {"crc32": b64("crc32", b"x")}
    given = b64("sha256", b"x")
    assert requested_checksums(boto3_put_headers(Body=b"x", ChecksumSHA256=given)) == {
        "sha256": given
    }


def test_no_checksum_headers_request_nothing() -> None:
    assert requested_checksums({}) == {}
    assert requested_checksums({"x-amz-checksum-type": "FULL_OBJECT", "content-md5": "x"}) == {}


def test_a_trailer_checksum_is_requested_with_its_value_to_come() -> None:
    headers = {
        "x-amz-trailer": "x-amz-checksum-crc64nvme",
        "x-amz-sdk-checksum-algorithm": "CRC64NVME",
    }
    assert requested_checksums(headers) == {"crc64nvme": ""}
    assert trailer_algorithm(headers) == "crc64nvme"
    assert trailer_algorithm({"x-amz-trailer": " X-Amz-Checksum-CRC32 "}) == "crc32"
    assert trailer_algorithm({}) is None


# --- requested checksums: what S3 refuses ----------------------------------------------------


def test_two_checksums_are_refused() -> None:
    headers = {
        "x-amz-checksum-crc32": b64("crc32", b"x"),
        "x-amz-checksum-crc32c": b64("crc32c", b"x"),
    }
    error = raises("InvalidRequest", requested_checksums, headers)
    assert error.message == (
        "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
    )


def test_a_header_checksum_and_a_trailer_checksum_are_refused() -> None:
    headers = {"x-amz-checksum-crc32": b64("crc32", b"x"), "x-amz-trailer": "x-amz-checksum-sha1"}
    raises("InvalidRequest", requested_checksums, headers)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    "damage",
    [
        lambda v: v.rstrip("="),  # padding dropped
        lambda v: base64.b64decode(v).hex(),  # hexadecimal
        lambda v: base64.b64encode(base64.b64decode(v) + b"\0").decode(),  # a byte too many
        lambda v: base64.b64encode(base64.b64decode(v)[:-1]).decode(),  # a byte too few
        lambda v: v[:-2] + "!=",  # not base64
        lambda v: "",
    ],
)
def test_a_malformed_checksum_value_is_refused(algorithm: str, damage: Any) -> None:
    value = damage(b64(algorithm, CHECK_DATA))
    error = raises("InvalidRequest", requested_checksums, {header_name(algorithm): value})
    assert error.message == f"Value for x-amz-checksum-{algorithm} header is invalid."


def test_an_sdk_algorithm_naming_another_checksum_is_refused() -> None:
    headers = {"x-amz-sdk-checksum-algorithm": "CRC32", "x-amz-checksum-crc32c": "4waSgw=="}
    error = raises("InvalidRequest", requested_checksums, headers)
    assert error.message == "Value for x-amz-sdk-checksum-algorithm header is invalid."


def test_an_sdk_algorithm_without_a_checksum_is_refused() -> None:
    error = raises("InvalidRequest", requested_checksums, {"x-amz-sdk-checksum-algorithm": "CRC32"})
    assert error.message.startswith("x-amz-sdk-checksum-algorithm specified, but no")


def test_an_unknown_sdk_algorithm_is_refused() -> None:
    headers = {"x-amz-sdk-checksum-algorithm": "MD4", "x-amz-checksum-crc32": "y/Q5Jg=="}
    error = raises("InvalidRequest", requested_checksums, headers)
    assert error.message == (
        "Checksum algorithm provided is unsupported. Please try again with any of the valid "
        "types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]"
    )


@pytest.mark.parametrize(
    "trailer", ["x-amz-meta-foo", "x-amz-checksum-md5", "x-amz-checksum-", "crc32", ""]
)
def test_a_trailer_that_is_no_checksum_is_refused(trailer: str) -> None:
    error = raises("InvalidArgument", trailer_algorithm, {"x-amz-trailer": trailer})
    assert error.extra["ArgumentName"] == "x-amz-trailer"
    raises("InvalidArgument", requested_checksums, {"x-amz-trailer": trailer})


# --- trailers and verification ---------------------------------------------------------------


def test_the_trailer_checksum_is_read_from_the_trailers() -> None:
    value = b64("crc32c", CHECK_DATA)
    assert trailer_checksum({"x-amz-checksum-crc32c": value}, "crc32c") == value


def test_a_missing_trailer_checksum_is_a_malformed_trailer() -> None:
    error = raises("MalformedTrailerError", trailer_checksum, {"x-amz-checksum-crc32": "x"}, "sha1")
    assert error.status == 400


def test_a_malformed_trailer_checksum_is_refused() -> None:
    error = raises("InvalidRequest", trailer_checksum, {"x-amz-checksum-crc32": "y/Q5Jg"}, "crc32")
    assert error.message == "Value for x-amz-checksum-crc32 trailing header is invalid."


@pytest.mark.parametrize(
    ("algorithm", "name"),
    [
        ("crc32", "CRC32"),
        ("crc32c", "CRC32C"),
        ("crc64nvme", "CRC64NVME"),
        ("sha1", "SHA1"),
        ("sha256", "SHA256"),
    ],
)
def test_a_checksum_mismatch_is_a_bad_digest_naming_the_algorithm(
    algorithm: str, name: str
) -> None:
    expected = b64(algorithm, CHECK_DATA)
    verify_checksum(algorithm, expected, b64(algorithm, CHECK_DATA))
    error = raises("BadDigest", verify_checksum, algorithm, expected, b64(algorithm, b"other"))
    assert error.message == f"The {name} you specified did not match the calculated checksum."
    assert error.status == 400


def test_checksums_compare_as_digests_not_as_text() -> None:
    # "y/Q5Jh==" has non-zero padding bits, yet carries the same 4 bytes as "y/Q5Jg==".
    assert decode_checksum("crc32", "y/Q5Jh==") == decode_checksum("crc32", "y/Q5Jg==")
    verify_checksum("crc32", "y/Q5Jh==", "y/Q5Jg==")


# --- Content-MD5 -----------------------------------------------------------------------------


def test_a_matching_content_md5_passes() -> None:
    digest = hashlib.md5(CHECK_DATA).digest()
    content_md5_matches(base64.b64encode(digest).decode(), digest)
    assert parse_content_md5("JfnnlDI7RTiF9RgfG2JNCw==") == digest


def test_a_content_md5_of_other_data_is_a_bad_digest() -> None:
    body_digest = hashlib.md5(CHECK_DATA).digest()
    empty = "1B2M2Y8AsgTpgAmY7PhCfg=="  # MD5 of nothing
    error = raises("BadDigest", content_md5_matches, empty, body_digest)
    assert error.message == "The Content-MD5 you specified did not match what we received."
    assert error.extra == {"ExpectedDigest": empty, "CalculatedDigest": "JfnnlDI7RTiF9RgfG2JNCw=="}


@pytest.mark.parametrize(
    "value",
    [
        "not base64!",
        "YWJyYWNhZGFicmE=",
        "25f9e794323b453885f5181f1b624d0b",
        "",
        "JfnnlDI7RTiF9RgfG2JNCw",
    ],
)
def test_a_malformed_content_md5_is_an_invalid_digest(value: str) -> None:
    error = raises("InvalidDigest", content_md5_matches, value, hashlib.md5(b"").digest())
    assert error.message == "The Content-MD5 you specified was invalid."
    assert error.extra == {"Content-MD5": value}
    raises("InvalidDigest", parse_content_md5, value)
