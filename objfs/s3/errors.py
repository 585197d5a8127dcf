"""objfs.s3.errors — every S3 error the face can answer, and the one table from core errors.

`S3Error` is what handlers, the signature check and the body decoders raise;
the app renders it as AWS's XML error body with its HTTP status. `from_core`
is the one place an `ObjfsError` of the store becomes an S3 error. Nothing else
in the face decides a status code.
"""

from __future__ import annotations

from objfs import errors as core

# code -> HTTP status, as AWS answers them.
STATUS: dict[str, int] = {
    "AccessDenied": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "BadDigest": 400,
    "BucketAlreadyExists": 409,
    "BucketAlreadyOwnedByYou": 409,
    "BucketNotEmpty": 409,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "ExpiredToken": 400,
    "IllegalVersioningConfigurationException": 400,
    "IncompleteBody": 400,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidBucketName": 400,
    "InvalidDigest": 400,
    "InvalidObjectState": 403,
    "InvalidPart": 400,
    "InvalidPartOrder": 400,
    "InvalidRange": 416,
    "InvalidURI": 400,
    "RequestHeaderSectionTooLarge": 400,
    "InvalidRequest": 400,
    "KeyTooLongError": 400,
    "MalformedPOSTRequest": 400,
    "MalformedXML": 400,
    "MaxMessageLengthExceeded": 400,
    "MetadataTooLarge": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "MissingRequestBodyError": 400,
    "MissingSecurityHeader": 400,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "NoSuchVersion": 404,
    "NotImplemented": 501,
    "PreconditionFailed": 412,
    "RequestTimeTooSkewed": 403,
    "ServiceUnavailable": 503,
    "SignatureDoesNotMatch": 403,
    "SlowDown": 503,
    "XAmzContentSHA256Mismatch": 400,
    # Not AWS's (AWS is never full): 507 as MinIO answers, so that SDKs do not retry
    # it as they retry 503; a full store stays full until something is deleted.
    "XObjfsStorageFull": 507,
}


def is_number(text: str) -> bool:
    """Whether `text` is a whole number in ASCII digits (str.isdigit also takes "²")."""
    return text.isascii() and text.isdigit()


class S3Error(Exception):
    """An S3 error response: code, message, and extra elements for the XML body."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: str,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else STATUS.get(code, 400)
        self.headers = headers or {}  # e.g. x-amz-delete-marker on a 404
        self.extra = extra  # e.g. BucketName, Key, ArgumentName: more elements of the body


# ObjfsError class -> S3 code, most specific first (subclasses before their bases).
_FROM_CORE: tuple[tuple[type[core.ObjfsError], str], ...] = (
    (core.NoSuchBucket, "NoSuchBucket"),
    (core.NoSuchKey, "NoSuchKey"),
    (core.NoSuchVersion, "NoSuchVersion"),
    (core.NoSuchUpload, "NoSuchUpload"),
    (core.BucketAlreadyExists, "BucketAlreadyOwnedByYou"),
    (core.BucketNotEmpty, "BucketNotEmpty"),
    (core.KeyAlreadyExists, "PreconditionFailed"),
    (core.PreconditionFailed, "PreconditionFailed"),
    (core.InvalidBucketName, "InvalidBucketName"),
    (core.KeyTooLong, "KeyTooLongError"),
    (core.InvalidKey, "InvalidArgument"),
    (core.InvalidRange, "InvalidRange"),
    (core.DigestMismatch, "BadDigest"),
    (core.EntityTooLarge, "EntityTooLarge"),
    (core.InvalidArgument, "InvalidArgument"),
    (core.NotSupported, "NotImplemented"),
    (core.NoSpace, "XObjfsStorageFull"),
    (core.Unavailable, "ServiceUnavailable"),
    (core.ReadOnly, "ServiceUnavailable"),
    (core.Corrupted, "InternalError"),
    (core.DeviceError, "InternalError"),
)


def from_core(error: core.ObjfsError) -> S3Error:
    """The S3 error for a store error (the one table)."""
    for kind, code in _FROM_CORE:
        if isinstance(error, kind):
            return S3Error(code, str(error))
    return S3Error("InternalError", "the store failed: " + str(error))
