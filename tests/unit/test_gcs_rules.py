"""GCS store rules that need no emulator: error classification and the storage class
mapping. (The behaviour on fake-gcs-server is in tests/stores/test_gcs_store.py.)"""

from __future__ import annotations

import pytest
import requests
from google.api_core import exceptions as gx

from cloudmirror.stores.base import (
    AccessDenied,
    BucketNotFound,
    ChecksumMismatch,
    FatalError,
    NotFound,
    PreconditionFailed,
    RetryableError,
)
from cloudmirror.stores.gcs.common import classify_error, storage_class_for


def test_classify_error_maps_sdk_and_transport_exceptions():
    from google.cloud.storage.exceptions import DataCorruption

    cases = [
        (gx.NotFound("No such object: b/k"), NotFound),
        (gx.NotFound("The specified bucket does not exist."), BucketNotFound),
        (gx.Forbidden("denied"), AccessDenied),
        (gx.Unauthorized("who"), AccessDenied),
        (gx.PreconditionFailed("412"), PreconditionFailed),
        (gx.TooManyRequests("slow down"), RetryableError),
        (gx.ServiceUnavailable("503"), RetryableError),
        (gx.InternalServerError("500"), RetryableError),
        (gx.BadRequest("Provided MD5 hash doesn't match"), ChecksumMismatch),
        (gx.BadRequest("Invalid argument"), FatalError),
        (requests.exceptions.ConnectionError("reset"), RetryableError),
        (requests.exceptions.ReadTimeout("slow"), RetryableError),
        (DataCorruption(None, "checksum mismatch"), ChecksumMismatch),
        (ValueError("boom"), FatalError),
    ]
    for exc, cls in cases:
        err = classify_error(exc, "bkt", "key")
        assert type(err) is cls, (exc, err)
        assert "gs://bkt" in str(err)
    assert "NoSuchBucket" in str(classify_error(gx.NotFound("Not Found"), "bkt", missing="bucket"))
    assert RetryableError.retryable and classify_error(gx.RetryError("deadline", gx.ServiceUnavailable("x")),
                                                       "b").retryable


def test_storage_class_mapping():
    assert [storage_class_for(c, "w") for c in ("STANDARD_IA", "onezone_ia", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE",
                                                "Cool", "Archive", "NEARLINE", "STANDARD", None)] == [
        "NEARLINE", "NEARLINE", "COLDLINE", "ARCHIVE", "ARCHIVE", "NEARLINE", "ARCHIVE", "NEARLINE", "STANDARD", None]
    with pytest.raises(FatalError, match="'OUTPOSTS'"):
        storage_class_for("OUTPOSTS", "gs://b/k")
