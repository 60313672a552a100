"""Error classification for the S3 store: the one place that maps botocore / aiohttp
exceptions to the StoreError hierarchy (see cloudmirror.stores.base)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from botocore import exceptions as bx

from cloudmirror.stores.base import (
    AccessDenied,
    BucketNotFound,
    ChecksumMismatch,
    FatalError,
    NotFound,
    PreconditionFailed,
    RetryableError,
    StoreError,
)

_NOT_FOUND = {"NoSuchKey", "NotFound", "404", "NoSuchVersion"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
           "AccountProblem", "InvalidToken", "ExpiredToken", "403"}
_PRECONDITION = {"PreconditionFailed", "412"}
_RETRYABLE = {"SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
              "RequestTimeout", "InternalError", "ServiceUnavailable", "RequestLimitExceeded",
              "TooManyRequestsException", "OperationAborted", "503", "500"}
_CHECKSUM = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"}
_TRANSIENT_EXC = (bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError,
                  aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)


def _where(bucket: str, key: str | None) -> str:
    return f"s3://{bucket}/{key}" if key is not None else f"s3://{bucket}"


def classify_error(exc: BaseException, bucket: str, key: str | None = None) -> StoreError:
    """Map an SDK / transport exception to a StoreError (never raises).

    The message names the object and the provider's code, e.g.
    ``s3://bucket/key: NoSuchBucket: The specified bucket does not exist``.
    """
    if isinstance(exc, StoreError):
        return exc
    where = _where(bucket, key)
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {}) or {}
        meta = exc.response.get("ResponseMetadata", {}) or {}
        status = int(meta.get("HTTPStatusCode") or 0)
        code = str(err.get("Code") or status or "Unknown")
        message = err.get("Message") or _default_message(status)
        text = f"{where}: {code}: {message}"
        headers = {k.lower(): v for k, v in (meta.get("HTTPHeaders") or {}).items()}
        if headers.get("x-amz-delete-marker") == "true":
            return NotFound(f"{where}: DeleteMarker: the key (or version) is a delete marker", code="DeleteMarker")
        if code == "NoSuchBucket":
            return BucketNotFound(text, code=code)
        if code in _NOT_FOUND:
            return NotFound(text, code=code)
        if code in _DENIED:
            return AccessDenied(text, code=code)
        if code in _PRECONDITION:
            return PreconditionFailed(text, code=code)
        if code in _CHECKSUM:
            return ChecksumMismatch(text, code=code)
        if code in _RETRYABLE or code.startswith("Throttl") or status >= 500 or status == 429:
            return RetryableError(text, code=code)
        if code == "NoSuchUpload":
            return FatalError(text, code=code)
        if status == 404:
            return NotFound(text, code=code)
        if status == 403:
            return AccessDenied(text, code=code)
        if status == 412:
            return PreconditionFailed(text, code=code)
        return FatalError(text, code=code)
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return AccessDenied(f"{where}: NoCredentials: {exc}", code="NoCredentials")
    if isinstance(exc, _TRANSIENT_EXC):
        name = type(exc).__name__
        return RetryableError(f"{where}: {name}: {exc or 'timed out'}", code=name)
    return FatalError(f"{where}: {type(exc).__name__}: {exc}", code=type(exc).__name__)


def _default_message(status: int) -> str:
    return {404: "Not Found", 403: "Forbidden", 412: "Precondition Failed",
            405: "Method Not Allowed"}.get(status, f"HTTP {status}" if status else "request failed")


@contextmanager
def translate(bucket: str, key: str | None = None) -> Iterator[None]:
    """Re-raise SDK / transport exceptions inside the block as classified StoreErrors."""
    try:
        yield
    except StoreError:
        raise
    except (bx.BotoCoreError, bx.ClientError, aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as e:
        raise classify_error(e, bucket, key) from e
