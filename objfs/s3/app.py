"""objfs.s3.app — the S3 face: a Quart-Trio app over one `Store`.

Owns the HTTP side of S3: the app and its ASGI plumbing, how a request names a
bucket and a key (path-style or virtual-hosted-style), authentication and
access, and the dispatch from (method, bucket?, key?, sub-resource) to one
handler in `handlers.py`. Every error leaves as AWS's XML error body through
`errors.S3Error`; every response carries `x-amz-request-id`.

Three things Quart does not do for an object store, fixed here (see
../shared/FACTS.md): request bodies stream with backpressure and no size cap or
timeout (`StreamBody`, `StreamingConnection.handle_messages`); every ASGI send
is shielded, so `Connection: close` really closes; object bodies are read
chunk by chunk as they arrive, never gathered.
"""

from __future__ import annotations

import collections
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import parse_qsl, unquote_to_bytes

import quart
import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, HTTPScope
from quart import request
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import TrioBody, TrioRequest
from werkzeug.exceptions import HTTPException

from objfs import logs
from objfs.config import NodeConfig
from objfs.errors import NoSuchKey, ObjfsError
from objfs.metrics import Metrics
from objfs.s3 import acl, sigv4, xml_render
from objfs.s3.conditions import etag_matches, etags_of, precondition_failed
from objfs.s3.errors import S3Error, from_core
from objfs.s3.users import User, Users
from objfs.store import Store
from objfs.store.types import BucketInfo, ObjectInfo

log = logging.getLogger(__name__)

_HIGH_WATER_BYTES = 2 * 1024 * 1024  # body bytes received ahead of the handler
_METHODS = ["GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS"]
_MAX_HEADER_BYTES = 16 * 1024  # AWS allows 8 KiB; presigned SDK requests stay far below
OPERATION_SCOPE_KEY = "objfs.operation"  # the handler's name, for the metrics' label


class Response(quart.Response):
    """Quart's response without its text/html default: an S3 answer with no body
    has no Content-Type, and every other says its own."""

    default_mimetype = None  # type: ignore[assignment]  # werkzeug allows None


class StreamBody(TrioBody):
    """A request body that keeps the chunks as received (no copies) and tells the
    receiving side to wait while more than `_HIGH_WATER_BYTES` are unread."""

    def __init__(self, expected_content_length: int | None, max_content_length: int | None):
        super().__init__(expected_content_length, None)
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._room = trio.Event()
        self._room.set()
        self._unbounded = False  # awaited whole: no backpressure, or it would never end

    def append(self, data: bytes) -> None:
        if not data or self._must_raise is not None:
            return
        self._chunks.append(bytes(data))
        self._buffered += len(data)
        self._has_data.set()
        if self._buffered >= _HIGH_WATER_BYTES and not self._unbounded:
            self._room = trio.Event()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    async def __anext__(self) -> bytes:
        if self._must_raise is not None:
            raise self._must_raise
        while not self._chunks:
            if self._complete.is_set():
                raise StopAsyncIteration()
            self._has_data.clear()
            await self._has_data.wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered < _HIGH_WATER_BYTES:
            self._room.set()
        return chunk

    def __await__(self) -> Generator[Any, None, Any]:
        self._unbounded = True
        self._room.set()
        yield from self._complete.wait().__await__()
        if self._must_raise is not None:
            raise self._must_raise
        return b"".join(self._chunks)

    def clear(self) -> None:
        self._chunks.clear()
        self._buffered = 0


class StreamRequest(TrioRequest):
    body_class = StreamBody


class StreamingConnection(TrioASGIHTTPConnection):
    """Body messages are taken only while the handler keeps up; sends are shielded."""

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        async def shielded_send(message: ASGISendEvent) -> None:
            # quart-trio's cancellation otherwise interrupts hypercorn's close of a
            # `Connection: close` response, and the socket stays open.
            with trio.CancelScope(shield=True):
                await send(message)

        await super().__call__(receive, shielded_send)

    async def handle_messages(  # type: ignore[override]
        self, nursery: trio.Nursery, request: StreamRequest, receive: ASGIReceiveCallable
    ) -> None:
        body = request.body
        assert isinstance(body, StreamBody)
        while True:
            message = await receive()
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body.set_complete()
                else:
                    await body.wait_for_room()
            elif message["type"] == "http.disconnect":
                break
        nursery.cancel_scope.cancel()


class S3App(QuartTrio):
    asgi_http_class = StreamingConnection
    request_class = StreamRequest
    metrics: Metrics | None = None

    async def __call__(
        self, scope: Any, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope.get("type") != "http" or self.metrics is None:
            await self._answer(scope, receive, send)
            return
        metrics = self.metrics
        started = time.perf_counter()
        status = "none"  # no response started: the client went away first

        async def counting_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                metrics.s3_received_bytes.inc(len(message.get("body", b"")))
            return message

        async def counting_send(message: ASGISendEvent) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            elif message["type"] == "http.response.body":
                metrics.s3_sent_bytes.inc(len(message.get("body", b"")))
            await send(message)

        try:
            await self._answer(scope, counting_receive, counting_send)
        finally:
            operation = scope.get(OPERATION_SCOPE_KEY, "unknown")
            metrics.s3_requests.labels(operation, status).inc()
            metrics.s3_request_seconds.labels(operation).observe(time.perf_counter() - started)

    async def _answer(
        self, scope: Any, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """A request target without a path (`GET ?a=b`) never reaches Quart, which
        cannot make a request of it: answer InvalidURI here."""
        path = scope.get("path", "/") if scope.get("type") == "http" else "/"
        if not path.startswith("/"):
            request_id = secrets.token_hex(8).upper()
            body = xml_render.error(
                "InvalidURI", "Couldn't parse the specified URI.", path, request_id
            )
            headers = [
                (b"content-type", b"application/xml"),
                (b"content-length", str(len(body)).encode()),
                (b"x-amz-request-id", request_id.encode()),
            ]
            await send({"type": "http.response.start", "status": 400, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        await super().__call__(scope, receive, send)


@dataclass
class S3Request:
    """One request as the handlers see it: who, which bucket and key, which query."""

    method: str
    bucket: str | None
    key: str | None
    query: dict[str, str]
    headers: Mapping[str, str]  # lowercase names
    user: User | None  # None: anonymous
    identity: sigv4.Identity | None
    request_id: str
    resource: str
    extra: dict[str, Any] = field(default_factory=dict)


Handler = Callable[["S3Context", S3Request], Awaitable[Response]]


@dataclass
class S3Context:
    """What every handler may use: the store, the config, the users."""

    store: Store
    config: NodeConfig
    users: Users

    def bucket_for(self, s3: S3Request, name: str, permission: str = acl.READ) -> BucketInfo:
        """The bucket, if the caller holds `permission` on it (`acl.READ`, `acl.WRITE`,
        `acl.READ_ACP`, `acl.WRITE_ACP`; `OWNER`: only root and the owner;
        `OBJECT`: anyone, the object's own ACL decides: see `check_object`).

        Raises:
            S3Error: NoSuchBucket, or AccessDenied.
        """
        try:
            info = self.store.head_bucket(name)
        except ObjfsError as exc:
            raise from_core(exc) from exc
        if self.owns(s3, info) or permission == OBJECT:
            return info
        if permission != OWNER and self.bucket_acl(info).allows(s3.user, permission):
            return info
        raise S3Error("AccessDenied", "Access Denied")

    @staticmethod
    def owns(s3: S3Request, info: BucketInfo) -> bool:
        return s3.user is not None and (s3.user.is_root or info.owner == s3.user.canonical_id)

    @staticmethod
    def bucket_acl(info: BucketInfo) -> acl.Acl:
        raw = info.setting(acl.BUCKET_ACL_SETTING)
        return acl.private(info.owner) if raw is None else acl.Acl.decode(raw)

    def check_object(
        self, s3: S3Request, bucket: BucketInfo, info: ObjectInfo, permission: str = acl.READ
    ) -> None:
        """Whether the caller may read (or read the ACL of...) an object: root and the
        bucket owner may; others as the object's ACL says.

        Raises:
            S3Error: AccessDenied.
        """
        if self.owns(s3, bucket):
            return
        if object_acl(bucket, info).allows(s3.user, permission):
            return
        raise S3Error("AccessDenied", "Access Denied")

    def check_if_match(self, s3: S3Request) -> tuple[str, ...] | None:
        """A write's If-Match, if it has one, against the key's current version now,
        to fail before a body streams; returns the ETags it names, for the store to
        check again when the version's record applies (`if_match`).

        Raises:
            S3Error: NoSuchKey (no current version), PreconditionFailed.
        """
        assert s3.bucket is not None and s3.key is not None
        if "if-match" not in s3.headers:
            return None
        try:
            current = self.store.head_object(s3.bucket, s3.key)
        except NoSuchKey:
            raise S3Error("NoSuchKey", "The specified key does not exist.", Key=s3.key) from None
        if not etag_matches(s3.headers["if-match"], current.etag):
            raise precondition_failed("If-Match")
        return etags_of(s3.headers["if-match"])


OWNER = "OWNER"  # bucket_for: only root and the bucket's owner
OBJECT = "OBJECT"  # bucket_for: the object's ACL decides (check_object)


def object_acl(bucket: BucketInfo, info: ObjectInfo) -> acl.Acl:
    """An object's ACL: the one stored with it, else private to the bucket owner."""
    raw = dict(info.metadata).get(acl.OBJECT_ACL_METADATA)
    return acl.private(bucket.owner) if raw is None else acl.Acl.decode(raw)


def create_app(
    store: Store, config: NodeConfig, users: Users, metrics: Metrics | None = None
) -> S3App:
    """The S3 app over `store`; serve it with `hypercorn.trio.serve`. With
    `metrics`, every request is counted by operation and status."""
    from objfs.s3 import handlers  # the handlers import this module's types

    app = S3App(__name__)
    app.metrics = metrics
    app.config.update(MAX_CONTENT_LENGTH=None, BODY_TIMEOUT=None, RESPONSE_TIMEOUT=None)
    context = S3Context(store, config, users)

    async def entry(path: str = "") -> Response:
        request_id = secrets.token_hex(8).upper()
        logs.request_id.set(request_id)  # on every log line of this request
        resource = request.scope.get("raw_path", b"/").decode("latin-1") or "/"
        try:
            # In a cluster: see every write acknowledged before this, users and
            # keys included, so before the signature is checked.
            await store.barrier()
            s3 = _parse(context, request_id)
            handler = handlers.route(s3)
            cast(dict[str, Any], request.scope)[OPERATION_SCOPE_KEY] = getattr(
                handler, "__name__", "unknown"
            )
            response = await handler(context, s3)
            handlers.after(context, s3, response)
        except S3Error as exc:
            response = _error_response(exc, resource, request_id, request.method)
        except ObjfsError as exc:
            response = _error_response(from_core(exc), resource, request_id, request.method)
        except trio.Cancelled:
            raise
        except Exception:
            log.exception("S3 %s %s failed", request.method, resource)
            error = S3Error("InternalError", "We encountered an internal error. Please try again.")
            response = _error_response(error, resource, request_id, request.method)
        response.headers["x-amz-request-id"] = request_id
        response.headers["Server"] = "objfs"
        return response

    async def unrouted(error: HTTPException) -> Response:
        # An unknown method, or a path werkzeug's converter will not match (one
        # with a newline): S3 answers those itself, in XML.
        return await entry()

    app.register_error_handler(HTTPException, unrouted)
    app.add_url_rule("/", "root", entry, methods=_METHODS, defaults={"path": ""})
    app.add_url_rule("/<path:path>", "path", entry, methods=_METHODS)
    return app


def _parse(context: S3Context, request_id: str) -> S3Request:
    """Bucket, key, query and caller of the current request (authenticated)."""
    scope = cast(HTTPScope, request.scope)
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    raw_query: bytes = scope.get("query_string", b"")
    if sum(len(name) + len(value) + 4 for name, value in scope["headers"]) > _MAX_HEADER_BYTES:
        raise S3Error(
            "RequestHeaderSectionTooLarge",
            f"Your request's headers exceed the maximum allowed size ({_MAX_HEADER_BYTES} bytes).",
        )
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        lower = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[lower] = f"{headers[lower]},{text}" if lower in headers else text
    path = raw_path.decode("latin-1")
    if "?" in path:
        path = path.split("?", 1)[0]
    bucket, key = _bucket_and_key(context.config, headers.get("host", ""), path)
    query = dict(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True))
    http_request = sigv4.HttpRequest(
        method=scope["method"],
        raw_path=path,
        query_string=raw_query.decode("latin-1"),
        headers=headers,
    )
    identity = sigv4.verify(
        http_request,
        context.users.secret_for,
        now=datetime.now(UTC),
        max_skew_s=context.config.s3.max_clock_skew_ms // 1000,
    )
    user = None if identity is None else context.users.by_access_key(identity.access_key)
    return S3Request(
        method=scope["method"],
        bucket=bucket,
        key=key,
        query=query,
        headers=headers,
        user=user,
        identity=identity,
        request_id=request_id,
        resource=path,
    )


def _bucket_and_key(config: NodeConfig, host: str, path: str) -> tuple[str | None, str | None]:
    """Virtual-hosted-style (BUCKET.domain) or path-style (/BUCKET/KEY)."""
    domain = config.s3.domain
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    try:
        raw = unquote_to_bytes(path) if "%" in path else path.encode("latin-1")
        decoded = raw.decode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError):
        raise S3Error("InvalidURI", "Couldn't parse the specified URI.") from None
    if domain and hostname.endswith("." + domain):
        bucket = hostname[: -len(domain) - 1]
        key = decoded[1:] if decoded.startswith("/") else decoded
        return bucket, (key or None)
    trimmed = decoded[1:] if decoded.startswith("/") else decoded
    if not trimmed:
        return None, None
    bucket, _, key = trimmed.partition("/")
    return bucket, (key or None) if "/" in trimmed else None


def _error_response(error: S3Error, resource: str, request_id: str, method: str) -> Response:
    if error.status >= 500:
        log.error("S3 error %s on %s: %s", error.code, resource, error.message)
    body = (
        b""
        if method == "HEAD"
        else xml_render.error(error.code, error.message, resource, request_id, **error.extra)
    )
    response = Response(body, status=error.status, content_type="application/xml")
    for name, value in error.headers.items():
        response.headers[name] = value
    if error.code in ("ServiceUnavailable", "SlowDown"):
        response.headers["Retry-After"] = "1"
    return response
