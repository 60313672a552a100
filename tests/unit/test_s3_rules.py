"""S3 store rules that need no emulator: error classification and the multipart part size.
(The behaviour on moto is in tests/stores/test_s3_store.py.)"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

from cloudmirror.stores.base import (
    AccessDenied,
    BucketNotFound,
    ChecksumMismatch,
    FatalError,
    NotFound,
    PreconditionFailed,
    RetryableError,
)
from cloudmirror.stores.s3 import classify_error
from cloudmirror.stores.s3.transfer import effective_part_size

MiB = 1024 * 1024


def client_error(code: str, status: int, message: str = "msg", headers: dict | None = None) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}}}, "Op")


@pytest.mark.parametrize(("exc", "expected"), [
    (client_error("NoSuchKey", 404), NotFound),
    (client_error("404", 404), NotFound),
    (client_error("NoSuchBucket", 404), BucketNotFound),
    (client_error("AccessDenied", 403), AccessDenied),
    (client_error("InvalidAccessKeyId", 403), AccessDenied),
    (client_error("SignatureDoesNotMatch", 403), AccessDenied),
    (client_error("AllAccessDisabled", 403), AccessDenied),
    (client_error("PreconditionFailed", 412), PreconditionFailed),
    (client_error("412", 412), PreconditionFailed),
    (client_error("SlowDown", 503), RetryableError),
    (client_error("ThrottlingException", 400), RetryableError),
    (client_error("RequestTimeout", 400), RetryableError),
    (client_error("InternalError", 500), RetryableError),
    (client_error("WhateverBroke", 502), RetryableError),
    (client_error("BadDigest", 400), ChecksumMismatch),
    (client_error("InvalidArgument", 400), FatalError),
    (client_error("MethodNotAllowed", 405, headers={"x-amz-delete-marker": "true"}), NotFound),
    (EndpointConnectionError(endpoint_url="http://x"), RetryableError),
    (ConnectTimeoutError(endpoint_url="http://x"), RetryableError),
    (ReadTimeoutError(endpoint_url="http://x"), RetryableError),
    (ValueError("odd"), FatalError),
])
def test_classify_error(exc, expected):
    err = classify_error(exc, "bkt", "a/key")
    assert type(err) is expected
    assert str(err).startswith("s3://bkt/a/key: ")
    assert err.retryable == (expected in (RetryableError, ChecksumMismatch))


def test_classify_error_message_names_code_and_object():
    err = classify_error(client_error("NoSuchBucket", 404, "The specified bucket does not exist"), "bkt", "k")
    assert str(err) == "s3://bkt/k: NoSuchBucket: The specified bucket does not exist"
    assert err.code == "NoSuchBucket"


def test_part_size_grows_to_fit_10000_parts():
    assert effective_part_size(1, None) == 5 * MiB
    assert effective_part_size(8 * MiB, 100 * MiB) == 8 * MiB
    big = 200 * 1024**3
    ps = effective_part_size(8 * MiB, big)
    assert ps % MiB == 0 and -(-big // ps) <= 10_000
