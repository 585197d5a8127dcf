"""objfs.fuse.errors — the FUSE face's one errno table, and the guard of every handler.

pyfuse3 ends its main loop (and with it the S3 server in the same nursery) on
any exception that is not a `FUSEError`. So every handler runs under `guarded`:
an `ObjfsError` becomes its errno from `ERRNOS`, anything else is a bug that is
logged with its traceback and becomes EIO for that one call.
"""

from __future__ import annotations

import contextvars
import errno
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pyfuse3

from objfs.errors import (
    AlreadyExists,
    BucketNotEmpty,
    Conflict,
    Corrupted,
    EntityTooLarge,
    InvalidArgument,
    KeyTooLong,
    NoSpace,
    NotFound,
    NotSupported,
    ObjfsError,
    PreconditionFailed,
    ReadOnly,
    Unavailable,
)

if TYPE_CHECKING:
    from objfs.metrics import Metrics

log = logging.getLogger(__name__)

# Most specific first: the first class an error is an instance of decides.
ERRNOS: tuple[tuple[type[ObjfsError], int], ...] = (
    (NotFound, errno.ENOENT),
    (AlreadyExists, errno.EEXIST),
    (BucketNotEmpty, errno.ENOTEMPTY),
    (PreconditionFailed, errno.ESTALE),
    (Conflict, errno.EBUSY),
    (KeyTooLong, errno.ENAMETOOLONG),
    (EntityTooLarge, errno.EFBIG),
    (InvalidArgument, errno.EINVAL),
    (NoSpace, errno.ENOSPC),
    (ReadOnly, errno.EROFS),
    (NotSupported, errno.EOPNOTSUPP),
    (Unavailable, errno.EAGAIN),
    (Corrupted, errno.EIO),
)

# Set while a FUSE handler runs, so the face can tell its own changes from S3's.
IN_HANDLER: contextvars.ContextVar[bool] = contextvars.ContextVar("in_fuse_handler", default=False)


def errno_of(error: ObjfsError) -> int:
    for cls, number in ERRNOS:
        if isinstance(error, cls):
            return number
    return errno.EIO


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def guarded(handler: F) -> F:
    """Run a handler so that only `FUSEError`s leave it (see the module docstring)."""

    name = handler.__name__

    @functools.wraps(handler)
    async def run(*args: Any) -> Any:
        token = IN_HANDLER.set(True)
        metrics = getattr(args[0], "metrics", None)  # args[0]: the Operations
        if metrics is not None:
            metrics.fuse_operations.labels(name).inc()
        try:
            return await handler(*args)
        except pyfuse3.FUSEError as exc:
            _count_error(metrics, name, exc.errno)
            raise
        except ObjfsError as exc:
            number = errno_of(exc)
            if number == errno.EIO:
                log.error("%s: %s", name, exc)
            _count_error(metrics, name, number)
            raise pyfuse3.FUSEError(number) from None
        except Exception:
            log.exception("bug in FUSE handler %s%r; the call fails with EIO", name, args[1:])
            _count_error(metrics, name, errno.EIO)
            raise pyfuse3.FUSEError(errno.EIO) from None
        finally:
            IN_HANDLER.reset(token)

    return run  # type: ignore[return-value]


def _count_error(metrics: Metrics | None, operation: str, number: int) -> None:
    if metrics is not None:
        metrics.fuse_errors.labels(operation, errno.errorcode.get(number, str(number))).inc()


def fail(number: int) -> pyfuse3.FUSEError:
    """The error to raise for a POSIX rule the face itself checks: `raise fail(ENOTDIR)`."""
    return pyfuse3.FUSEError(number)
