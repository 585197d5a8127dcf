"""objfs.cluster.peers — how nodes prove to each other that they hold the cluster secret.

Every request on the internal API carries

    X-Objfs-Time: unix seconds
    X-Objfs-Signature: hex HMAC-SHA256(key, method \\n path?query \\n sha256(body) \\n time)

where `key` is derived from the cluster secret (never the secret itself, which
is also pysyncobj's password). A request without it, with a bad one, or more
than `MAX_SKEW_S` away from the receiver's clock is refused before anything
in it is used. `call` is the client side (blocking; run it in a thread).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any

from objfs.errors import ObjfsError, Unavailable

MAX_SKEW_S = 300
TIME_HEADER = "X-Objfs-Time"
SIGNATURE_HEADER = "X-Objfs-Signature"


class PeerRefused(ObjfsError):
    """A peer answered with an error (its message is kept)."""


def _key(secret: str) -> bytes:
    return hashlib.sha256(b"objfs internal api v1\0" + secret.encode()).digest()


def signature(secret: str, method: str, target: str, body: bytes, when: int) -> str:
    message = f"{method}\n{target}\n{hashlib.sha256(body).hexdigest()}\n{when}".encode()
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def verify(
    secret: str, method: str, target: str, body: bytes, headers: dict[str, str], now: float
) -> str | None:
    """None if the request is signed with the secret; else why not."""
    given = headers.get(SIGNATURE_HEADER, "")
    try:
        when = int(headers.get(TIME_HEADER, ""))
    except ValueError:
        return "no signature time"
    if abs(now - when) > MAX_SKEW_S:
        return f"the signature time is {abs(now - when):.0f} s away from this node's clock"
    expected = signature(secret, method, target, body, when)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return "the signature does not match (another cluster's secret?)"
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
    when = int(time.time())
    request = urllib.request.Request(
        f"http://{address}{target}",
        data=data if method != "GET" else None,
        method=method,
        headers={
            "Content-Type": "application/json",
            TIME_HEADER: str(when),
            SIGNATURE_HEADER: signature(
                secret, method, target, data if method != "GET" else b"", when
            ),
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
