"""objfs.s3.sigv4 — AWS Signature Version 4 verification of S3 requests.

Owns the canonical request, the string to sign, the signing key and the checks
of the Authorization header and of presigned (query string) URLs. Pure: no I/O,
no clock (the caller passes `now`), no web framework; secrets come from a
callback. It never reads the body: `verify_payload_hash` checks a body hash the
caller computed, and `objfs.s3.chunked` checks aws-chunked chunk signatures.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal
from urllib.parse import quote_from_bytes, unquote, unquote_to_bytes

from objfs.s3.errors import S3Error

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_PAYLOAD_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_PAYLOAD_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_PAYLOADS = (
    STREAMING_SIGNED_PAYLOAD,
    STREAMING_SIGNED_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_PAYLOAD_TRAILER,
)
EMPTY_SHA256_HEX = hashlib.sha256(b"").hexdigest()
PRESIGNED_EXPIRES_MAX_S = 7 * 24 * 3600  # 604800: a week, AWS's limit

_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_ASCII_WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f "
_WHITESPACE_RUN = re.compile(f"[{re.escape(_ASCII_WHITESPACE)}]+")
_QUERY_AUTH_PARAMETERS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature")
_PRESIGNED_PARAMETERS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
)

_Form = Literal["header", "query"]


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What the signature covers, as the client sent it.

    `raw_path` is the path without the query, still percent-encoded;
    `query_string` is the raw query after "?". Both, and the header values, are
    the bytes as received decoded as latin-1 (one character per byte, as
    http.client encodes what botocore signs). Header names are lowercase and a
    repeated header is one value, its values joined with ",".
    """

    method: str
    raw_path: str
    query_string: str
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified signer, with what `objfs.s3.chunked` needs to check chunk signatures."""

    access_key: str
    payload_hash: str  # the x-amz-content-sha256 value; UNSIGNED-PAYLOAD when presigned
    signature: str  # the seed signature of an aws-chunked body
    signing_key: bytes = field(repr=False)  # a derived secret: kept out of logs
    scope: str  # "20260101/us-east-1/s3/aws4_request"
    amz_date: str  # "20260101T000000Z"

    @property
    def region(self) -> str:
        """The region the client signed for (any region is accepted)."""
        return self.scope.split("/")[1]


@dataclass(frozen=True, slots=True)
class _Credential:
    access_key: str
    date: str
    region: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{SERVICE}/{TERMINATOR}"


@dataclass(frozen=True, slots=True)
class _Claim:
    """What a signed request claims, read from its header or its query."""

    form: _Form
    credential: _Credential
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str  # as the string to sign carries it: YYYYMMDDTHHMMSSZ
    signed_at: datetime
    payload_hash: str
    expires_s: int | None  # presigned URLs only


def verify(
    request: HttpRequest,
    secret_for: Callable[[str], str | None],
    *,
    now: datetime,
    max_skew_s: int = 900,
) -> Identity | None:
    """Check the SigV4 signature of a request, in its header or its query form.

    Args:
      request: the request as received.
      secret_for: the secret key of an access key id, or None if there is none.
      now: the server's current time (timezone-aware).
      max_skew_s: how far the request time of a header-signed request may be
        from `now`; also how far in the future a presigned URL may be dated.

    Returns:
      The verified identity, or None for an anonymous request (no Authorization
      header and no X-Amz-Signature/Algorithm/Credential query parameter).

    Raises:
      S3Error: AuthorizationHeaderMalformed or AuthorizationQueryParametersError
        (malformed claim), AccessDenied (no valid date, or a presigned URL that
        expired or is not valid yet), RequestTimeTooSkewed, InvalidAccessKeyId,
        SignatureDoesNotMatch, InvalidArgument (two auth mechanisms, a bad
        x-amz-content-sha256, an unknown Authorization type) or InvalidRequest
        (Signature Version 2, or no x-amz-content-sha256 header).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    query = _split_query(request.query_string)
    names = {name for name, _ in query}
    authorization = request.headers.get("authorization")
    query_auth = any(name in names for name in _QUERY_AUTH_PARAMETERS)
    if authorization is None and not query_auth:
        if "AWSAccessKeyId" in names and "Signature" in names:
            raise _unsupported_mechanism()
        return None
    if authorization is not None and query_auth:
        raise S3Error(
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
            "Signature query string parameter or the Authorization header should be specified",
            ArgumentName="Authorization",
            ArgumentValue=authorization,
        )
    if authorization is not None:
        claim = _header_claim(authorization, request.headers)
    else:
        claim = _query_claim(query)
    _check_time(claim, now=now, max_skew_s=max_skew_s)
    return _check_signature(request, claim, secret_for)


def verify_payload_hash(identity: Identity, body_sha256_hex: str) -> None:
    """Check a body against the x-amz-content-sha256 the client signed.

    A no-op for UNSIGNED-PAYLOAD and the STREAMING-* values (their bodies are
    not covered by one hash).

    Raises:
      S3Error: XAmzContentSHA256Mismatch if the hashes differ.
    """
    claimed = identity.payload_hash
    if claimed == UNSIGNED_PAYLOAD or claimed in STREAMING_PAYLOADS:
        return
    if claimed.lower() != body_sha256_hex.lower():
        raise S3Error(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ClientComputedContentSHA256=claimed,
            S3ComputedContentSHA256=body_sha256_hex,
        )


@functools.lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").

    Cached: it changes once a day per key, and four HMACs cost ~12 us per request."""
    key = ("AWS4" + secret).encode("utf-8")
    for part in (date, region, service, TERMINATOR):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def canonical_header_value(value: str) -> str:
    """A header value with its ends trimmed and inner whitespace runs made one space.

    Only ASCII whitespace counts, the characters botocore's `str.split()` finds
    in ASCII: in latin-1 decoded text, bytes 0x85 and 0xA0 are parts of UTF-8
    characters (0xA0 ends "à"), not spaces. The rule also applies to the
    trailers of an aws-chunked body.
    """
    return _WHITESPACE_RUN.sub(" ", value).strip(_ASCII_WHITESPACE)


def canonical_uri(raw_path: str) -> str:
    """The canonical URI of an S3 request: each path segment URI-encoded once.

    S3 does not double-encode, so a segment is decoded and encoded again with
    AWS's rule (everything but A-Z a-z 0-9 - _ . ~ is %XX, uppercase). A
    literal "/" separates segments; an encoded "%2F" stays encoded.
    Example: "/b/a%20b/%7e+" -> "/b/a%20b/~%2B".
    """
    if not raw_path:
        return "/"
    return "/".join(_uri_encode(segment) for segment in raw_path.split("/"))


def canonical_query(query_string: str, *, exclude: str | None = None) -> str:
    """The canonical query string: names and values encoded with AWS's rule, sorted.

    A parameter without "=" has an empty value; pairs sort by encoded name, then
    by encoded value (repeated names stay, in value order). `exclude` drops one
    parameter name (X-Amz-Signature of a presigned URL).
    Example: "b=2&a=x%20y&a&a=%7e" -> "a=&a=x%20y&a=~&b=2".
    """
    pairs = sorted(
        (_uri_encode(name), _uri_encode(value))
        for name, value in _split_query(query_string)
        if name != exclude
    )
    return "&".join(f"{name}={value}" for name, value in pairs)


def canonical_request(
    request: HttpRequest,
    signed_headers: tuple[str, ...],
    payload_hash: str,
    *,
    exclude_query: str | None = None,
) -> str:
    """The canonical request of SigV4, for S3 (no path normalization, no double encoding)."""
    header_lines = "".join(
        f"{name}:{canonical_header_value(request.headers.get(name, ''))}\n"
        for name in signed_headers
    )
    return "\n".join(
        (
            request.method,
            canonical_uri(request.raw_path),
            canonical_query(request.query_string, exclude=exclude_query),
            header_lines,
            ";".join(signed_headers),
            payload_hash,
        )
    )


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    """The SigV4 string to sign over a canonical request (hashed as the bytes received)."""
    digest = hashlib.sha256(_received_bytes(canonical)).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def _check_signature(
    request: HttpRequest, claim: _Claim, secret_for: Callable[[str], str | None]
) -> Identity:
    """The identity of a well-formed, timely claim whose signature is right."""
    credential = claim.credential
    secret = secret_for(credential.access_key)
    if secret is None:
        raise S3Error(
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            AWSAccessKeyId=credential.access_key,
        )
    exclude = "X-Amz-Signature" if claim.form == "query" else None
    canonical = canonical_request(
        request, claim.signed_headers, claim.payload_hash, exclude_query=exclude
    )
    to_sign = string_to_sign(claim.amz_date, credential.scope, canonical)
    key = signing_key(secret, credential.date, credential.region)
    expected = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    # compare_digest refuses non-ASCII str, and the provided signature is the client's text.
    if not hmac.compare_digest(expected.encode(), claim.signature.encode("utf-8")):
        raise S3Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            AWSAccessKeyId=credential.access_key,
            StringToSign=to_sign,
            SignatureProvided=claim.signature,
            CanonicalRequest=canonical,
        )
    return Identity(
        access_key=credential.access_key,
        payload_hash=claim.payload_hash,
        signature=claim.signature,
        signing_key=key,
        scope=credential.scope,
        amz_date=claim.amz_date,
    )


def _header_claim(authorization: str, headers: Mapping[str, str]) -> _Claim:
    """The claim of an Authorization header (AWS4-HMAC-SHA256 Credential=..., ...)."""
    fields = _authorization_fields(authorization)
    credential = _credential(fields["Credential"], "header")
    signed_headers = _signed_headers(fields["SignedHeaders"], "header")
    amz_date, signed_at = _header_request_time(headers)
    if credential.date != amz_date[:8]:
        raise _malformed("header", "Invalid credential date. Date is not the same as X-Amz-Date.")
    return _Claim(
        form="header",
        credential=credential,
        signed_headers=signed_headers,
        signature=fields["Signature"],
        amz_date=amz_date,
        signed_at=signed_at,
        payload_hash=_header_payload_hash(headers),
        expires_s=None,
    )


def _authorization_fields(authorization: str) -> dict[str, str]:
    """Credential, SignedHeaders and Signature of an Authorization header value."""
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        if algorithm == "AWS" or algorithm.startswith("AWS4-"):
            raise _unsupported_mechanism()
        raise S3Error(
            "InvalidArgument",
            "Unsupported Authorization Type",
            ArgumentName="Authorization",
            ArgumentValue=authorization,
        )
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, equals, value = part.strip().partition("=")
        if not equals or name in fields:
            raise _malformed(
                "header", f'the authorization component "{part.strip()}" is malformed.'
            )
        fields[name] = value
    if sorted(fields) != ["Credential", "Signature", "SignedHeaders"]:
        raise _malformed(
            "header",
            "the authorization header requires three components: "
            "Credential, SignedHeaders, and Signature.",
        )
    return fields


def _query_claim(query: list[tuple[str, str]]) -> _Claim:
    """The claim of a presigned URL's X-Amz-* parameters."""
    parameters: dict[str, str] = {}
    for name, value in query:
        if name in _PRESIGNED_PARAMETERS:
            if name in parameters:
                raise _query_error(f"{name} must be given once.")
            parameters[name] = unquote(value)
    if len(parameters) != len(_PRESIGNED_PARAMETERS):
        raise _query_error(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, "
            "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
            "and X-Amz-Expires parameters."
        )
    if parameters["X-Amz-Algorithm"] != ALGORITHM:
        raise _query_error(f'X-Amz-Algorithm only supports "{ALGORITHM}"')
    amz_date = parameters["X-Amz-Date"]
    signed_at = _parse_amz_date(amz_date)
    if signed_at is None:
        raise _query_error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    credential = _credential(parameters["X-Amz-Credential"], "query")
    if credential.date != amz_date[:8]:
        raise _malformed("query", "Invalid credential date. Date is not the same as X-Amz-Date.")
    return _Claim(
        form="query",
        credential=credential,
        signed_headers=_signed_headers(parameters["X-Amz-SignedHeaders"], "query"),
        signature=parameters["X-Amz-Signature"],
        amz_date=amz_date,
        signed_at=signed_at,
        payload_hash=UNSIGNED_PAYLOAD,
        expires_s=_presigned_expires_s(parameters["X-Amz-Expires"]),
    )


def _credential(value: str, form: _Form) -> _Credential:
    """Parse "AKID/YYYYMMDD/region/s3/aws4_request"; any region is accepted."""
    parts = value.split("/")
    if len(parts) != 5 or not all(parts[:3]) or not re.fullmatch(r"\d{8}", parts[1]):
        raise _malformed(
            form,
            'the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/'
            'aws4_request".',
        )
    access_key, date, region, service, terminator = parts
    if service != SERVICE:
        raise _malformed(form, f'incorrect service "{service}". This endpoint belongs to "s3".')
    if terminator != TERMINATOR:
        raise _malformed(
            form, f'incorrect terminal "{terminator}". This endpoint uses "{TERMINATOR}".'
        )
    return _Credential(access_key=access_key, date=date, region=region)


def _signed_headers(value: str, form: _Form) -> tuple[str, ...]:
    """The signed header names, in the order given; "host" must be one of them."""
    names = tuple(value.split(";"))
    parameter = "X-Amz-SignedHeaders"
    if not all(_HEADER_NAME.fullmatch(name) for name in names):
        raise _malformed(form, f'the SignedHeaders "{value}" are malformed.', parameter)
    if "host" not in names:
        raise _malformed(form, "the host header must be signed.", parameter)
    return names


def _header_request_time(headers: Mapping[str, str]) -> tuple[str, datetime]:
    """The request time of a header-signed request: its YYYYMMDDTHHMMSSZ text and instant.

    x-amz-date wins over Date; a Date header (RFC 7231, or RFC 2822 as botocore
    writes it) is converted to the basic ISO 8601 form the string to sign uses.
    """
    amz_date = headers.get("x-amz-date")
    signed_at: datetime | None = None
    if amz_date is not None:
        signed_at = _parse_amz_date(amz_date)
    elif "date" in headers:
        signed_at = _parse_http_date(headers["date"])
        amz_date = None if signed_at is None else signed_at.strftime(_AMZ_DATE_FORMAT)
    if amz_date is None or signed_at is None:
        raise S3Error(
            "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header"
        )
    return amz_date, signed_at


def _header_payload_hash(headers: Mapping[str, str]) -> str:
    """The x-amz-content-sha256 of a header-signed request, which S3 requires."""
    value = headers.get("x-amz-content-sha256")
    if value is None:
        raise S3Error(
            "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"
        )
    if value == UNSIGNED_PAYLOAD or value in STREAMING_PAYLOADS or _SHA256_HEX.fullmatch(value):
        return value
    raise S3Error(
        "InvalidArgument",
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
        + ", ".join(STREAMING_PAYLOADS)
        + " or a valid sha256 value.",
        ArgumentName="x-amz-content-sha256",
        ArgumentValue=value,
    )


def _presigned_expires_s(value: str) -> int:
    """X-Amz-Expires: whole seconds, 1 to a week."""
    if not value.isascii() or not value.isdigit():
        raise _query_error("X-Amz-Expires should be a number")
    expires_s = int(value)
    if expires_s < 1:
        raise _query_error("X-Amz-Expires must be positive")
    if expires_s > PRESIGNED_EXPIRES_MAX_S:
        raise _query_error(
            f"X-Amz-Expires must be less than a week (in seconds) that is {PRESIGNED_EXPIRES_MAX_S}"
        )
    return expires_s


def _check_time(claim: _Claim, *, now: datetime, max_skew_s: int) -> None:
    """A header-signed request must be dated within max_skew_s of now; a presigned
    URL is valid from its X-Amz-Date (less the skew) for X-Amz-Expires seconds."""
    if claim.expires_s is None:
        if abs((now - claim.signed_at).total_seconds()) > max_skew_s:
            raise S3Error(
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
                RequestTime=claim.amz_date,
                ServerTime=_iso(now),
                MaxAllowedSkewMilliseconds=str(max_skew_s * 1000),
            )
        return
    expires_at = claim.signed_at + timedelta(seconds=claim.expires_s)
    if now > expires_at:
        expired = S3Error("AccessDenied", "Request has expired")
        # "X-Amz-Expires" is no Python identifier, so it cannot be a keyword argument.
        expired.extra.update(
            {
                "X-Amz-Expires": str(claim.expires_s),
                "Expires": _iso(expires_at),
                "ServerTime": _iso(now),
            }
        )
        raise expired
    if (claim.signed_at - now).total_seconds() > max_skew_s:
        raise S3Error("AccessDenied", "Request is not valid yet")


def _split_query(query_string: str) -> list[tuple[str, str]]:
    """Raw (name, value) pairs in order; still percent-encoded; empty segments skipped."""
    pairs: list[tuple[str, str]] = []
    for segment in query_string.split("&"):
        if segment:
            name, _, value = segment.partition("=")
            pairs.append((name, value))
    return pairs


def _uri_encode(raw: str) -> str:
    """Decode %XX escapes, then encode all but A-Z a-z 0-9 - _ . ~ as uppercase %XX.

    "+" is a literal plus, not a space (RFC 3986, as AWS's encoders send it).
    """
    return quote_from_bytes(unquote_to_bytes(_received_bytes(raw)), safe="")


def _received_bytes(text: str) -> bytes:
    """The bytes of latin-1 decoded request text; text beyond latin-1 (a caller
    that decoded UTF-8) is taken as UTF-8. Clients percent-encode, so this only
    matters for raw non-ASCII bytes."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _parse_amz_date(value: str) -> datetime | None:
    """A YYYYMMDDTHHMMSSZ time in UTC, or None if it is not one."""
    if not _AMZ_DATE.fullmatch(value):
        return None
    try:  # by hand: strptime costs a third of a whole verify
        return datetime(
            int(value[0:4]),
            int(value[4:6]),
            int(value[6:8]),
            int(value[9:11]),
            int(value[11:13]),
            int(value[13:15]),
            tzinfo=UTC,
        )
    except ValueError:
        return None


def _parse_http_date(value: str) -> datetime | None:
    """An HTTP Date header in UTC, or None; a zone-less "-0000" date is taken as UTC."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _malformed(form: _Form, detail: str, parameter: str = "X-Amz-Credential") -> S3Error:
    """The malformed-claim error of a form; `parameter` names the query parameter at fault."""
    if form == "header":
        return S3Error(
            "AuthorizationHeaderMalformed", f"The authorization header is malformed; {detail}"
        )
    return _query_error(f"Error parsing the {parameter} parameter; {detail}")


def _query_error(message: str) -> S3Error:
    return S3Error("AuthorizationQueryParametersError", message)


def _unsupported_mechanism() -> S3Error:
    return S3Error(
        "InvalidRequest",
        f"The authorization mechanism you have provided is not supported. Please use {ALGORITHM}.",
    )
