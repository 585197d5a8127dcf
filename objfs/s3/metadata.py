"""objfs.s3.metadata — which request headers are kept with an object, and how.

User metadata (`x-amz-meta-NAME`) is stored under NAME; the standard headers an
object keeps (Cache-Control and friends) under `h:NAME`, which no user
metadata name can be (":" is not allowed in a header name). GET and HEAD give
both back.
"""

from __future__ import annotations

from objfs.s3.app import S3Request
from objfs.s3.errors import S3Error

STORED_HEADERS = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
)
HEADER_PREFIX = "h:"
TAG_PREFIX = "t:"  # object tags: t:KEY = value
INTERNAL_PREFIXES = ("a:", "t:", "m:")  # ACL, tags, multipart: never shown as x-amz-meta
MAX_METADATA_BYTES = 2048  # AWS: user metadata up to 2 KB


def user_metadata(s3: S3Request) -> dict[str, str]:
    metadata = {
        name[len("x-amz-meta-") :]: value
        for name, value in s3.headers.items()
        if name.startswith("x-amz-meta-")
    }
    for name in STORED_HEADERS:
        if name in s3.headers:
            metadata[HEADER_PREFIX + name] = s3.headers[name]
    size = sum(len(k) + len(v) for k, v in metadata.items() if not k.startswith(HEADER_PREFIX))
    if size > MAX_METADATA_BYTES:
        raise S3Error(
            "MetadataTooLarge",
            "Your metadata headers exceed the maximum allowed metadata size "
            f"({MAX_METADATA_BYTES} bytes).",
        )
    return metadata
