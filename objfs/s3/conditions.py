"""objfs.s3.conditions — HTTP conditional headers evaluated against one object version.

If-Match and If-None-Match compare ETags (a list, or "*"); If-Unmodified-Since
and If-Modified-Since compare whole seconds of the version's mtime (a malformed
date is ignored, as AWS does). The same evaluation serves a GET or HEAD of the
object (reads.py), a copy's source through the x-amz-copy-source- forms of the
headers, and a PUT's If-Match (handlers.py). Pure: headers and an ObjectInfo in,
a verdict out; what a verdict answers is each caller's.
"""

from __future__ import annotations

from collections.abc import Mapping

from objfs.s3.errors import S3Error
from objfs.s3.xml_values import parse_http_date
from objfs.store.types import ObjectInfo


def evaluate_conditions(
    headers: Mapping[str, str], info: ObjectInfo, prefix: str = ""
) -> tuple[str | None, bool]:
    """AWS's order of the conditional headers (`prefix`: "x-amz-copy-source-" for a
    copy's source): If-Match, else If-Unmodified-Since; then If-None-Match, else
    If-Modified-Since. Returns (the failed precondition or None, not modified)."""
    mtime_s = info.mtime_ns // 1_000_000_000
    failed = None
    if prefix + "if-match" in headers:
        if not etag_matches(headers[prefix + "if-match"], info.etag):
            failed = "If-Match"
    elif prefix + "if-unmodified-since" in headers:
        since = _http_seconds(headers[prefix + "if-unmodified-since"])
        if since is not None and mtime_s > since:
            failed = "If-Unmodified-Since"
    not_modified = False
    if prefix + "if-none-match" in headers:
        not_modified = etag_matches(headers[prefix + "if-none-match"], info.etag)
    elif prefix + "if-modified-since" in headers:
        since = _http_seconds(headers[prefix + "if-modified-since"])
        not_modified = since is not None and mtime_s <= since
    return failed, not_modified


def etags_of(header: str) -> tuple[str, ...]:
    """The ETags an If-Match / If-None-Match value names, unquoted ("*" for any)."""
    return tuple(part.strip().strip('"') for part in header.split(","))


def etag_matches(header: str, etag: str | None) -> bool:
    """Whether an If-Match / If-None-Match value names `etag` (or is "*")."""
    wanted = etags_of(header)
    return "*" in wanted or (etag is not None and etag in wanted)


def precondition_failed(condition: str | None = None) -> S3Error:
    """PreconditionFailed, naming the header that failed when there is one."""
    message = "At least one of the pre-conditions you specified did not hold"
    if condition is None:
        return S3Error("PreconditionFailed", message)
    return S3Error("PreconditionFailed", message, Condition=condition)


def _http_seconds(value: str) -> int | None:
    """Seconds since the epoch of an HTTP date (one parser for every header: a
    "-0000" date is UTC, whatever the host's zone); None when malformed, which
    AWS ignores."""
    ns = parse_http_date(value)
    return None if ns is None else ns // 1_000_000_000


def check_copy_source(headers: Mapping[str, str], source: ObjectInfo) -> None:
    """What a copy (CopyObject, UploadPartCopy) asks of its source version: not a
    delete marker named by versionId, and every x-amz-copy-source-if-* holding.

    Raises:
        S3Error: InvalidRequest (a delete marker), PreconditionFailed.
    """
    if source.delete_marker:
        raise S3Error(
            "InvalidRequest",
            "The source of a copy request may not specifically refer to a delete marker "
            "by version id.",
        )
    failed, not_modified = evaluate_conditions(headers, source, "x-amz-copy-source-")
    if failed is not None or not_modified:
        raise precondition_failed()
