"""objfs.cluster.peers — how nodes prove to each other that they hold the cluster secret.

Every request on the internal API carries

    X-Objfs-Time: unix seconds
    X-Objfs-Nonce: 32 random hex digits, new for every request
    X-Objfs-Signature: hex HMAC-SHA256(key,
                           method \\n path?query \\n sha256(body) \\n time \\n nonce)

where `key` is derived from the cluster secret (never the secret itself, which
is also pysyncobj's password). A request without a signature, with a bad one,
or more than `MAX_SKEW_S` away from the receiver's clock is refused before
anything in it is used. So is a replay: the receiver remembers the nonces it
accepted until their time leaves that window (`SeenNonces`), and refuses a
nonce signed before it started (what it accepted before is forgotten). A
request without a nonce is refused like a bad signature: the nodes of a
cluster are upgraded together, so none still signs as an objfs before nonces
did. `signed_headers` makes the headers; `call` is the client side (blocking;
run it in a thread).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import secrets
import time
import urllib.error
import urllib.request
from typing import Any, final

from objfs.errors import ObjfsError, Unavailable

MAX_SKEW_S = 300
TIME_HEADER = "X-Objfs-Time"
SIGNATURE_HEADER = "X-Objfs-Signature"
NONCE_HEADER = "X-Objfs-Nonce"


class PeerRefused(ObjfsError):
    """A peer answered with an error (its message is kept)."""


def _key(secret: str) -> bytes:
    return hashlib.sha256(b"objfs internal api v1\0" + secret.encode()).digest()


def signature(secret: str, method: str, target: str, body: bytes, when: int, nonce: str) -> str:
    message = f"{method}\n{target}\n{hashlib.sha256(body).hexdigest()}\n{when}\n{nonce}"
    return hmac.new(_key(secret), message.encode(), hashlib.sha256).hexdigest()


def signed_headers(secret: str, method: str, target: str, body: bytes) -> dict[str, str]:
    """The headers that sign one request (`body`: b"" for a GET)."""
    when = int(time.time())
    nonce = secrets.token_hex(16)
    return {
        TIME_HEADER: str(when),
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: signature(secret, method, target, body, when, nonce),
    }


@final
class SeenNonces:
    """The nonces of the requests a node accepted, each kept until its signature
    time is out of the `MAX_SKEW_S` window (a replay is refused by its time
    then): about 100 bytes per request of the last five minutes."""

    def __init__(self, now: float) -> None:
        # Nothing accepted before is remembered. (A node takes seconds to start, so
        # no request signed in the second it starts was accepted before it.)
        self._started = int(now)
        self._seen: set[bytes] = set()
        self._by_time: dict[int, list[bytes]] = {}
        self._pruned = 0

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, nonce: str, when: int, now: float) -> str | None:
        """None, and `nonce` remembered, if this is its first request; else why not."""
        if int(now) != self._pruned:
            self._pruned = int(now)
            for old in [t for t in self._by_time if t < now - MAX_SKEW_S]:
                self._seen.difference_update(self._by_time.pop(old))
        if when < self._started:
            return "signed before this node started (a replay?)"
        try:
            key = bytes.fromhex(nonce)
        except ValueError:
            return "the nonce is not hex"
        if key in self._seen:
            return "a replay of a request already accepted"
        self._seen.add(key)
        self._by_time.setdefault(when, []).append(key)
        return None


def verify(
    secret: str,
    method: str,
    target: str,
    body: bytes,
    headers: dict[str, str],
    now: float,
    seen: SeenNonces | None = None,
) -> str | None:
    """None if the request is signed with the secret, a nonce included (and,
    given `seen`, the nonce is new); else why not."""
    given = headers.get(SIGNATURE_HEADER, "")
    try:
        when = int(headers.get(TIME_HEADER, ""))
    except ValueError:
        return "no signature time"
    if abs(now - when) > MAX_SKEW_S:
        return f"the signature time is {abs(now - when):.0f} s away from this node's clock"
    nonce = headers.get(NONCE_HEADER, "")
    if not nonce:
        return "no nonce (a replay could not be told; signed by an objfs before nonces?)"
    expected = signature(secret, method, target, body, when, nonce)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return "the signature does not match (another cluster's secret?)"
    if seen is not None:
        return seen.check(nonce, when, now)
    return None


def call(
    address: str, secret: str, method: str, target: str, body: Any = None, timeout: float = 30.0
) -> Any:
    """One signed JSON request to a peer's internal API; its JSON answer.

    Raises:
        PeerRefused: the peer answered with an error status.
        Unavailable: the peer cannot be reached.
    """
    data = b"" if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://{address}{target}",
        data=data if method != "GET" else None,
        method=method,
        headers={
            "Content-Type": "application/json",
            **signed_headers(secret, method, target, data if method != "GET" else b""),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        raise PeerRefused(f"{address}: {message}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unavailable(f"cannot reach the node at {address}: {reason}") from None
