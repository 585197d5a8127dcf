"""objfs.fuse.xattrs — extended attributes kept in an object's metadata.

`user.NAME` with a printable ASCII value is the S3 user metadata NAME (S3
shows it as x-amz-meta-NAME, and S3 metadata shows in the mount as user.*
attributes). Any other name or value (security.*, binary values, names S3
could not carry: an HTTP header name is a token, RFC 9110) is kept
base64-encoded under "x:" + base64(name), which S3 never shows (names with
":" are the faces' own).
"""

from __future__ import annotations

import base64

from objfs.store import names

XATTR_PREFIX = "x:"
USER_XATTR = "user."
MAX_VALUE_BYTES = 64 * 1024


def stored_item(name: bytes, value: bytes) -> tuple[str, str]:
    """How an extended attribute is kept in the object's metadata: `user.NAME` with
    a text value as the S3 metadata NAME, anything else encoded under "x:"."""
    text_name = name.decode("utf-8", "replace")
    if text_name.startswith(USER_XATTR) and name.isascii():
        short = text_name[len(USER_XATTR) :]
        if names.is_metadata_name(short) and value.isascii():
            text = value.decode("ascii")
            if text.isprintable():
                return short, text
    encoded_name = base64.urlsafe_b64encode(name).decode("ascii")
    return XATTR_PREFIX + encoded_name, base64.b64encode(value).decode("ascii")


def value_of(metadata: dict[str, str], name: bytes) -> bytes | None:
    encoded = metadata.get(XATTR_PREFIX + base64.urlsafe_b64encode(name).decode("ascii"))
    if encoded is not None:
        return base64.b64decode(encoded)
    if name.startswith(USER_XATTR.encode()):
        short = name[len(USER_XATTR) :].decode("utf-8", "replace")
        if ":" not in short and short in metadata:
            return metadata[short].encode("utf-8")
    return None


def remove(metadata: dict[str, str], name: bytes) -> bool:
    """Remove an extended attribute, kept either way (`stored_item`); was it there?"""
    keys = [XATTR_PREFIX + base64.urlsafe_b64encode(name).decode("ascii")]
    if name.startswith(USER_XATTR.encode()):
        short = name[len(USER_XATTR) :].decode("utf-8", "replace")
        if short and ":" not in short:
            keys.append(short)
    return any([metadata.pop(key, None) is not None for key in keys])


def names_of(metadata: dict[str, str]) -> list[bytes]:
    """Every extended attribute kept in `metadata`."""
    names: list[bytes] = []
    for name in metadata:
        if name.startswith(XATTR_PREFIX):
            names.append(base64.urlsafe_b64decode(name[len(XATTR_PREFIX) :]))
        elif ":" not in name:
            names.append((USER_XATTR + name).encode("utf-8"))
    return names
