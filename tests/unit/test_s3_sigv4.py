"""SigV4 verification accepts what real clients sign and refuses everything else.

Method: requests are signed by boto3/botocore (a real client, captured just
before it would send), by botocore's signers directly (for query strings no
client method builds), and by awscrt's signer (AWS's C implementation, an
independent second opinion); AWS's published examples pin the arithmetic. Each
refusal is a signed request with exactly one thing changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from awscrt import auth as crt_auth
from awscrt import http as crt_http
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from objfs.s3.errors import S3Error
from objfs.s3.sigv4 import (
    EMPTY_SHA256_HEX,
    STREAMING_SIGNED_PAYLOAD,
    STREAMING_UNSIGNED_PAYLOAD_TRAILER,
    UNSIGNED_PAYLOAD,
    HttpRequest,
    Identity,
    canonical_header_value,
    canonical_query,
    canonical_uri,
    signing_key,
    verify,
    verify_payload_hash,
)

ACCESS_KEY = "AKIDOBJFSTEST0001"
SECRET = "objfs/Secret+Key=0123456789abcdefghijklmn"
ENDPOINT = "http://objfs.test:9000"
SECRETS = {ACCESS_KEY: SECRET}

# AWS's published examples ("Signature Calculations for the Authorization Header",
# "Authenticating Requests: Using Query Parameters", "Transferring Payload in Multiple Chunks").
AWS_ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_NOW = datetime(2013, 5, 24, tzinfo=UTC)

KEYS = [
    "plain.txt",
    "dir/sub/file.txt",
    "with space",
    "a+b",
    "tilde~name",
    "100%",
    "percent%20literal",
    "a=b&c=d",
    "semi;colon:at@dollar$comma,",
    "!*'()",
    "question?hash#",
    "ünïcödé/ключ/日本語 テキスト",
    "emoji-🎉",
    "double//slash/",
    "trailing-slash/",
    "~",
]


class _Sent(Exception):
    """Raised from botocore's before-send hook to capture the signed request."""

    def __init__(self, request: Any) -> None:
        super().__init__("captured")
        self.request = request


def _text(value: str | bytes) -> str:
    """A header value as the server hands it over: the received bytes decoded as latin-1."""
    return value.decode("latin-1") if isinstance(value, bytes) else value


def http_request(method: str, url: str, headers: Any) -> HttpRequest:
    """What the server would see: raw path and query, lowercase header names, Host."""
    parts = urlsplit(url)
    lowered = {name.lower(): _text(value) for name, value in headers.items()}
    lowered.setdefault("host", parts.netloc)
    return HttpRequest(
        method=method, raw_path=parts.path, query_string=parts.query, headers=lowered
    )


def boto3_client(*, region: str = "us-east-1", endpoint: str = ENDPOINT, **s3: str) -> Any:
    """A boto3 S3 client that raises _Sent with the request instead of sending it."""
    config = Config(
        signature_version="s3v4",
        retries={"total_max_attempts": 1},
        s3={"addressing_style": "path", **s3},
    )
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
        config=config,
    )

    def stop(request: Any, **_: Any) -> None:
        raise _Sent(request)

    client.meta.events.register("before-send.s3.*", stop)
    return client


def captured(call: Callable[[], object]) -> HttpRequest:
    """The request a boto3 call signs."""
    with pytest.raises(_Sent) as sent:
        call()
    request = sent.value.request
    return http_request(request.method, request.url, request.headers)


def signed_at(request: HttpRequest) -> datetime:
    stamp = request.headers.get("x-amz-date")
    if stamp is None:
        query = dict(pair.split("=", 1) for pair in request.query_string.split("&"))
        stamp = query["X-Amz-Date"]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def check(request: HttpRequest, *, now: datetime | None = None) -> Identity:
    identity = verify(request, SECRETS.get, now=now or signed_at(request))
    assert identity is not None
    return identity


def refused(request: HttpRequest, code: str, *, now: datetime | None = None) -> S3Error:
    with pytest.raises(S3Error) as raised:
        verify(request, SECRETS.get, now=now or signed_at(request))
    assert raised.value.code == code, (raised.value.code, raised.value.message)
    return raised.value


def with_headers(request: HttpRequest, **changes: str | None) -> HttpRequest:
    headers = dict(request.headers)
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return dataclasses.replace(request, headers=headers)


def botocore_signed(
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    region: str = "us-east-1",
) -> HttpRequest:
    """A request signed by botocore's S3SigV4Auth, with the URL exactly as given."""
    request = AWSRequest(method=method, url=url, headers=headers or {}, data=body)
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET), "s3", region).add_auth(request)
    return http_request(method, request.url, request.headers)


def botocore_presigned(method: str, url: str, *, expires_s: int = 3600) -> HttpRequest:
    request = AWSRequest(method=method, url=url)
    S3SigV4QueryAuth(Credentials(ACCESS_KEY, SECRET), "s3", "us-east-1", expires_s).add_auth(
        request
    )
    return http_request(method, request.url, {})


def presigned(client_method: str, expires_s: int = 3600, **params: str) -> HttpRequest:
    url = boto3_client().generate_presigned_url(
        client_method, Params={"Bucket": "bucket", **params}, ExpiresIn=expires_s
    )
    return http_request("PUT" if client_method.startswith("put") else "GET", url, {})


@pytest.fixture
def put_request() -> HttpRequest:
    client = boto3_client()
    return captured(
        lambda: client.put_object(
            Bucket="bucket", Key="key", Body=b"hello", Metadata={"note": "first"}
        )
    )


# --- accepted: what real clients sign --------------------------------------------------------


def test_put_object_signed_by_boto3_yields_its_identity(put_request: HttpRequest) -> None:
    identity = check(put_request)
    stamp = put_request.headers["x-amz-date"]
    assert identity.access_key == ACCESS_KEY
    assert identity.payload_hash == hashlib.sha256(b"hello").hexdigest()
    assert identity.amz_date == stamp
    assert identity.scope == f"{stamp[:8]}/us-east-1/s3/aws4_request"
    assert identity.region == "us-east-1"
    assert identity.signing_key == signing_key(SECRET, stamp[:8], "us-east-1")
    assert identity.signature in put_request.headers["authorization"]
    assert "signing_key" not in repr(identity)


@pytest.mark.parametrize("key", KEYS)
def test_object_keys_with_awkward_characters_verify(key: str) -> None:
    client = boto3_client()
    check(captured(lambda: client.put_object(Bucket="bucket", Key=key, Body=b"x")))
    check(captured(lambda: client.get_object(Bucket="bucket", Key=key, Range="bytes=0-1")))
    check(captured(lambda: client.head_object(Bucket="bucket", Key=key)))


@pytest.mark.parametrize("key", ["with space", "ünïcödé/ключ", "a+b=c&d"])
def test_virtual_hosted_requests_verify(key: str) -> None:
    client = boto3_client(addressing_style="virtual")
    request = captured(lambda: client.get_object(Bucket="bucket", Key=key))
    assert request.headers["host"] == "bucket.objfs.test:9000"
    check(request)


@pytest.mark.parametrize(
    "prefix", ["", "a b", "a+b", "dir/", "ü/中", "100%", "x=y&z", "~tilde", "!*'()"]
)
def test_list_objects_query_parameters_verify(prefix: str) -> None:
    client = boto3_client()
    request = captured(
        lambda: client.list_objects_v2(
            Bucket="bucket", Prefix=prefix, Delimiter="/", StartAfter=prefix + " after"
        )
    )
    check(request)


def test_response_overrides_and_version_ids_in_the_query_verify() -> None:
    client = boto3_client()
    request = captured(
        lambda: client.get_object(
            Bucket="bucket",
            Key="key",
            VersionId="3/L4kqtJl40Nr8X8gdRQBpUMLUo",
            ResponseContentType="text/plain; charset=utf-8",
            ResponseContentDisposition='attachment; filename="ü b.txt"',
        )
    )
    check(request)


@pytest.mark.parametrize(
    "query",
    [
        "acl",
        "uploads",
        "a=1&a=0&a=",
        "b=&a=&c",
        "tagging&versionId=abc",
        "x=~&z=%2B&w=%20",
        "list-type=2&prefix=a%2Fb&delimiter=%2F",
        "key=%E4%B8%AD%20%F0%9F%8E%89",
    ],
)
def test_query_strings_with_empty_and_repeated_parameters_verify(query: str) -> None:
    check(botocore_signed("GET", f"{ENDPOINT}/bucket?{query}"))


def test_upload_part_and_multipart_queries_verify() -> None:
    client = boto3_client()
    check(captured(lambda: client.create_multipart_upload(Bucket="bucket", Key="a b")))
    check(
        captured(
            lambda: client.upload_part(
                Bucket="bucket", Key="a b", UploadId="id+/=", PartNumber=3, Body=b"part"
            )
        )
    )
    check(captured(lambda: client.list_multipart_uploads(Bucket="bucket", Prefix="p q")))


def test_delete_objects_with_content_md5_and_xml_body_verify() -> None:
    client = boto3_client()
    request = captured(
        lambda: client.delete_objects(
            Bucket="bucket", Delete={"Objects": [{"Key": "a b"}, {"Key": "ü"}]}
        )
    )
    check(request)


@pytest.mark.parametrize("region", ["eu-central-1", "objfs-local", "us-west-2"])
def test_any_region_in_the_scope_is_accepted_and_recorded(region: str) -> None:
    client = boto3_client(region=region)
    identity = check(captured(lambda: client.head_bucket(Bucket="bucket")))
    assert identity.region == region
    assert identity.scope.split("/")[1:] == [region, "s3", "aws4_request"]


def test_https_streaming_upload_signs_the_unsigned_trailer_payload() -> None:
    import io

    client = boto3_client(endpoint="https://objfs.test:9443")
    request = captured(
        lambda: client.put_object(Bucket="bucket", Key="k", Body=io.BytesIO(b"abc" * 100))
    )
    identity = check(request)
    assert identity.payload_hash == STREAMING_UNSIGNED_PAYLOAD_TRAILER
    assert request.headers["x-amz-trailer"] == "x-amz-checksum-crc32"


def test_non_ascii_header_values_verify_as_the_bytes_sent() -> None:
    # botocore sends str headers as UTF-8; "à" is C3 A0, and A0 is no space in it.
    client = boto3_client()
    disposition = 'attachment; filename="ü à 日本.txt"'
    request = captured(
        lambda: client.put_object(
            Bucket="bucket", Key="k", Body=b"x", ContentDisposition=disposition
        )
    )
    assert request.headers["content-disposition"] == disposition.encode().decode("latin-1")
    check(request)


def test_header_values_are_trimmed_and_inner_whitespace_collapsed() -> None:
    request = botocore_signed(
        "PUT",
        f"{ENDPOINT}/bucket/key",
        {"x-amz-meta-note": "a   b \t c", "x-amz-meta-other": "x"},
    )
    # The HTTP server strips the ends; the inner runs reach the verifier as the client sent them.
    check(with_headers(request, x_amz_meta_note="a   b \t c"))
    check(with_headers(request, x_amz_meta_note="a b c"))


def test_repeated_headers_joined_with_commas_verify() -> None:
    request = AWSRequest(method="GET", url=f"{ENDPOINT}/bucket/key")
    request.headers["x-amz-meta-multi"] = "one"
    request.headers["x-amz-meta-multi"] = "two"  # HTTPHeaders appends: a repeated header
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET), "s3", "us-east-1").add_auth(request)
    assert request.headers.get_all("x-amz-meta-multi") == ["one", "two"]
    headers = {name.lower(): _text(value) for name, value in request.headers.items()}
    headers["x-amz-meta-multi"] = "one,two"
    check(http_request("GET", request.url, headers))


class _GmtDateAuth(S3SigV4Auth):  # type: ignore[misc]
    """botocore's signer, writing Date as RFC 7231 does ("GMT"), as browsers and curl send it."""

    def _set_necessary_date_headers(self, request: Any) -> None:
        stamp = datetime.strptime(request.context["timestamp"], "%Y%m%dT%H%M%SZ")
        request.headers["Date"] = stamp.strftime("%a, %d %b %Y %H:%M:%S GMT")


def _date_of(request: HttpRequest) -> datetime:
    return datetime.strptime(request.headers["date"][:25], "%a, %d %b %Y %H:%M:%S").replace(
        tzinfo=UTC
    )


def test_date_header_instead_of_x_amz_date_verifies() -> None:
    # botocore writes RFC 2822 with "-0000" when the request has a Date header.
    request = botocore_signed("GET", f"{ENDPOINT}/bucket/key", {"Date": "placeholder"})
    assert "x-amz-date" not in request.headers
    assert request.headers["date"].endswith("-0000")
    identity = check(request, now=_date_of(request))
    assert identity.amz_date == _date_of(request).strftime("%Y%m%dT%H%M%SZ")


def test_rfc_7231_date_header_verifies() -> None:
    signed = AWSRequest(method="GET", url=f"{ENDPOINT}/bucket/key")
    _GmtDateAuth(Credentials(ACCESS_KEY, SECRET), "s3", "us-east-1").add_auth(signed)
    request = http_request("GET", signed.url, signed.headers)
    assert request.headers["date"].endswith(" GMT")
    check(request, now=_date_of(request))
    refused(request, "RequestTimeTooSkewed", now=_date_of(request) + timedelta(hours=1))


def test_x_amz_date_wins_over_date(put_request: HttpRequest) -> None:
    check(with_headers(put_request, date="Mon, 01 Jan 1990 00:00:00 GMT"))


def test_unsigned_headers_may_change(put_request: HttpRequest) -> None:
    check(with_headers(put_request, user_agent="other", content_length="5", expect=None))


def test_anonymous_requests_yield_none() -> None:
    now = datetime.now(UTC)
    for query in ["", "list-type=2&prefix=a", "acl", "X-Amz-Expires=10"]:
        request = HttpRequest("GET", "/bucket/key", query, {"host": "objfs.test"})
        assert verify(request, SECRETS.get, now=now) is None


# --- presigned URLs --------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_presigned_get_and_put_verify(key: str) -> None:
    for method in ("get_object", "put_object"):
        identity = check(presigned(method, Key=key))
        assert identity.payload_hash == UNSIGNED_PAYLOAD


def test_presigned_url_with_response_overrides_verifies() -> None:
    request = presigned(
        "get_object", Key="a b", ResponseContentDisposition="attachment; filename=ü.txt"
    )
    check(request)


def test_presigned_url_is_valid_until_it_expires() -> None:
    request = presigned("get_object", expires_s=600, Key="k")
    start = signed_at(request)
    check(request, now=start + timedelta(seconds=600))
    error = refused(request, "AccessDenied", now=start + timedelta(seconds=601))
    assert error.message == "Request has expired"
    assert error.extra["X-Amz-Expires"] == "600"


def test_presigned_url_dated_in_the_future_is_not_valid_yet() -> None:
    request = presigned("get_object", Key="k")
    start = signed_at(request)
    check(request, now=start - timedelta(seconds=900))
    error = refused(request, "AccessDenied", now=start - timedelta(seconds=901))
    assert error.message == "Request is not valid yet"


@pytest.mark.parametrize("expires_s", [1, 604800])
def test_presigned_expiry_limits_are_accepted(expires_s: int) -> None:
    check(botocore_presigned("GET", f"{ENDPOINT}/bucket/key", expires_s=expires_s))


@pytest.mark.parametrize("expires", ["0", "604801", "-5", "abc", "1.5", ""])
def test_presigned_expiry_outside_one_second_to_a_week_is_refused(expires: str) -> None:
    request = botocore_presigned("GET", f"{ENDPOINT}/bucket/key", expires_s=3600)
    query = request.query_string.replace("X-Amz-Expires=3600", f"X-Amz-Expires={expires}")
    refused(dataclasses.replace(request, query_string=query), "AuthorizationQueryParametersError")


@pytest.mark.parametrize(
    ("edit", "code"),
    [
        (lambda q: q.replace("response-content-type=text", "response-content-type=txt"), "Sig"),
        (lambda q: q + "&extra=1", "Sig"),
        (lambda q: q.replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=range"), "Query"),
        (lambda q: "&".join(p for p in q.split("&") if "X-Amz-Date" not in p), "Query"),
        (lambda q: q.replace("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=AWS4"), "Query"),
        (lambda q: q.replace("%2Fs3%2F", "%2Fec2%2F"), "Query"),
        (lambda q: q.replace("aws4_request", "aws5_request"), "Query"),
        (lambda q: q.replace("X-Amz-Date=2", "X-Amz-Date=x"), "Query"),
        (lambda q: q + "&X-Amz-Signature=" + "0" * 64, "Query"),
        (lambda q: q.replace("X-Amz-Credential=" + ACCESS_KEY, "X-Amz-Credential=NOPE"), "Key"),
    ],
)
def test_presigned_url_changes_are_refused(edit: Callable[[str], str], code: str) -> None:
    request = presigned("get_object", Key="k", ResponseContentType="text/plain")
    codes = {
        "Sig": "SignatureDoesNotMatch",
        "Query": "AuthorizationQueryParametersError",
        "Key": "InvalidAccessKeyId",
    }
    changed = dataclasses.replace(request, query_string=edit(request.query_string))
    refused(changed, codes[code], now=signed_at(request))


def test_presigned_url_with_an_authorization_header_is_two_mechanisms() -> None:
    request = presigned("get_object", Key="k")
    error = refused(with_headers(request, authorization="AWS4-HMAC-SHA256 x"), "InvalidArgument")
    assert error.extra["ArgumentName"] == "Authorization"


def test_signature_version_2_is_not_supported() -> None:
    client = boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
        config=Config(signature_version="s3"),
    )
    url = client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"})
    refused(http_request("GET", url, {}), "InvalidRequest", now=datetime.now(UTC))
    header_v2 = HttpRequest("GET", "/b/k", "", {"host": "h", "authorization": "AWS AK:c2ln"})
    refused(header_v2, "InvalidRequest", now=datetime.now(UTC))


# --- refused: one change to a signed request -------------------------------------------------


def test_tampered_signed_header_is_refused(put_request: HttpRequest) -> None:
    error = refused(with_headers(put_request, x_amz_meta_note="second"), "SignatureDoesNotMatch")
    assert "x-amz-meta-note:second" in error.extra["CanonicalRequest"]
    assert error.extra["AWSAccessKeyId"] == ACCESS_KEY


@pytest.mark.parametrize(
    "change",
    [
        lambda r: dataclasses.replace(r, method="POST"),
        lambda r: dataclasses.replace(r, raw_path="/bucket/key2"),
        lambda r: dataclasses.replace(r, raw_path="/bucket/Key"),
        lambda r: dataclasses.replace(r, query_string="acl"),
    ],
)
def test_tampered_method_path_or_query_is_refused(
    put_request: HttpRequest, change: Callable[[HttpRequest], HttpRequest]
) -> None:
    refused(change(put_request), "SignatureDoesNotMatch")


def test_tampered_payload_hash_is_refused(put_request: HttpRequest) -> None:
    other = hashlib.sha256(b"other").hexdigest()
    refused(with_headers(put_request, x_amz_content_sha256=other), "SignatureDoesNotMatch")


def test_tampered_signature_is_refused(put_request: HttpRequest) -> None:
    authorization = put_request.headers["authorization"]
    for signature in ["0" * 64, "", "zz", "é" * 64, authorization[-64:].upper()]:
        changed = authorization[:-64] + signature
        refused(with_headers(put_request, authorization=changed), "SignatureDoesNotMatch")


def test_wrong_secret_is_refused(put_request: HttpRequest) -> None:
    with pytest.raises(S3Error) as raised:
        verify(put_request, {ACCESS_KEY: SECRET + "x"}.get, now=signed_at(put_request))
    assert raised.value.code == "SignatureDoesNotMatch"
    assert raised.value.status == 403


def test_unknown_access_key_is_refused(put_request: HttpRequest) -> None:
    with pytest.raises(S3Error) as raised:
        verify(put_request, lambda _: None, now=signed_at(put_request))
    assert raised.value.code == "InvalidAccessKeyId"
    assert raised.value.extra["AWSAccessKeyId"] == ACCESS_KEY


@pytest.mark.parametrize("skew_s", [-901, 901, 3600, -86400])
def test_request_time_too_far_from_now_is_refused(put_request: HttpRequest, skew_s: int) -> None:
    now = signed_at(put_request) + timedelta(seconds=skew_s)
    error = refused(put_request, "RequestTimeTooSkewed", now=now)
    assert error.extra["MaxAllowedSkewMilliseconds"] == "900000"


@pytest.mark.parametrize("skew_s", [-900, 0, 900])
def test_request_time_within_the_skew_is_accepted(put_request: HttpRequest, skew_s: int) -> None:
    check(put_request, now=signed_at(put_request) + timedelta(seconds=skew_s))


def test_max_skew_is_a_parameter(put_request: HttpRequest) -> None:
    now = signed_at(put_request) + timedelta(seconds=61)
    with pytest.raises(S3Error, match="too large"):
        verify(put_request, SECRETS.get, now=now, max_skew_s=60)


def _drop_component(authorization: str, name: str) -> str:
    algorithm, _, rest = authorization.partition(" ")
    kept = [part for part in rest.split(", ") if not part.startswith(name + "=")]
    return algorithm + " " + ", ".join(kept)


_MALFORMED = "AuthorizationHeaderMalformed"
# (case, edit of the Authorization value, expected code)
AUTHORIZATION_EDITS: list[tuple[str, Callable[[str], str], str]] = [
    ("no SignedHeaders", lambda a: a.replace("SignedHeaders=", "Signed="), _MALFORMED),
    ("SignedHeaders dropped", lambda a: _drop_component(a, "SignedHeaders"), _MALFORMED),
    ("Signature dropped", lambda a: _drop_component(a, "Signature"), _MALFORMED),
    ("credential of 4 parts", lambda a: a.replace("/s3/", "/"), _MALFORMED),
    ("service ec2", lambda a: a.replace("/s3/", "/ec2/"), _MALFORMED),
    ("terminator", lambda a: a.replace("aws4_request", "aws5_request"), _MALFORMED),
    ("credential date", lambda a: a.replace(f"{ACCESS_KEY}/2", f"{ACCESS_KEY}/1"), _MALFORMED),
    ("empty access key", lambda a: a.replace(f"={ACCESS_KEY}/", "=/"), _MALFORMED),
    ("host not signed", lambda a: a.replace("SignedHeaders=host;", "SignedHeaders="), _MALFORMED),
    ("upper-case header", lambda a: a.replace(";x-amz-date", ";X-Amz-Date"), _MALFORMED),
    ("empty header name", lambda a: a.replace("host;", "host;;"), _MALFORMED),
    ("duplicate component", lambda a: a + ", Signature=" + "0" * 64, _MALFORMED),
    ("component without =", lambda a: a + ", junk", _MALFORMED),
    ("no components", lambda a: "AWS4-HMAC-SHA256", _MALFORMED),
    ("sigv4a", lambda a: a.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"), "InvalidRequest"),
    ("bearer", lambda a: "Bearer abc", "InvalidArgument"),
]


@pytest.mark.parametrize(
    ("edit", "code"),
    [pytest.param(edit, code, id=name) for name, edit, code in AUTHORIZATION_EDITS],
)
def test_malformed_authorization_header_is_refused(
    put_request: HttpRequest, edit: Callable[[str], str], code: str
) -> None:
    authorization = edit(put_request.headers["authorization"])
    refused(with_headers(put_request, authorization=authorization), code)


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"x_amz_date": None}, "AccessDenied"),
        ({"x_amz_date": "2026-01-01T00:00:00Z"}, "AccessDenied"),
        ({"x_amz_date": "20261301T000000Z"}, "AccessDenied"),
        ({"x_amz_date": None, "date": "yesterday"}, "AccessDenied"),
        ({"x_amz_content_sha256": None}, "InvalidRequest"),
        ({"x_amz_content_sha256": "abc"}, "InvalidArgument"),
        ({"x_amz_content_sha256": "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"}, "InvalidArgument"),
    ],
)
def test_bad_date_or_payload_hash_header_is_refused(
    put_request: HttpRequest, changes: dict[str, str | None], code: str
) -> None:
    refused(with_headers(put_request, **changes), code, now=signed_at(put_request))


def test_naive_now_is_a_caller_bug(put_request: HttpRequest) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(put_request, SECRETS.get, now=datetime.now())


# --- AWS's published examples and awscrt's signer --------------------------------------------


def test_aws_example_get_object_with_range_verifies() -> None:
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={AWS_ACCESS_KEY}/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    headers = {
        "host": "examplebucket.s3.amazonaws.com",
        "range": "bytes=0-9",
        "x-amz-content-sha256": EMPTY_SHA256_HEX,
        "x-amz-date": "20130524T000000Z",
        "authorization": authorization,
    }
    request = HttpRequest("GET", "/test.txt", "", headers)
    identity = verify(request, {AWS_ACCESS_KEY: AWS_SECRET}.get, now=AWS_NOW)
    assert identity is not None and identity.scope == "20130524/us-east-1/s3/aws4_request"


def test_aws_example_presigned_url_verifies() -> None:
    query = (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={AWS_ACCESS_KEY}%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )
    request = HttpRequest("GET", "/test.txt", query, {"host": "examplebucket.s3.amazonaws.com"})
    identity = verify(request, {AWS_ACCESS_KEY: AWS_SECRET}.get, now=AWS_NOW)
    assert identity is not None and identity.payload_hash == UNSIGNED_PAYLOAD
    with pytest.raises(S3Error, match="expired"):
        verify(
            request, {AWS_ACCESS_KEY: AWS_SECRET}.get, now=AWS_NOW + timedelta(days=1, seconds=1)
        )


def test_aws_example_streaming_seed_signature_verifies() -> None:
    headers = {
        "host": "s3.amazonaws.com",
        "x-amz-date": "20130524T000000Z",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "x-amz-content-sha256": STREAMING_SIGNED_PAYLOAD,
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": "66560",
        "content-length": "66824",
        "authorization": (
            f"AWS4-HMAC-SHA256 Credential={AWS_ACCESS_KEY}/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
            "x-amz-decoded-content-length;x-amz-storage-class, "
            "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
        ),
    }
    request = HttpRequest("PUT", "/examplebucket/chunkObject.txt", "", headers)
    identity = verify(request, {AWS_ACCESS_KEY: AWS_SECRET}.get, now=AWS_NOW)
    assert identity is not None
    assert identity.payload_hash == STREAMING_SIGNED_PAYLOAD
    assert identity.signature == "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"


def crt_signed(path_and_query: str, *, query_auth: bool, payload_hash: str) -> HttpRequest:
    """Sign with awscrt (aws-c-auth): S3 settings, no double encoding, no path normalization."""
    when = datetime.now(UTC).replace(microsecond=0)
    headers = crt_http.HttpHeaders([("Host", "objfs.test:9000"), ("X-Amz-Meta-K", " v  w ")])
    request = crt_http.HttpRequest("PUT", path_and_query, headers)
    config = crt_auth.AwsSigningConfig(
        algorithm=crt_auth.AwsSigningAlgorithm.V4,
        signature_type=(
            crt_auth.AwsSignatureType.HTTP_REQUEST_QUERY_PARAMS
            if query_auth
            else crt_auth.AwsSignatureType.HTTP_REQUEST_HEADERS
        ),
        credentials_provider=crt_auth.AwsCredentialsProvider.new_static(ACCESS_KEY, SECRET),
        region="us-east-1",
        service="s3",
        date=when,
        use_double_uri_encode=False,
        should_normalize_uri_path=False,
        signed_body_value=payload_hash,
        signed_body_header_type=(
            crt_auth.AwsSignedBodyHeaderType.NONE
            if query_auth
            else crt_auth.AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256
        ),
        expiration_in_seconds=900 if query_auth else None,
    )
    crt_auth.aws_sign_request(request, config).result(timeout=10)
    return http_request("PUT", "http://objfs.test:9000" + request.path, dict(request.headers))


@pytest.mark.parametrize(
    "path_and_query",
    [
        "/bucket/plain",
        "/bucket/with%20space/%C3%BC%E4%B8%AD?uploadId=a%2Bb&partNumber=2",
        "/bucket/a%2Bb~c%25d%3De?acl",
        "/bucket/dir//x/?list-type=2&prefix=&delimiter=%2F",
    ],
)
@pytest.mark.parametrize("query_auth", [False, True])
def test_requests_signed_by_awscrt_verify(path_and_query: str, query_auth: bool) -> None:
    payload_hash = UNSIGNED_PAYLOAD if query_auth else hashlib.sha256(b"body").hexdigest()
    request = crt_signed(path_and_query, query_auth=query_auth, payload_hash=payload_hash)
    identity = check(request)
    assert identity.payload_hash == payload_hash


# --- the canonical forms ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_path", "canonical"),
    [
        ("", "/"),
        ("/", "/"),
        ("/b/a%20b", "/b/a%20b"),
        ("/b/%7e%7E~", "/b/~~~"),
        ("/b/a+b", "/b/a%2Bb"),
        ("/b/%c3%bc", "/b/%C3%BC"),
        ("/b/\xc3\xbc", "/b/%C3%BC"),  # raw UTF-8 bytes of "ü", decoded as latin-1
        ("/b/日本", "/b/%E6%97%A5%E6%9C%AC"),  # text beyond latin-1 is taken as UTF-8
        ("/b/a%2Fb/c", "/b/a%2Fb/c"),
        ("/b//x/", "/b//x/"),
        ("/b/!*'()", "/b/%21%2A%27%28%29"),
        ("/b/100%", "/b/100%25"),
        ("/b/./../x", "/b/./../x"),
    ],
)
def test_canonical_uri_encodes_each_segment_once(raw_path: str, canonical: str) -> None:
    assert canonical_uri(raw_path) == canonical


@pytest.mark.parametrize(
    ("query", "canonical"),
    [
        ("", ""),
        ("acl", "acl="),
        ("b=2&a=1", "a=1&b=2"),
        ("a=2&a=1&a=", "a=&a=1&a=2"),
        ("a=x y", "a=x%20y"),
        ("a=%7e&b=+", "a=~&b=%2B"),
        ("&&a=1&", "a=1"),
        ("prefix=%c3%bc%2f", "prefix=%C3%BC%2F"),
        ("Z=1&a=1", "Z=1&a=1"),
        ("X-Amz-Signature=s&k=v", "k=v"),
    ],
)
def test_canonical_query_sorts_and_encodes(query: str, canonical: str) -> None:
    assert canonical_query(query, exclude="X-Amz-Signature") == canonical


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("  a   b \t c  ", "a b c"),
        ("a\x0b\x0cb", "a b"),
        ("\xc3\xa0 x", "\xc3\xa0 x"),  # "à" as latin-1 decoded UTF-8: A0 is not a space
        ("\x85a", "\x85a"),
        ("", ""),
    ],
)
def test_canonical_header_values_collapse_ascii_whitespace_only(value: str, canonical: str) -> None:
    assert canonical_header_value(value) == canonical


# --- verify_payload_hash ---------------------------------------------------------------------


def _identity(payload_hash: str) -> Identity:
    return Identity(ACCESS_KEY, payload_hash, "0" * 64, b"k", "20260101/r/s3/aws4_request", "x")


def test_payload_hash_matching_the_body_passes() -> None:
    digest = hashlib.sha256(b"body").hexdigest()
    verify_payload_hash(_identity(digest), digest)
    verify_payload_hash(_identity(digest.upper()), digest)


def test_payload_hash_not_matching_the_body_is_refused() -> None:
    claimed = hashlib.sha256(b"body").hexdigest()
    computed = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(S3Error) as raised:
        verify_payload_hash(_identity(claimed), computed)
    assert raised.value.code == "XAmzContentSHA256Mismatch"
    assert raised.value.extra == {
        "ClientComputedContentSHA256": claimed,
        "S3ComputedContentSHA256": computed,
    }


@pytest.mark.parametrize(
    "payload_hash", [UNSIGNED_PAYLOAD, STREAMING_SIGNED_PAYLOAD, STREAMING_UNSIGNED_PAYLOAD_TRAILER]
)
def test_unsigned_and_streaming_payloads_have_no_body_hash(payload_hash: str) -> None:
    verify_payload_hash(_identity(payload_hash), EMPTY_SHA256_HEX)
