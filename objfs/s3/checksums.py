"""objfs.s3.checksums — the S3 checksum algorithms and the checks of checksum headers.

Owns computing CRC32 (ISA-L, as OpenStack Swift loads it, else zlib), CRC32C
(the crc32c package), CRC64NVME (awscrt), SHA1 and SHA256 the way S3 reports
them (base64 of the big-endian digest), reading the x-amz-checksum-*,
x-amz-sdk-checksum-algorithm, x-amz-trailer and Content-MD5 headers, and the
errors AWS answers for them. Pure: no I/O, no body reading.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import hashlib
import importlib.metadata
import logging
import zlib
from collections.abc import Callable, Mapping
from typing import final

import crc32c
from awscrt import checksums as crt

from objfs.s3.errors import S3Error

ALGORITHMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")
DIGEST_SIZE_BYTES = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32}
HEADER_PREFIX = "x-amz-checksum-"
log = logging.getLogger(__name__)


def _isal_crc32() -> Callable[[bytes | bytearray | memoryview, int], int] | None:
    """CRC32 (gzip's) by ISA-L through ctypes, ~10 GB/s here against ~2.4 for zlib
    and awscrt: boto3 sends it with every upload by default. ISA-L comes with
    pyeclib's wheel (or the system); None where there is none."""
    path = ctypes.util.find_library("isal")
    if path is None:
        try:
            found = [f for f in importlib.metadata.files("pyeclib") or () if "libisal" in f.name]
        except importlib.metadata.PackageNotFoundError:
            found = []
        path = str(found[0].locate()) if len(found) == 1 else None
    try:
        function = ctypes.CDLL(path).crc32_gzip_refl if path else None
    except (OSError, AttributeError) as exc:
        log.warning("ISA-L at %s has no usable crc32_gzip_refl (%s): CRC32 via zlib", path, exc)
        return None
    if function is None:
        return None
    function.restype = ctypes.c_uint32
    function.argtypes = [ctypes.c_uint32, ctypes.c_char_p, ctypes.c_uint64]

    def crc32(data: bytes | bytearray | memoryview, value: int) -> int:
        if type(data) is not bytes:  # ctypes takes bytes' buffer as it is; others: zlib
            return zlib.crc32(data, value)
        return int(function(value, data, len(data)))  # ctypes lets go of the GIL meanwhile

    return crc32 if crc32(b"123456789", 0) == 0xCBF43926 else None


_CRCS: dict[str, Callable[[bytes | bytearray | memoryview, int], int]] = {
    "crc32": _isal_crc32() or zlib.crc32,
    "crc32c": crc32c.crc32c,  # SSE4.2, ~20 GB/s: a little ahead of awscrt's
    "crc64nvme": crt.crc64nvme,
}
_ALGORITHM_LIST = "[" + ", ".join(algorithm.upper() for algorithm in ALGORITHMS) + "]"


@final
class Checksum:
    """A running checksum of one S3 algorithm (a name from ALGORITHMS)."""

    def __init__(self, algorithm: str) -> None:
        """Raises ValueError for a name not in ALGORITHMS (a caller bug: names come validated)."""
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown checksum algorithm {algorithm!r}")
        self.algorithm = algorithm
        self._crc = 0
        self._hash = hashlib.new(algorithm) if algorithm not in _CRCS else None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add data; CRCs run in native code (GB/s), hashes in hashlib."""
        if self._hash is None:
            self._crc = int(_CRCS[self.algorithm](data, self._crc))
        else:
            self._hash.update(data)

    def digest(self) -> bytes:
        """The digest so far: a CRC as big-endian bytes, or the hash digest."""
        if self._hash is None:
            return self._crc.to_bytes(DIGEST_SIZE_BYTES[self.algorithm], "big")
        return self._hash.digest()

    def base64(self) -> str:
        """The digest as S3 headers carry it (x-amz-checksum-crc32: "y/Q5Jg==")."""
        return base64.b64encode(self.digest()).decode("ascii")


def header_name(algorithm: str) -> str:
    """The header (or trailer) that carries a checksum: "x-amz-checksum-crc32"."""
    return HEADER_PREFIX + algorithm


def requested_checksums(headers: Mapping[str, str]) -> dict[str, str]:
    """The checksums a request asks S3 to verify, checked together as S3 checks them.

    Args:
      headers: request headers, names lowercase.

    Returns:
      algorithm -> expected base64 value: from an x-amz-checksum-* header, or ""
      for the algorithm x-amz-trailer announces (its value arrives in the
      aws-chunked trailers: see `trailer_checksum`). At most one entry.

    Raises:
      S3Error: InvalidRequest for more than one checksum (headers and trailer
        together), a malformed value, or an x-amz-sdk-checksum-algorithm that
        is unknown, has no checksum, or names another algorithm;
        InvalidArgument for an x-amz-trailer that is not a checksum.
    """
    values = {
        algorithm: headers[header_name(algorithm)]
        for algorithm in ALGORITHMS
        if header_name(algorithm) in headers
    }
    announced = trailer_algorithm(headers)
    present = [*values, *([announced] if announced is not None else [])]
    if len(present) > 1:
        raise S3Error(
            "InvalidRequest",
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
        )
    sdk_algorithm = headers.get("x-amz-sdk-checksum-algorithm")
    if sdk_algorithm is not None:
        _check_sdk_algorithm(sdk_algorithm.lower(), present)
    for algorithm, value in values.items():
        if decode_checksum(algorithm, value) is None:
            message = f"Value for {header_name(algorithm)} header is invalid."
            raise S3Error("InvalidRequest", message)
    if announced is not None:
        values[announced] = ""
    return values


def trailer_algorithm(headers: Mapping[str, str]) -> str | None:
    """The algorithm whose checksum x-amz-trailer says the aws-chunked trailer carries.

    Raises:
      S3Error: InvalidArgument if x-amz-trailer names anything but one checksum.
    """
    value = headers.get("x-amz-trailer")
    if value is None:
        return None
    name = value.strip().lower()
    algorithm = name.removeprefix(HEADER_PREFIX)
    if name == algorithm or algorithm not in ALGORITHMS:
        raise S3Error(
            "InvalidArgument",
            "The value specified in the x-amz-trailer header is not supported",
            ArgumentName="x-amz-trailer",
            ArgumentValue=value,
        )
    return algorithm


def trailer_checksum(trailers: Mapping[str, str], algorithm: str) -> str:
    """The base64 checksum an aws-chunked body's trailers carry for `algorithm`.

    Raises:
      S3Error: MalformedTrailerError if the trailer is missing; InvalidRequest
        if its value is malformed.
    """
    value = trailers.get(header_name(algorithm))
    if value is None:
        raise S3Error(
            "MalformedTrailerError",
            "The request contained trailing data that was not well-formed or did not conform "
            "to our published schema.",
            status=400,
        )
    if decode_checksum(algorithm, value) is None:
        raise S3Error(
            "InvalidRequest", f"Value for {header_name(algorithm)} trailing header is invalid."
        )
    return value


def decode_checksum(algorithm: str, value: str) -> bytes | None:
    """The digest in a base64 checksum value, or None unless it is padded base64 of the
    algorithm's size (4 bytes for CRC32: "y/Q5Jg==", not "y/Q5Jg" nor hex "cbf43926")."""
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest if len(digest) == DIGEST_SIZE_BYTES[algorithm] else None


def verify_checksum(algorithm: str, expected_base64: str, actual_base64: str) -> None:
    """Check a computed checksum against the one the client sent (both base64).

    Raises:
      S3Error: BadDigest if they differ ("The CRC32 you specified did not match
        the calculated checksum.").
    """
    if decode_checksum(algorithm, expected_base64) != decode_checksum(algorithm, actual_base64):
        raise S3Error(
            "BadDigest",
            f"The {algorithm.upper()} you specified did not match the calculated checksum.",
        )


def parse_content_md5(value: str) -> bytes:
    """The 16-byte digest of a Content-MD5 header (base64, padded).

    Raises:
      S3Error: InvalidDigest if the value is not base64 of 16 bytes.
    """
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 16:
        invalid = S3Error("InvalidDigest", "The Content-MD5 you specified was invalid.")
        invalid.extra["Content-MD5"] = value  # no Python identifier, so no keyword argument
        raise invalid
    return digest


def content_md5_matches(content_md5: str, body_md5_digest: bytes) -> None:
    """Check a body's MD5 digest against its Content-MD5 header; returns only if they match.

    Raises:
      S3Error: InvalidDigest for a malformed header; BadDigest for a mismatch.
    """
    if parse_content_md5(content_md5) != body_md5_digest:
        raise S3Error(
            "BadDigest",
            "The Content-MD5 you specified did not match what we received.",
            ExpectedDigest=content_md5,
            CalculatedDigest=base64.b64encode(body_md5_digest).decode("ascii"),
        )


def _check_sdk_algorithm(sdk_algorithm: str, present: list[str]) -> None:
    """x-amz-sdk-checksum-algorithm must be known and name the checksum that is sent."""
    if sdk_algorithm not in ALGORITHMS:
        raise S3Error(
            "InvalidRequest",
            "Checksum algorithm provided is unsupported. Please try again with any of the "
            f"valid types: {_ALGORITHM_LIST}",
        )
    if not present:
        raise S3Error(
            "InvalidRequest",
            "x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* "
            "or x-amz-trailer headers were found.",
        )
    if present != [sdk_algorithm]:
        raise S3Error("InvalidRequest", "Value for x-amz-sdk-checksum-algorithm header is invalid.")


# -- multipart uploads -------------------------------------------------------------------
# An upload created with x-amz-checksum-algorithm gives its object a checksum made of
# its parts': COMPOSITE, the checksum of the parts' checksums end to end with "-N"
# (N parts), or FULL_OBJECT, the CRC of the whole object, combined from the parts'
# CRCs and lengths without reading a byte. CRC64NVME is full-object only; SHA1 and
# SHA256 composite only; CRC32 and CRC32C either (composite by default).

COMPOSITE = "COMPOSITE"
FULL_OBJECT = "FULL_OBJECT"
_COMBINE: dict[str, Callable[[int, int, int], int]] = {
    "crc32": crt.combine_crc32,
    "crc32c": crt.combine_crc32c,
    "crc64nvme": crt.combine_crc64nvme,
}


def upload_checksum(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """(algorithm, type) a CreateMultipartUpload asks for, or None.

    Raises:
      S3Error: InvalidRequest for an unknown algorithm or type, a type without an
        algorithm, or a pair S3 does not offer (CRC64NVME composite, SHA full-object).
    """
    name = headers.get("x-amz-checksum-algorithm")
    kind = headers.get("x-amz-checksum-type")
    if name is None:
        if kind is not None:
            raise S3Error(
                "InvalidRequest",
                "The x-amz-checksum-type header can only be used with the "
                "x-amz-checksum-algorithm header.",
            )
        return None
    algorithm = name.strip().lower()
    if algorithm not in ALGORITHMS:
        raise S3Error(
            "InvalidRequest",
            "Checksum algorithm provided is unsupported. Please try again with any of the "
            f"valid types: {_ALGORITHM_LIST}",
        )
    default = FULL_OBJECT if algorithm == "crc64nvme" else COMPOSITE
    kind = default if kind is None else kind.strip().upper()
    if (
        kind not in (COMPOSITE, FULL_OBJECT)
        or (kind == FULL_OBJECT and algorithm not in _COMBINE)
        or (kind == COMPOSITE and algorithm == "crc64nvme")
    ):
        raise S3Error(
            "InvalidRequest",
            f"The {algorithm.upper()} checksum algorithm does not support the checksum "
            f"type {kind}.",
        )
    return algorithm, kind


def checksum_type(value: str) -> str:
    """COMPOSITE for a multipart object's checksum of checksums ("...=-3": base64 has
    no "-"), else FULL_OBJECT."""
    return COMPOSITE if "-" in value else FULL_OBJECT


def combined_checksum(algorithm: str, kind: str, parts: list[tuple[str, int]]) -> str:
    """The object's checksum from its parts' (base64 checksum, length), in order."""
    digests = [base64.b64decode(value) for value, _ in parts]
    if kind == COMPOSITE:
        whole = Checksum(algorithm)
        whole.update(b"".join(digests))
        return f"{whole.base64()}-{len(parts)}"
    combine = _COMBINE[algorithm]
    crc = 0
    for digest, (_, length) in zip(digests, parts, strict=True):
        crc = combine(crc, int.from_bytes(digest, "big"), length)
    return base64.b64encode(crc.to_bytes(DIGEST_SIZE_BYTES[algorithm], "big")).decode("ascii")
