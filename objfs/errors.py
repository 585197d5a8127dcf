"""objfs.errors — the one exception hierarchy of objfs.

Every expected (operating) error is an `ObjfsError`. The classes know nothing of
HTTP or errno: each face maps them through one table of its own. Bugs are any
other exception; broken invariants are `assert`s inside the core.
"""

from __future__ import annotations


class ObjfsError(Exception):
    """Base of every expected (operating) error."""


class ConfigError(ObjfsError):
    """A configuration value is missing or wrong; the message names the key."""


class UsageError(ObjfsError):
    """The user asked for something that cannot be done (a CLI mistake)."""


class NotFound(ObjfsError):
    """Base of the "does not exist" errors."""


class NoSuchBucket(NotFound):
    pass


class NoSuchKey(NotFound):
    pass


class NoSuchVersion(NotFound):
    pass


class NoSuchUpload(NotFound):
    pass


class AlreadyExists(ObjfsError):
    pass


class BucketAlreadyExists(AlreadyExists):
    pass


class KeyAlreadyExists(AlreadyExists):
    """The target exists and the caller asked not to replace it (O_EXCL, If-None-Match)."""


class Conflict(ObjfsError):
    pass


class BucketNotEmpty(Conflict):
    pass


class PreconditionFailed(Conflict):
    pass


class InvalidArgument(ObjfsError):
    pass


class InvalidBucketName(InvalidArgument):
    pass


class InvalidKey(InvalidArgument):
    """A key that the core refuses to store (NUL, `.`/`..` segments, bad UTF-8, empty)."""


class KeyTooLong(InvalidArgument):
    pass


class InvalidRange(InvalidArgument):
    pass


class EntityTooLarge(InvalidArgument):
    pass


class DigestMismatch(InvalidArgument):
    """The bytes received do not match the digest the client sent with them."""


class NotSupported(ObjfsError):
    pass


class Unavailable(ObjfsError):
    """Transient: shutting down, no quorum, WAL full while a checkpoint runs."""


class OutcomeUnknown(Unavailable):
    """A change was sent to the cluster and may or may not have been committed:
    what it would reference must be kept (a later retry is safe)."""


class ReadOnly(ObjfsError):
    """The store refuses writes (opened read-only, or failsafe after corruption)."""


class NoSpace(ObjfsError):
    pass


class Corrupted(ObjfsError):
    """Stored bytes fail their checksum, or on-disk structures are inconsistent."""


class DeviceError(ObjfsError):
    """A device cannot be opened or used as asked; the message names the device and why."""
