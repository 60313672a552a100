"""Shared fixtures: emulators (started once per session), fresh buckets and databases per test."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from cloudmirror.local.moto import start_moto

ARTIFACTS = Path(os.environ.get("CLOUDMIRROR_TEST_ARTIFACTS", ".cloudmirror/test-artifacts"))


@pytest.fixture(scope="session", autouse=True)
def _aws_test_credentials():
    """Emulators accept any credentials; never let tests reach a real account's."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                            "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CA_BUNDLE")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    for k in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CA_BUNDLE"):
        os.environ.pop(k, None)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """One moto server for the session; tests isolate themselves with fresh bucket names."""
    proc, endpoint = start_moto(log_dir=tmp_path_factory.mktemp("moto"))
    yield endpoint
    proc.stop()


def unique_name(prefix: str = "cm") -> str:
    """A fresh, valid bucket/queue name."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def bucket_name():
    return unique_name


@pytest.fixture
def s3_client(moto_endpoint):
    import boto3

    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
