"""objfs.fuse.names — how keys become a tree of names, and which keys cannot.

A bucket is a directory. A key `a/b/c` is the file `c` in the directory `a/b`;
a directory exists while any key lies under its prefix `a/b/`, and the marker
key `a/b/` (what mkdir makes, the S3 convention) keeps an empty one. A
directory's attributes live on its marker.

The one rule for names that cannot all be shown (docs/fuse.md): when both `a`
and keys under `a/` exist, the directory `a` is shown and the object `a` is
hidden. Keys that are not valid paths are hidden too, and left untouched: an
empty segment (`a//b`, a leading `/`), a segment longer than 255 bytes. (The
core already refuses `.`/`..` segments, NUL and control characters.)
"""

from __future__ import annotations

import errno

from objfs.fuse.errors import fail

MAX_NAME_BYTES = 255


def decode_name(name: bytes) -> str:
    """A name the kernel passed, as the key segment it is.

    Raises FUSEError: ENAMETOOLONG past 255 bytes; EINVAL when not UTF-8 (keys are UTF-8).
    """
    if len(name) > MAX_NAME_BYTES:
        raise fail(errno.ENAMETOOLONG)
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        raise fail(errno.EINVAL) from None


def is_showable(segment: str) -> bool:
    """Can this key segment be a name in a directory?"""
    return (
        segment not in ("", ".", "..")
        and "\x00" not in segment
        and len(segment.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
    )


def child_name(prefix: str, key: str) -> str | None:
    """The name under directory `prefix` of a key listed with delimiter "/" (a
    file key, or a common prefix for a directory), or None when hidden."""
    name = key[len(prefix) :].removesuffix("/")
    return name if is_showable(name) else None


def parent_of(path: str) -> tuple[str, str]:
    """(parent prefix, name) of a file key or a directory prefix."""
    stripped = path.removesuffix("/")
    cut = stripped.rfind("/") + 1
    return stripped[:cut], stripped[cut:]
