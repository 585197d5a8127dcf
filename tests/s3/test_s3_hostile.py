"""Hostile and malformed requests against a real node: no 5xx, no hang, no dead server.

Goal: whatever a client sends (broken or explosive XML, odd ranges, oversized or
malformed request heads, bad bucket names and keys, bodies cut short or framed
wrong, broken aws-chunked bodies, forged or stale signatures, unknown methods,
random requests), the node gives the right AWS error: the status, and the Code
in an XML body whose RequestId equals the x-amz-request-id header. It stores
nothing it refused, and it keeps serving.

Method: one node per module (s3_node.py). Requests are raw bytes written to a
socket, so the test controls every byte. A request that has to pass
authentication to reach the check under test is first signed with botocore's
S3SigV4Auth over an AWSRequest (root credentials), then broken in exactly one
way. Replies are read with a hard timeout: no answer in time counts as a hang.
A request that hypercorn refuses before the app sees it gets a bodiless
400/431/501 with `Connection: close`. Such a reply cannot carry a request id,
and it is the only exception to the request-id rule.

Eight bugs these tests found (invalid UTF-8 in the path, werkzeug's own 404/405,
non-ASCII digits, XML bodies not checked against the signed payload hash,
anonymous CreateMultipartUpload, a target without a path, oversized headers) are
fixed; the fuzz test now draws from those inputs too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import re
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from urllib.parse import quote

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from s3_node import ROOT_KEY, ROOT_SECRET, Node

MiB = 1024 * 1024
REPLY_TIMEOUT_S = 10.0  # no answer within this time counts as a hang
REGION = "us-east-1"
BUCKET = "hostile"
DATA_KEY = "data"
DATA = random.Random(1).randbytes(1000)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


# -- raw HTTP -------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lowercase names; a repeated header's values joined with ","
    body: bytes

    @property
    def refused_by_http_server(self) -> bool:
        """Whether hypercorn refused the request before the app saw it.

        Such a reply is bodiless, has no request id and closes the connection: 400 for
        bad framing, 431 for an oversized head, and 501 for a Transfer-Encoding other
        than chunked (AWS's own answer there is a 501 NotImplemented).
        """
        return (
            self.status in (400, 431, 501)
            and "x-amz-request-id" not in self.headers
            and self.headers.get("connection", "").lower() == "close"
            and not self.body
        )


class Wire:
    """One connection to the node: raw bytes go out, HTTP/1.1 replies come in, and
    nothing waits longer than REPLY_TIMEOUT_S."""

    def __init__(self, node: Node) -> None:
        host, _, port = host_of(node).rpartition(":")
        self._socket = socket.create_connection((host, int(port)), timeout=REPLY_TIMEOUT_S)
        self._buffer = b""
        self._ended = False

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        """Send `data`. A server that has already answered and closed may refuse the rest."""
        try:
            self._socket.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def close(self) -> None:
        self._socket.close()

    def shut_write(self) -> None:
        """Tell the server that no more bytes will come (half-close)."""
        self._socket.shutdown(socket.SHUT_WR)

    def reply(self, *, head: bool = False) -> Reply | None:
        """The next final reply (1xx ones are skipped), or None if the server closed
        the connection without one. `head`: the reply to a HEAD has no body."""
        while True:
            while b"\r\n\r\n" not in self._buffer:
                if not self._receive():
                    assert not self._buffer, f"a reply cut off in its head: {self._buffer!r:.300}"
                    return None
            head_bytes, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
            status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
            version, _, rest = status_line.partition(" ")
            assert version.startswith("HTTP/1."), f"not an HTTP/1.x reply: {status_line!r}"
            status = int(rest.split(" ", 1)[0])
            if status >= 200:
                break
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        if head or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._chunked_body()
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        else:
            while self._receive():
                pass
            body, self._buffer = self._buffer, b""
        return Reply(status, headers, body)

    def closed_by_server(self) -> bool:
        """Whether the server has closed the connection, or closes it within the
        timeout. Call this only when a close is due; otherwise it waits out the timeout."""
        return not self._buffer and not self._receive()

    def _receive(self) -> bool:
        """Read more bytes into the buffer. Returns False at the end of the stream."""
        if self._ended:
            return False
        try:
            data = self._socket.recv(65536)
        except TimeoutError:
            pytest.fail(f"no reply within {REPLY_TIMEOUT_S} s: the server hangs")
        except ConnectionResetError:
            data = b""
        if not data:
            self._ended = True
            return False
        self._buffer += data
        return True

    def _take(self, size_bytes: int) -> bytes:
        while len(self._buffer) < size_bytes:
            if not self._receive():
                pytest.fail(f"the reply body ended {size_bytes - len(self._buffer)} bytes early")
        data, self._buffer = self._buffer[:size_bytes], self._buffer[size_bytes:]
        return data

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            if not self._receive():
                pytest.fail("a chunked reply body ended inside a line")
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def _chunked_body(self) -> bytes:
        parts = []
        while size_bytes := int(self._line().split(b";")[0], 16):
            parts.append(self._take(size_bytes))
            assert self._take(2) == b"\r\n"
        while self._line():  # trailers, up to the empty line
            pass
        return b"".join(parts)


def exchange(node: Node, request: bytes, *, head: bool = False) -> Reply | None:
    """Send one request on a new connection and return its reply (None: closed unanswered)."""
    with Wire(node) as wire:
        wire.send(request)
        return wire.reply(head=head)


def raw_request(method: str, target: str, headers: Mapping[str, str], body: bytes = b"") -> bytes:
    """The bytes of a request, exactly as given. Header values are sent as UTF-8,
    which gives the bytes botocore hashes when it signs them."""
    lines = [f"{method} {target} HTTP/1.1", *(f"{n}: {v}" for n, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("utf-8") + body


def host_of(node: Node) -> str:
    return node.endpoint.removeprefix("http://")


# -- SigV4 ----------------------------------------------------------------------------


class _Signer(S3SigV4Auth):  # type: ignore[misc]  # botocore has no type hints
    """S3SigV4Auth with a chosen x-amz-content-sha256 (UNSIGNED-PAYLOAD, STREAMING-...)."""

    def __init__(self, credentials: Any, payload_hash: str | None) -> None:
        super().__init__(credentials, "s3", REGION)
        self._payload_hash = payload_hash

    def payload(self, request: Any) -> str:
        if self._payload_hash is not None:
            return self._payload_hash
        return str(super().payload(request))


def sign(
    node: Node,
    method: str,
    target: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    payload_hash: str | None = None,
    access_key: str = ROOT_KEY,
    secret_key: str = ROOT_SECRET,
    at: datetime | None = None,
) -> dict[str, str]:
    """The headers of a SigV4-signed `method target`, as botocore signs them.

    They are Host, X-Amz-Date, X-Amz-Content-SHA256 (sha256 of `body` unless
    `payload_hash` is given), every header in `headers` (all of them signed), and
    Authorization. `at` (UTC) dates the signature. `target` is the path and query as
    they will be sent, already percent-encoded in AWS's canonical form.
    """
    request = AWSRequest(
        method=method,
        url=node.endpoint + target,
        data=body,
        headers={"Host": host_of(node), **(headers or {})},
    )
    signer = _Signer(Credentials(access_key, secret_key), payload_hash)
    if at is None:
        signer.add_auth(request)
    else:
        naive_utc = at.astimezone(UTC).replace(tzinfo=None)  # what botocore's clock returns
        with mock.patch("botocore.auth.get_current_datetime", return_value=naive_utc):
            signer.add_auth(request)
    return {str(name): str(value) for name, value in request.headers.items()}


def signed_request(
    node: Node,
    method: str,
    target: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    payload_hash: str | None = None,
    content_length: int | None = None,
    unsigned_headers: Mapping[str, str] | None = None,
    access_key: str = ROOT_KEY,
    secret_key: str = ROOT_SECRET,
    at: datetime | None = None,
) -> bytes:
    """The bytes of a signed request (see `sign`).

    Content-Length is not signed. It is len(body) unless `content_length` is given,
    and it is left out of a bodiless GET/HEAD/DELETE. `unsigned_headers` are added
    after signing.
    """
    all_headers = sign(
        node,
        method,
        target,
        headers=headers,
        body=body,
        payload_hash=payload_hash,
        access_key=access_key,
        secret_key=secret_key,
        at=at,
    )
    length = len(body) if content_length is None else content_length
    if length or method in ("PUT", "POST"):
        all_headers["Content-Length"] = str(length)
    all_headers.update(unsigned_headers or {})
    return raw_request(method, target, all_headers, body)


def start_slow_put(node: Node, target: str, body: bytes, headers: dict[str, str]) -> Wire:
    """A signed PUT whose head and first half of the body are sent; the rest is not yet."""
    signed = sign(node, "PUT", target, headers=headers, payload_hash=UNSIGNED)
    signed["Content-Length"] = str(len(body))
    wire = Wire(node)
    wire.send(raw_request("PUT", target, signed, body[: len(body) // 2]))
    time.sleep(0.3)  # the handler is streaming the body by now
    return wire


def signing_key(secret_key: str, date: str) -> bytes:
    """SigV4's kSigning, derived as the AWS documentation gives it (independent of objfs)."""
    key = ("AWS4" + secret_key).encode()
    for part in (date, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def md5_base64(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


# -- what every answer must be ------------------------------------------------------------


def request_id(reply: Reply) -> str:
    value = reply.headers.get("x-amz-request-id", "")
    assert value.isascii() and value.isalnum(), f"no x-amz-request-id in {reply}"
    return value


def error_code(reply: Reply) -> str:
    """The Code of an error reply. The body must be XML <Error> with Code and a
    RequestId equal to the x-amz-request-id header."""
    identifier = request_id(reply)
    try:
        root = ET.fromstring(reply.body)
    except ET.ParseError as exc:
        pytest.fail(f"the error body is not XML ({exc}): {reply.body!r:.300}")
    assert root.tag == "Error", reply.body[:300]
    code = root.findtext("Code")
    assert code, f"no <Code> in {reply.body!r:.300}"
    assert root.findtext("RequestId") == identifier, reply.body[:300]
    return code


def assert_error(reply: Reply | None, status: int | tuple[int, ...], *codes: str) -> str:
    """The reply is an S3 error with this status and one of these codes."""
    assert reply is not None, "the server closed the connection without an answer"
    statuses = status if isinstance(status, tuple) else (status,)
    assert reply.status in statuses, f"{reply.status}: {reply.body!r:.400}"
    code = error_code(reply)
    assert code in codes, f"{code} is not one of {codes}: {reply.body!r:.400}"
    return code


def assert_ok(reply: Reply | None, status: int = 200) -> Reply:
    assert reply is not None, "the server closed the connection without an answer"
    assert reply.status == status, f"{reply.status}: {reply.body!r:.400}"
    request_id(reply)
    return reply


def assert_no_server_failure(reply: Reply | None, *, head: bool = False) -> None:
    """A refusal, a closed connection, or an app answer with a request id, below 500
    (except 501 NotImplemented, which is AWS's answer for what it does not do)."""
    if reply is None or reply.refused_by_http_server:
        return
    request_id(reply)
    if reply.status >= 400 and not head:
        code = error_code(reply)
        assert reply.status < 500 or (reply.status, code) == (501, "NotImplemented"), (
            f"{reply.status} {code}: {reply.body!r:.400}"
        )
    assert reply.status < 500 or reply.status == 501, f"{reply.status} {reply.headers}"


def assert_still_serving(node: Node) -> None:
    """The node thread lives, and a well-formed request gets the seeded object back intact."""
    assert node.thread.is_alive() and not node.errors, node.errors
    reply = assert_ok(exchange(node, signed_request(node, "GET", f"/{BUCKET}/{DATA_KEY}")))
    assert reply.body == DATA


@pytest.fixture(scope="module")
def root_s3(node: Node) -> Any:
    """One boto3 client for the module: making a client costs tens of milliseconds."""
    return node.client()


@pytest.fixture(scope="module")
def bucket(node: Node, root_s3: Any) -> str:
    """The bucket BUCKET holding DATA at DATA_KEY, which every test reads back at its end."""
    root_s3.create_bucket(Bucket=BUCKET)
    root_s3.put_object(Bucket=BUCKET, Key=DATA_KEY, Body=DATA)
    return BUCKET


def make_bucket(root_s3: Any, name: str) -> str:
    try:
        root_s3.create_bucket(Bucket=name)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
    return name


def keys_in(root_s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in root_s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


# -- XML bodies -----------------------------------------------------------------------

_XML_OPERATIONS = {  # operation -> (method, target, root element, a child holding "{}")
    "DeleteObjects": ("POST", f"/{BUCKET}?delete", "Delete", "<Object><Key>{}</Key></Object>"),
    "PutBucketVersioning": (
        "PUT",
        f"/{BUCKET}?versioning",
        "VersioningConfiguration",
        "<Status>{}</Status>",
    ),
    "CreateBucket": (
        "PUT",
        "/hostile-made-by-xml",
        "CreateBucketConfiguration",
        "<LocationConstraint>{}</LocationConstraint>",
    ),
}


def _hostile_xml(kind: str, root: str, child: str) -> bytes:
    if kind == "not-xml":
        return b"this is {not} <xml at all"
    if kind == "billion-laughs":  # lol9 would expand to 10**9 "lol"s
        entities = '<!ENTITY lol0 "lol">' + "".join(
            f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
        )
        document = f"<!DOCTYPE {root} [{entities}]><{root}>{child.format('&lol9;')}</{root}>"
        return f'<?xml version="1.0"?>{document}'.encode()
    if kind == "external-entity":
        dtd = f'<!DOCTYPE {root} [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        return f'<?xml version="1.0"?>{dtd}<{root}>{child.format("&xxe;")}</{root}>'.encode()
    if kind == "wrong-root":
        return f"<Wrong>{child.format('data')}</Wrong>".encode()
    if kind == "truncated":
        return f"<{root}>{child.format('data')}</{root}>".encode()[:-3]
    assert kind == "2MiB"
    return f"<{root}>{child.format('x' * 2 * MiB)}</{root}>".encode()


@pytest.mark.parametrize(
    "kind", ["not-xml", "billion-laughs", "external-entity", "wrong-root", "truncated", "2MiB"]
)
@pytest.mark.parametrize("operation", list(_XML_OPERATIONS))
def test_hostile_xml_body_is_refused_and_changes_nothing(
    node: Node, bucket: str, root_s3: Any, operation: str, kind: str
) -> None:
    method, target, root, child = _XML_OPERATIONS[operation]
    body = _hostile_xml(kind, root, child)
    headers = {"Content-MD5": md5_base64(body)} if operation == "DeleteObjects" else {}
    started = time.monotonic()
    reply = exchange(node, signed_request(node, method, target, headers=headers, body=body))
    expected = "MaxMessageLengthExceeded" if kind == "2MiB" else "MalformedXML"
    assert_error(reply, 400, expected)
    assert reply is not None and b"root:" not in reply.body  # /etc/passwd was never read
    assert time.monotonic() - started < 5, "the body was expanded or parsed at length"
    assert root_s3.head_object(Bucket=bucket, Key=DATA_KEY)["ContentLength"] == len(DATA)
    assert "Status" not in root_s3.get_bucket_versioning(Bucket=bucket)
    assert "hostile-made-by-xml" not in [b["Name"] for b in root_s3.list_buckets()["Buckets"]]
    assert_still_serving(node)


@pytest.mark.parametrize("operation", ["PutBucketVersioning", "DeleteObjects"])
def test_xml_body_changed_after_signing_is_refused(
    node: Node, bucket: str, root_s3: Any, operation: str
) -> None:
    target_bucket = make_bucket(root_s3, f"hostile-tamper-{operation.lower()}")
    root_s3.put_object(Bucket=target_bucket, Key="victim", Body=b"keep me")
    if operation == "PutBucketVersioning":
        target = f"/{target_bucket}?versioning"
        signed_body = b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>"
        sent_body = b"<VersioningConfiguration><Status>Suspended</Status></VersioningConfiguration>"
        method, extra = "PUT", {}
    else:
        target = f"/{target_bucket}?delete"
        signed_body = b"<Delete><Object><Key>decoy</Key></Object></Delete>"
        sent_body = b"<Delete><Object><Key>victim</Key></Object></Delete>"
        method, extra = "POST", {"Content-MD5": md5_base64(sent_body)}
    headers = sign(node, method, target, body=signed_body)
    request = raw_request(
        method, target, {**headers, **extra, "Content-Length": str(len(sent_body))}, sent_body
    )
    assert_error(exchange(node, request), 400, "XAmzContentSHA256Mismatch")
    assert "Status" not in root_s3.get_bucket_versioning(Bucket=target_bucket)
    assert keys_in(root_s3, target_bucket) == ["victim"]
    assert_still_serving(node)


# -- Range ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "bytes=abc",
        "bytes=5-2",
        "bytes=0-1,5-6",
        "bytes=",
        "bytes=-",
        "bytes=1-2-3",
        "bytes=0x10-0x20",
        "bytes=+1-2",
        "items=0-9",
        "bytes 0-9",
    ],
)
def test_range_that_s3_ignores_gives_the_whole_object(node: Node, bucket: str, header: str) -> None:
    request = signed_request(node, "GET", f"/{bucket}/{DATA_KEY}", headers={"Range": header})
    reply = assert_ok(exchange(node, request), 200)
    assert reply.body == DATA
    assert "content-range" not in reply.headers
    assert_still_serving(node)


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 1),
        ("bytes=999-", 999, 1000),
        ("bytes=990-5000", 990, 1000),
        ("bytes=-5000", 0, 1000),
        ("bytes=0-99999999999999999999999", 0, 1000),
    ],
)
def test_range_inside_or_overlapping_the_object_is_served(
    node: Node, bucket: str, header: str, start: int, end: int
) -> None:
    request = signed_request(node, "GET", f"/{bucket}/{DATA_KEY}", headers={"Range": header})
    reply = assert_ok(exchange(node, request), 206)
    assert reply.body == DATA[start:end]
    assert reply.headers["content-range"] == f"bytes {start}-{end - 1}/{len(DATA)}"
    assert_still_serving(node)


@pytest.mark.parametrize(
    "header",
    # bytes=-0 asks for the last zero bytes: its first byte would be byte 1000, past
    # the end. RFC 9110 14.1.1 calls a zero suffix unsatisfiable.
    ["bytes=1000-", "bytes=1000-1000", "bytes=5000-6000", "bytes=-0", "bytes=99999999999999999-"],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_range_starting_past_the_end_is_invalid_range(
    node: Node, bucket: str, method: str, header: str
) -> None:
    request = signed_request(node, method, f"/{bucket}/{DATA_KEY}", headers={"Range": header})
    reply = exchange(node, request, head=method == "HEAD")
    if method == "HEAD":
        assert reply is not None and reply.status == 416 and not reply.body
        request_id(reply)
    else:
        assert_error(reply, 416, "InvalidRange")
    assert_still_serving(node)


def _with_raw_header(request: bytes, name: bytes, value: bytes) -> bytes:
    """`request` with one more header, unsigned, whose value is sent byte for byte."""
    return request.replace(b"\r\n\r\n", b"\r\n" + name + b": " + value + b"\r\n\r\n", 1)


# Each number a client sends, given as "²" (latin-1 0xB2, or %C2%B2 in a query).
_SUPERSCRIPT_FIELDS = [
    "Range-start",
    "Range-end",
    "max-keys",
    "x-amz-decoded-content-length",
    "partNumber",
    "max-uploads",
    "max-parts",
    "part-number-marker",
    "x-amz-copy-source-range",
]


@pytest.mark.parametrize("field", _SUPERSCRIPT_FIELDS)
def test_latin1_superscript_digits_in_numbers_are_not_a_server_error(
    node: Node, bucket: str, root_s3: Any, field: str
) -> None:
    key = f"superscript-{field.lower()}"
    upload_id = root_s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    try:
        if field.startswith("Range"):
            request = signed_request(node, "GET", f"/{bucket}/{DATA_KEY}")
            value = b"bytes=\xb2-" if field == "Range-start" else b"bytes=0-\xb3"
            # Unsigned, so that the byte 0xB2 itself (not its UTF-8) reaches the parser.
            reply = assert_ok(exchange(node, _with_raw_header(request, b"Range", value)))
            assert reply.body == DATA  # a malformed range is ignored, as S3 does
        elif field == "x-amz-decoded-content-length":
            request = signed_request(
                node,
                "PUT",
                f"/{bucket}/{key}",
                headers={"Content-Encoding": "aws-chunked"},
                body=b"0\r\n\r\n",
                payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            )
            request = _with_raw_header(request, field.encode(), b"\xb2")
            assert_error(exchange(node, request), 400, "InvalidArgument")
        elif field == "x-amz-copy-source-range":
            target = f"/{bucket}/{key}?partNumber=1&uploadId={upload_id}"
            copy_source = {"x-amz-copy-source": f"{bucket}/{DATA_KEY}"}
            request = signed_request(node, "PUT", target, headers=copy_source)
            request = _with_raw_header(request, field.encode(), b"bytes=\xb2-5")
            assert_error(exchange(node, request), 400, "InvalidArgument")
        else:
            target = {
                "max-keys": f"/{bucket}?max-keys=%C2%B2",
                "partNumber": f"/{bucket}/{DATA_KEY}?partNumber=%C2%B2",
                "max-uploads": f"/{bucket}?max-uploads=%C2%B2&uploads",
                "max-parts": f"/{bucket}/{key}?max-parts=%C2%B2&uploadId={upload_id}",
                "part-number-marker": (
                    f"/{bucket}/{key}?part-number-marker=%C2%B2&uploadId={upload_id}"
                ),
            }[field]
            assert_error(
                exchange(node, signed_request(node, "GET", target)), 400, "InvalidArgument"
            )
        assert key not in keys_in(root_s3, bucket)
    finally:
        root_s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    assert_still_serving(node)


# -- request heads --------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"X-Big": "x" * MiB}, id="one-1MiB-header"),
        pytest.param({f"X-Many-{i:03d}": "v" * 300 for i in range(500)}, id="500-headers-150KiB"),
    ],
)
def test_head_over_the_server_buffer_is_refused_then_served(
    node: Node, bucket: str, extra: dict[str, str]
) -> None:
    request = signed_request(node, "GET", f"/{bucket}/{DATA_KEY}", unsigned_headers=extra)
    with Wire(node) as wire:
        wire.send(request)
        reply = wire.reply()
        if reply is not None:
            assert reply.refused_by_http_server and reply.status in (400, 431), reply
            assert wire.closed_by_server()
    assert_still_serving(node)


def test_500_small_headers_are_served_like_any_request(node: Node, bucket: str) -> None:
    """500 headers of 10 bytes make about 8 KB, which is within any server's limits.
    The right answer is the object."""
    extra = {f"X-Many-{i:03d}": "v" for i in range(500)}
    request = signed_request(node, "GET", f"/{bucket}/{DATA_KEY}", unsigned_headers=extra)
    assert assert_ok(exchange(node, request)).body == DATA
    assert_still_serving(node)


def test_100_kib_header_is_refused(node: Node, bucket: str) -> None:
    request = signed_request(
        node, "GET", f"/{bucket}/{DATA_KEY}", unsigned_headers={"X-Big": "x" * 100 * 1024}
    )
    with Wire(node) as wire:
        # Two writes make it deterministic: the server reads 60 KiB (under the
        # limit, incomplete) and then the rest (complete, so h11 does not check).
        # One 100 KiB write is read the same way in practice (64 KiB, then the rest).
        wire.send(request[: 60 * 1024])
        time.sleep(0.2)
        wire.send(request[60 * 1024 :])
        reply = wire.reply()
    if reply is not None and not reply.refused_by_http_server:
        assert_error(reply, (400, 431), "RequestHeaderSectionTooLarge")
    assert_still_serving(node)


_HOSTILE_HEADS = {
    "garbage": b"GARBAGE\r\n\r\n",
    "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),
    "no-host": b"GET / HTTP/1.1\r\n\r\n",
    "space-in-header-name": b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    "header-without-colon": b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
    "nul-in-header-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
    "folded-header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\nHost: x\n\n",
    "http-9.9": b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    "http-1.0-no-host": b"GET /hostile/data HTTP/1.0\r\n\r\n",
    "asterisk-target": b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-target": b"GET http://x/hostile/data HTTP/1.1\r\nHost: x\r\n\r\n",
    "negative-length": b"PUT /hostile/neg HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "two-lengths": b"PUT /hostile/two HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "gzip-transfer-encoding": b"PUT /hostile/gz HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "length-and-chunked": b"PUT /hostile/both HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "expect-100-on-get": b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
    b"Content-Length: 3\r\n\r\nabc",
    "70KB-request-line": b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("name", list(_HOSTILE_HEADS))
def test_malformed_request_head_is_refused_not_failed(
    node: Node, bucket: str, root_s3: Any, name: str
) -> None:
    """Refused by hypercorn, or answered by the app (unsigned: AccessDenied and the like)."""
    reply = exchange(node, _HOSTILE_HEADS[name])
    assert_no_server_failure(reply)
    if reply is not None and not reply.refused_by_http_server:
        assert reply.status >= 400, reply  # none of these is authenticated
    assert not {"neg", "two", "gz", "both"} & set(keys_in(root_s3, bucket))
    assert_still_serving(node)


@pytest.mark.parametrize("target", [b"?a=b", b"?", b"?delete"])
def test_request_target_without_a_path_is_not_a_server_error(
    node: Node, bucket: str, target: bytes
) -> None:
    reply = exchange(node, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_no_server_failure(reply)
    assert_still_serving(node)


def test_idle_half_sent_requests_do_not_block_other_clients(
    node: Node, bucket: str, root_s3: Any
) -> None:
    half_head = f"GET /{bucket}/{DATA_KEY} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode()
    half_body = signed_request(
        node, "PUT", f"/{bucket}/half", payload_hash=UNSIGNED, content_length=1000
    )
    wires = [Wire(node) for _ in range(40)]
    try:
        for index, wire in enumerate(wires):
            wire.send(half_head if index % 2 else half_body + b"0123456789")
        started = time.monotonic()
        assert_still_serving(node)
        assert time.monotonic() - started < 2
    finally:
        for wire in wires:
            wire.close()
    assert "half" not in keys_in(root_s3, bucket)
    assert_still_serving(node)


# -- bucket names and keys ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "UPPERCASE",
        "ab",
        "a" * 64,
        "192.168.5.4",
        "a..b",
        "..",
        "-leading-dash",
        "trailing-dash-",
        "under_score",
        "xn--punycode",
        "dot.-dash",
    ],
)
def test_invalid_bucket_name_is_refused(node: Node, bucket: str, root_s3: Any, name: str) -> None:
    reply = exchange(node, signed_request(node, "PUT", f"/{quote(name)}"))
    assert_error(reply, 400, "InvalidBucketName")
    assert name not in [b["Name"] for b in root_s3.list_buckets()["Buckets"]]
    assert_still_serving(node)


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("../x", "InvalidArgument"),  # objfs refuses dot segments (they would escape the mount)
        ("a/./b", "InvalidArgument"),
        ("a%00b", "InvalidArgument"),
        ("a%01b", "InvalidArgument"),
        ("k" * 2048, "KeyTooLongError"),
        ("%C3%A9" * 513, "KeyTooLongError"),  # 1026 bytes of UTF-8 in 513 characters
    ],
)
def test_refused_key_stores_nothing(
    node: Node, bucket: str, root_s3: Any, path: str, code: str
) -> None:
    target_bucket = make_bucket(root_s3, "hostile-refused-keys")
    reply = exchange(node, signed_request(node, "PUT", f"/{target_bucket}/{path}", body=b"x"))
    assert_error(reply, 400, code)
    assert keys_in(root_s3, target_bucket) == []
    assert_still_serving(node)


@pytest.mark.parametrize("path", ["%FF", "a%FFb", "%C0%AF", "%ED%A0%80", "%E2%82"])
@pytest.mark.parametrize("method", ["PUT", "GET"])
def test_key_of_invalid_utf8_is_refused_not_failed(
    node: Node, bucket: str, root_s3: Any, method: str, path: str
) -> None:
    target_bucket = make_bucket(root_s3, "hostile-refused-keys")
    body = b"x" if method == "PUT" else b""
    reply = exchange(node, signed_request(node, method, f"/{target_bucket}/{path}", body=body))
    assert_error(reply, 400, "InvalidURI", "InvalidArgument")
    assert keys_in(root_s3, target_bucket) == []
    assert_still_serving(node)


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("PUT", "/hostile-refused-keys/a%0Ab", 400, "InvalidArgument"),
        ("GET", f"/{BUCKET}/a%0Ab", 404, "NoSuchKey"),
        ("PUT", "/new%0Abucket", 400, "InvalidBucketName"),
    ],
)
def test_path_with_a_newline_is_an_s3_error(
    node: Node, bucket: str, root_s3: Any, method: str, path: str, status: int, code: str
) -> None:
    make_bucket(root_s3, "hostile-refused-keys")
    body = b"x" if path.count("/") == 2 and method == "PUT" else b""
    assert_error(exchange(node, signed_request(node, method, path, body=body)), status, code)
    assert keys_in(root_s3, "hostile-refused-keys") == []
    assert_still_serving(node)


@pytest.mark.parametrize(
    "key",
    [
        "a//b",
        "//leading",
        "dir/",
        "ünïcödé/日本語/🙂",
        "space and+plus",
        "100% & <xml> \"quotes\" 'too'",
        "?#[]@!$&'()*,;=",
        "é" * 512,  # exactly 1024 bytes of UTF-8: the limit, allowed
        "~tilde-_.",
    ],
)
def test_weird_valid_key_round_trips_byte_exact(
    node: Node, bucket: str, root_s3: Any, key: str
) -> None:
    target_bucket = make_bucket(root_s3, "hostile-weird-keys")
    target = f"/{target_bucket}/{quote(key, safe='/~')}"
    body = key.encode() + b"!"
    put = assert_ok(exchange(node, signed_request(node, "PUT", target, body=body)))
    assert put.headers["etag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert assert_ok(exchange(node, signed_request(node, "GET", target))).body == body
    assert root_s3.get_object(Bucket=target_bucket, Key=key)["Body"].read() == body
    listed = root_s3.list_objects_v2(Bucket=target_bucket, Prefix=key)
    assert [o["Key"] for o in listed["Contents"]] == [key]
    assert_still_serving(node)


# -- bodies cut short or framed wrong -----------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_body_cut_short_by_the_client_stores_nothing(
    node: Node, bucket: str, root_s3: Any, framing: str
) -> None:
    key = f"cut-short-{framing}"
    if framing == "content-length":
        request = signed_request(
            node, "PUT", f"/{bucket}/{key}", payload_hash=UNSIGNED, content_length=1000
        )
        request += b"0123456789"
    else:
        headers = sign(node, "PUT", f"/{bucket}/{key}", payload_hash=UNSIGNED)
        headers["Transfer-Encoding"] = "chunked"
        request = raw_request("PUT", f"/{bucket}/{key}", headers, b"3e8\r\n0123456789")
    with Wire(node) as wire:
        wire.send(request)
        wire.shut_write()
        reply = wire.reply()
        if reply is not None and not reply.refused_by_http_server:
            assert_error(reply, 400, "IncompleteBody")
        assert wire.closed_by_server()
    for _ in range(2):  # and not later either, once the server has dropped the request
        assert key not in keys_in(root_s3, bucket)
        time.sleep(0.2)
    assert_still_serving(node)


def test_content_length_shorter_than_the_body_on_a_kept_alive_connection(
    node: Node, bucket: str, root_s3: Any
) -> None:
    """The server goes by Content-Length: the object is its first 5 bytes, and the
    bytes after it, read as the next request head, are refused as garbage."""
    target = f"/{bucket}/short-length"
    request = signed_request(
        node, "PUT", target, body=b"hello", payload_hash=UNSIGNED, content_length=5
    )
    follow_up = signed_request(node, "GET", target)
    with Wire(node) as wire:
        wire.send(request + b"{not a request line}" + follow_up)
        assert_ok(wire.reply())
        second = wire.reply()
        assert second is None or second.refused_by_http_server, second
    assert root_s3.get_object(Bucket=bucket, Key="short-length")["Body"].read() == b"hello"
    assert_still_serving(node)


def test_content_length_longer_than_the_body_on_a_kept_alive_connection(
    node: Node, bucket: str, root_s3: Any
) -> None:
    """The next request's bytes are read as the rest of the body. The signed payload
    hash catches that, and nothing is stored."""
    target = f"/{bucket}/long-length"
    body = b"0123456789"
    request = signed_request(node, "PUT", target, body=body, content_length=len(body) + 40)
    follow_up = signed_request(node, "GET", f"/{bucket}/{DATA_KEY}")
    with Wire(node) as wire:
        wire.send(request + follow_up)
        assert_error(wire.reply(), 400, "XAmzContentSHA256Mismatch")
        second = wire.reply()  # the rest of follow_up: not a request
        assert second is None or second.refused_by_http_server, second
    assert "long-length" not in keys_in(root_s3, bucket)
    assert_still_serving(node)


# -- aws-chunked ----------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkedUpload:
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD PUT, signed, whose body the test frames itself."""

    target: str
    headers: dict[str, str]  # signed; Content-Length goes on at send time
    key: bytes
    amz_date: str
    scope: str
    seed_signature: str

    @classmethod
    def start(cls, node: Node, target: str, decoded_length: int) -> ChunkedUpload:
        headers = sign(
            node,
            "PUT",
            target,
            headers={
                "Content-Encoding": "aws-chunked",
                "x-amz-decoded-content-length": str(decoded_length),
            },
            payload_hash=STREAMING,
        )
        amz_date = headers["X-Amz-Date"]
        return cls(
            target=target,
            headers=headers,
            key=signing_key(ROOT_SECRET, amz_date[:8]),
            amz_date=amz_date,
            scope=f"{amz_date[:8]}/{REGION}/s3/aws4_request",
            seed_signature=headers["Authorization"].rpartition("Signature=")[2],
        )

    def signatures(self, chunks: Sequence[bytes]) -> list[str]:
        """The chain of chunk signatures, each over the one before (the last: the final chunk)."""
        previous, chain = self.seed_signature, []
        for data in [*chunks, b""]:
            to_sign = "\n".join(
                (
                    "AWS4-HMAC-SHA256-PAYLOAD",
                    self.amz_date,
                    self.scope,
                    previous,
                    EMPTY_SHA256,
                    hashlib.sha256(data).hexdigest(),
                )
            )
            previous = hmac.new(self.key, to_sign.encode(), hashlib.sha256).hexdigest()
            chain.append(previous)
        return chain

    def request(self, body: bytes) -> bytes:
        return raw_request(
            "PUT", self.target, {**self.headers, "Content-Length": str(len(body))}, body
        )


def frame_chunks(
    chunks: Sequence[bytes], signatures: Sequence[str], *, final: bool = True
) -> bytes:
    parts = [
        f"{len(data):x};chunk-signature={signature}\r\n".encode() + data + b"\r\n"
        for data, signature in zip(chunks, signatures, strict=False)
    ]
    if final:
        parts.append(f"0;chunk-signature={signatures[len(chunks)]}\r\n\r\n".encode())
    return b"".join(parts)


def _flip(signature: str) -> str:
    return ("1" if signature[0] == "0" else "0") + signature[1:]


_CHUNKS = (random.Random(2).randbytes(64 * 1024), random.Random(3).randbytes(1000))
_CHUNKED_FAULTS = {  # fault -> expected (status, code)
    "bad-chunk-signature": (403, "SignatureDoesNotMatch"),
    "bad-final-signature": (403, "SignatureDoesNotMatch"),
    "data-changed-after-signing": (403, "SignatureDoesNotMatch"),
    "chunks-swapped": (403, "SignatureDoesNotMatch"),
    "garbage-size-line": (400, "IncompleteBody"),
    "missing-final-chunk": (400, "IncompleteBody"),
    "chunk-longer-than-its-size": (400, "IncompleteBody"),
    "no-crlf-after-data": (400, "IncompleteBody"),
    "cut-inside-a-chunk": (400, "IncompleteBody"),
    "decoded-length-too-large": (400, "IncompleteBody"),
    "decoded-length-too-small": (400, "IncompleteBody"),
}


def _chunked_body(fault: str, upload: ChunkedUpload) -> bytes:
    chunks = list(_CHUNKS)
    signatures = upload.signatures(chunks)
    if fault == "bad-chunk-signature":
        signatures[1] = _flip(signatures[1])
    elif fault == "bad-final-signature":
        signatures[2] = _flip(signatures[2])
    elif fault == "data-changed-after-signing":
        chunks[1] = bytes([chunks[1][0] ^ 1]) + chunks[1][1:]
    elif fault == "chunks-swapped":
        chunks.reverse()
    elif fault == "garbage-size-line":
        body = frame_chunks(chunks, signatures)
        return b"zz;chunk-signature=" + body.split(b";chunk-signature=", 1)[1]
    elif fault == "missing-final-chunk":
        return frame_chunks(chunks, signatures, final=False)
    elif fault == "chunk-longer-than-its-size":
        body = frame_chunks(chunks, signatures)
        return body.replace(f"{len(chunks[0]):x};".encode(), f"{len(chunks[0]) - 2:x};".encode(), 1)
    elif fault == "no-crlf-after-data":
        return frame_chunks(chunks, signatures).replace(chunks[0] + b"\r\n", chunks[0], 1)
    elif fault == "cut-inside-a-chunk":
        return frame_chunks(chunks, signatures)[:30_000]
    return frame_chunks(chunks, signatures)


@pytest.mark.parametrize("fault", ["none", *_CHUNKED_FAULTS])
def test_aws_chunked_upload_with_a_fault_is_refused(
    node: Node, bucket: str, root_s3: Any, fault: str
) -> None:
    key = f"chunked-{fault}"
    decoded_length = sum(map(len, _CHUNKS)) + {
        "decoded-length-too-large": 10,
        "decoded-length-too-small": -10,
    }.get(fault, 0)
    upload = ChunkedUpload.start(node, f"/{bucket}/{key}", decoded_length)
    reply = exchange(node, upload.request(_chunked_body(fault, upload)))
    if fault == "none":  # the control: the framing and signatures built here are right
        assert_ok(reply)
        assert root_s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"".join(_CHUNKS)
    else:
        status, code = _CHUNKED_FAULTS[fault]
        assert_error(reply, status, code)
        assert key not in keys_in(root_s3, bucket)
    assert_still_serving(node)


# -- signatures -----------------------------------------------------------------------


def _replace_in_head(request: bytes, old: bytes, new: bytes) -> bytes:
    head, separator, body = request.partition(b"\r\n\r\n")
    assert old in head
    return head.replace(old, new, 1) + separator + body


@pytest.mark.parametrize(
    "fault",
    [
        "wrong-secret",
        "unknown-access-key",
        "header-changed",
        "query-changed",
        "path-changed",
        "method-changed",
        "clock-20-min-behind",
        "clock-20-min-ahead",
    ],
)
def test_forged_or_stale_signature_is_refused(
    node: Node, bucket: str, root_s3: Any, fault: str
) -> None:
    target = f"/{bucket}/signed-{fault}"
    meta = {"x-amz-meta-owner": "alice"}
    if fault == "wrong-secret":
        request = signed_request(node, "PUT", target, body=b"x", secret_key="not-the-secret")
    elif fault == "unknown-access-key":
        request = signed_request(node, "PUT", target, body=b"x", access_key="NOSUCHKEY0000000")
    elif fault == "header-changed":
        request = signed_request(node, "PUT", target, headers=meta, body=b"x")
        request = _replace_in_head(request, b"owner: alice", b"owner: bobby")
    elif fault == "query-changed":
        request = signed_request(node, "GET", f"/{bucket}?prefix=aaa")
        request = _replace_in_head(request, b"prefix=aaa", b"prefix=bbb")
    elif fault == "path-changed":
        request = signed_request(node, "PUT", f"/{bucket}/decoy", body=b"x")
        request = _replace_in_head(request, b"/decoy ", f"/signed-{fault} ".encode())
    elif fault == "method-changed":
        request = signed_request(node, "GET", f"/{bucket}/{DATA_KEY}")
        request = _replace_in_head(request, b"GET ", b"DELETE ")
    else:
        skew = timedelta(minutes=20 if fault.endswith("ahead") else -20)
        request = signed_request(node, "PUT", target, body=b"x", at=datetime.now(UTC) + skew)
    expected = {
        "unknown-access-key": "InvalidAccessKeyId",
        "clock-20-min-behind": "RequestTimeTooSkewed",
        "clock-20-min-ahead": "RequestTimeTooSkewed",
    }.get(fault, "SignatureDoesNotMatch")
    assert_error(exchange(node, request), 403, expected)
    assert f"signed-{fault}" not in keys_in(root_s3, bucket)  # and DATA_KEY is checked next
    assert_still_serving(node)


_AUTH_FAULTS: dict[
    str, tuple[Callable[[str], str], int, str]
] = {  # fault -> (rewrite of a valid Authorization value, status, code)
    "algorithm-only": (lambda auth: "AWS4-HMAC-SHA256", 400, "AuthorizationHeaderMalformed"),
    "no-signature": (
        lambda auth: auth.rpartition(", Signature=")[0],
        400,
        "AuthorizationHeaderMalformed",
    ),
    "component-twice": (
        lambda auth: auth + ", SignedHeaders=host",
        400,
        "AuthorizationHeaderMalformed",
    ),
    "garbage-components": (
        lambda auth: "AWS4-HMAC-SHA256 garbage, more garbage",
        400,
        "AuthorizationHeaderMalformed",
    ),
    "short-credential": (
        lambda auth: auth.replace("/us-east-1/s3/aws4_request", ""),
        400,
        "AuthorizationHeaderMalformed",
    ),
    "wrong-service": (
        lambda auth: auth.replace("/s3/aws4_request", "/ec2/aws4_request"),
        400,
        "AuthorizationHeaderMalformed",
    ),
    "wrong-terminator": (
        lambda auth: auth.replace("/aws4_request", "/aws5_request"),
        400,
        "AuthorizationHeaderMalformed",
    ),
    "credential-date-not-x-amz-date": (
        lambda auth: re.sub(r"(Credential=[^/]+/)[0-9]{8}", r"\g<1>20000101", auth),
        400,
        "AuthorizationHeaderMalformed",
    ),
    "host-not-signed": (
        lambda auth: auth.replace("SignedHeaders=host;", "SignedHeaders="),
        400,
        "AuthorizationHeaderMalformed",
    ),
    "bad-signed-header-name": (
        lambda auth: auth.replace("SignedHeaders=host;", "SignedHeaders=Host Name;host;"),
        400,
        "AuthorizationHeaderMalformed",
    ),
    "bearer": (lambda auth: "Bearer abc.def.ghi", 400, "InvalidArgument"),
    "signature-v2": (lambda auth: f"AWS {ROOT_KEY}:c2lnbmF0dXJl", 400, "InvalidRequest"),
    "unicode-signature": (lambda auth: auth[:-1] + "é", 403, "SignatureDoesNotMatch"),
}


@pytest.mark.parametrize("fault", list(_AUTH_FAULTS))
def test_malformed_authorization_header_gets_its_code(node: Node, bucket: str, fault: str) -> None:
    rewrite, status, code = _AUTH_FAULTS[fault]
    headers = sign(node, "GET", f"/{bucket}/{DATA_KEY}")
    headers["Authorization"] = rewrite(headers["Authorization"])
    assert_error(exchange(node, raw_request("GET", f"/{bucket}/{DATA_KEY}", headers)), status, code)
    assert_still_serving(node)


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("no-date", 403, "AccessDenied"),
        ("garbage-date", 403, "AccessDenied"),
        ("no-content-sha256", 400, "InvalidRequest"),
        ("garbage-content-sha256", 400, "InvalidArgument"),
        ("header-and-query-auth", 400, "InvalidArgument"),
    ],
)
def test_broken_signing_headers_get_their_code(
    node: Node, bucket: str, fault: str, status: int, code: str
) -> None:
    target = f"/{bucket}/{DATA_KEY}"
    headers = sign(node, "GET", target)
    if fault == "no-date":
        del headers["X-Amz-Date"]
    elif fault == "garbage-date":
        headers["X-Amz-Date"] = "yesterday"
    elif fault == "no-content-sha256":
        del headers["X-Amz-Content-SHA256"]
    elif fault == "garbage-content-sha256":
        headers["X-Amz-Content-SHA256"] = "not-a-hash"
    else:
        target += "?X-Amz-Signature=" + "0" * 64
    assert_error(exchange(node, raw_request("GET", target, headers)), status, code)
    assert_still_serving(node)


def test_anonymous_create_multipart_upload_is_access_denied(
    node: Node, bucket: str, root_s3: Any
) -> None:
    headers = {"Host": host_of(node), "Content-Length": "0"}
    request = raw_request("POST", f"/{bucket}/anonymous?uploads", headers)
    assert_error(exchange(node, request), 403, "AccessDenied")
    uploads = root_s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in uploads if u["Key"] == "anonymous"] == []
    assert_still_serving(node)


# -- methods --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target"),
    [("DELETE", "/"), ("PUT", "/"), ("POST", "/"), ("POST", f"/{BUCKET}/{DATA_KEY}")],
)
def test_method_not_allowed_on_a_resource_is_an_s3_error(
    node: Node, bucket: str, method: str, target: str
) -> None:
    reply = exchange(node, signed_request(node, method, target))
    assert_error(reply, 405, "MethodNotAllowed")
    assert_still_serving(node)


@pytest.mark.parametrize("method", ["PATCH", "TRACE", "BREW"])
@pytest.mark.parametrize("target", ["/", f"/{BUCKET}", f"/{BUCKET}/{DATA_KEY}"])
def test_method_the_server_does_not_know_is_an_s3_error(
    node: Node, bucket: str, method: str, target: str
) -> None:
    reply = exchange(node, signed_request(node, method, target))
    assert_error(reply, (405, 501), "MethodNotAllowed", "NotImplemented")
    assert_still_serving(node)


# -- random requests ------------------------------------------------------------------

_FUZZ_BUCKETS = ["fuzz", "fuzz-other", "FUZZ", "fu", "192.168.0.1", "a..b"]
_FUZZ_METHODS = ["GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "FOO"]
_FUZZ_QUERY_NAMES = [
    "delete",
    "versioning",
    "location",
    "list-type",
    "max-keys",
    "prefix",
    "delimiter",
    "marker",
    "continuation-token",
    "start-after",
    "encoding-type",
    "fetch-owner",
    "versionId",
    "uploads",
    "uploadId",
    "partNumber",
    "part-number-marker",
    "max-parts",
    "max-uploads",
    "versions",
    "attributes",
    "cors",
    "tagging",
    "acl",
    "response-content-type",
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "AWSAccessKeyId",
    "Signature",
]
# Framing headers (Content-Length, Transfer-Encoding) have their own tests: random
# values there would only make the server wait for bytes that never come.
_FUZZ_HEADER_NAMES = [
    "Range",
    "Content-MD5",
    "Content-Type",
    "Content-Encoding",
    "x-amz-content-sha256",
    "x-amz-decoded-content-length",
    "x-amz-copy-source",
    "x-amz-metadata-directive",
    "x-amz-meta-color",
    "x-amz-checksum-crc32",
    "x-amz-checksum-sha256",
    "x-amz-sdk-checksum-algorithm",
    "x-amz-trailer",
    "x-amz-checksum-mode",
    "x-amz-date",
    "Date",
    "Authorization",
    "If-Match",
    "If-None-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
    "Cache-Control",
    "Expect",
    "x-amz-copy-source-range",
    "x-amz-acl",
    "x-amz-grant-read",
    "x-amz-tagging",
    "x-amz-object-attributes",
    "Origin",
    "Access-Control-Request-Method",
]
_FUZZ_HEADER_VALUES = [
    "bytes=0-1",
    "bytes=-1",
    "bytes=5-",
    "*",
    "aws-chunked",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    "UNSIGNED-PAYLOAD",
    EMPTY_SHA256,
    "x-amz-checksum-crc32",
    "CRC32",
    "ENABLED",
    "REPLACE",
    "100-continue",
    f"{BUCKET}/{DATA_KEY}",
    "fuzz/none",
    "AAAAAAAAAAAAAAAAAAAAAA==",
    "Thu, 01 Jan 1970 00:00:00 GMT",
    "20000101T000000Z",
    "public-read-write",
    "uri=http://acs.amazonaws.com/groups/global/AllUsers",
    "a=b&c=d",
    "ETag,ObjectSize,ObjectParts",
    "http://example.com",
    "GET",
]
# Printable latin-1 (header values travel as latin-1): "²" and friends included.
_ascii = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40)
_path_text = st.characters(codec="utf-8")  # utf-8: no surrogates; newlines included
_fuzz_bodies = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [
            b"<Delete><Object><Key>k</Key></Object></Delete>",
            b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>",
            b"<CreateBucketConfiguration><LocationConstraint>mars-1</LocationConstraint>"
            b"</CreateBucketConfiguration>",
            b"0\r\n\r\n",
            b"5;chunk-signature=zz\r\nhello\r\n0\r\n\r\n",
        ]
    ),
)


@st.composite
def _fuzz_request(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes, bool]:
    """Method, target, headers, body, and whether to sign. The path is UTF-8,
    percent-encoded, plus raw '%' oddities."""
    method = draw(st.sampled_from(_FUZZ_METHODS))
    bucket = draw(
        st.one_of(st.sampled_from(["", *_FUZZ_BUCKETS]), st.text(_path_text, max_size=12))
    )
    key = draw(st.one_of(st.just(""), st.text(_path_text, max_size=30)))
    oddity = draw(st.sampled_from(["", "%", "%zz", "%2F", "%%", "/", "//", "%00"]))
    path = (
        "/"
        + quote(bucket.encode(), safe="")
        + ("/" + quote(key.encode(), safe="/~") if key else "")
    )
    pairs = draw(
        st.lists(
            st.tuples(
                st.one_of(st.sampled_from(_FUZZ_QUERY_NAMES), _ascii),
                st.one_of(st.none(), _ascii, st.sampled_from(["", "1", "2", "0", "-1", "1001"])),
            ),
            max_size=4,
        )
    )
    query = "&".join(
        quote(name, safe="") + ("" if value is None else "=" + quote(value, safe=""))
        for name, value in pairs
    )
    headers = draw(
        st.dictionaries(
            st.sampled_from(_FUZZ_HEADER_NAMES),
            st.one_of(st.sampled_from(_FUZZ_HEADER_VALUES), _ascii),
            max_size=5,
        )
    )
    body = draw(_fuzz_bodies) if draw(st.booleans()) else b""
    target = path + oddity + (f"?{query}" if pairs else "")
    return method, target, headers, body, draw(st.booleans())


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=_fuzz_request())
def test_random_requests_never_fail_the_server(
    node: Node, bucket: str, case: tuple[str, str, dict[str, str], bytes, bool]
) -> None:
    method, target, headers, body, signed = case
    if signed:
        request = signed_request(node, method, target, headers=headers, body=body)
    else:
        all_headers = {"Host": host_of(node), **headers}
        if body or method in ("PUT", "POST"):
            all_headers["Content-Length"] = str(len(body))
        request = raw_request(method, target, all_headers, body)
    assert_no_server_failure(exchange(node, request, head=method == "HEAD"), head=method == "HEAD")


def test_well_formed_requests_succeed_after_the_random_ones(
    node: Node, bucket: str, root_s3: Any
) -> None:
    """Runs after the fuzz test (pytest keeps file order): the node still does real work."""
    make_bucket(root_s3, "hostile-after-fuzz")
    root_s3.put_object(Bucket="hostile-after-fuzz", Key="k", Body=DATA)
    assert root_s3.get_object(Bucket="hostile-after-fuzz", Key="k")["Body"].read() == DATA
    assert_still_serving(node)
