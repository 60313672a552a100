"""Error classification for the Azure store: the one place that maps azure-core /
azure-storage-blob / aiohttp exceptions to the StoreError hierarchy."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    IncompleteReadError,
    ServiceRequestError,
    ServiceResponseError,
)

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

_NOT_FOUND = {"BlobNotFound", "ResourceNotFound"}
_DENIED = {"AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch",
           "AuthorizationSourceIPMismatch", "AuthorizationProtocolMismatch", "AuthorizationResourceTypeMismatch",
           "AuthorizationServiceMismatch", "InsufficientAccountPermissions", "InvalidAuthenticationInfo",
           "AccountIsDisabled", "KeyBasedAuthenticationNotPermitted"}
_PRECONDITION = {"ConditionNotMet", "SourceConditionNotMet", "TargetConditionNotMet"}
_CHECKSUM = {"Md5Mismatch", "Crc64Mismatch", "InvalidMd5"}
_RETRYABLE = {"ServerBusy", "OperationTimedOut", "InternalError", "ContainerBeingDeleted", "IngressOverAccountLimit",
              "EgressOverAccountLimit", "TooManyRequests"}
_TRANSIENT = (ServiceRequestError, ServiceResponseError, IncompleteReadError, aiohttp.ClientError,
              asyncio.TimeoutError, ConnectionError, TimeoutError)


def where_of(account: str, container: str, key: str | None = None) -> str:
    return f"az://{account}/{container}/{key}" if key is not None else f"az://{account}/{container}"


def error_code(exc: BaseException) -> str | None:
    """The service's x-ms-error-code of an SDK exception as a plain string (the SDK gives
    a StorageErrorCode enum member or a str)."""
    code = getattr(exc, "error_code", None)
    if code is None:
        return None
    return str(getattr(code, "value", code))


def _reason(exc: HttpResponseError) -> str:
    text = (getattr(exc, "reason", None) or "").strip()
    msg = str(getattr(exc, "message", "") or exc)
    first = msg.strip().splitlines()[0] if msg.strip() else ""
    if first.startswith("Operation returned an invalid status"):
        first = first.split("'", 1)[-1].rstrip("'") or text
    return first or text or "request failed"


def classify_error(exc: BaseException, account: str, container: str, key: str | None = None) -> StoreError:
    """Map an SDK / transport exception to a StoreError (never raises).

    The message names the object and the service's error code, e.g.
    ``az://acct/cont/key: BlobNotFound: The specified blob does not exist.``"""
    if isinstance(exc, StoreError):
        return exc
    where = where_of(account, container, key)
    if isinstance(exc, HttpResponseError) and exc.response is not None:
        status = int(exc.status_code or exc.response.status_code or 0)
        code = error_code(exc) or str(status or "Unknown")
        text = f"{where}: {code}: {_reason(exc)}"
        if code == "ContainerNotFound":
            return BucketNotFound(f"{where}: NoSuchBucket: container {container!r} does not exist in account "
                                  f"{account!r} (ContainerNotFound)", code="NoSuchBucket")
        if code in _NOT_FOUND or status == 404:
            return NotFound(text, code=code)
        if code in _DENIED or status in (401, 403):
            return AccessDenied(text, code=code)
        if code in _PRECONDITION or status == 412:
            return PreconditionFailed(text, code=code)
        if code in _CHECKSUM:
            return ChecksumMismatch(text, code=code)
        if code in _RETRYABLE or status == 429 or status >= 500 or status == 408:
            return RetryableError(text, code=code)
        return FatalError(text, code=code)
    if isinstance(exc, ClientAuthenticationError):  # a credential that could not get a token
        first = (str(exc).strip().splitlines() or ["no credential"])[0]
        return AccessDenied(f"{where}: NoCredentials: {first}", code="NoCredentials")
    if isinstance(exc, _TRANSIENT):
        name = type(exc).__name__
        first = (str(exc).strip().splitlines() or ["timed out"])[0]
        return RetryableError(f"{where}: {name}: {first}", code=name)
    return FatalError(f"{where}: {type(exc).__name__}: {exc}", code=type(exc).__name__)


@contextmanager
def translate(account: str, container: str, key: str | None = None) -> Iterator[None]:
    """Re-raise SDK / transport exceptions inside the block as classified StoreErrors.
    ValueError is included: the SDK raises it for inputs it rejects (a malformed
    connection string or block id)."""
    try:
        yield
    except StoreError:
        raise
    except (AzureError, aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as e:
        raise classify_error(e, account, container, key) from e
