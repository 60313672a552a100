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


PG_ADMIN_URL = os.environ.get("CLOUDMIRROR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_admin():
    import psycopg

    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def pg_available():
    try:
        _pg_admin().close()
        return True
    except Exception as e:  # noqa: BLE001
        if os.environ.get("CI"):
            raise RuntimeError(f"PostgreSQL is required in CI: {e}") from e
        return False


def _make_db_url(kind: str, tmp_path: Path, pg_available: bool):
    """A fresh, migrated ledger database URL; returns (url, cleanup)."""
    from cloudmirror.ledger.db import upgrade

    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
        upgrade(url)
        return url, lambda: None
    if not pg_available:
        pytest.skip("PostgreSQL not reachable at " + PG_ADMIN_URL)
    name = unique_name("cmtest").replace("-", "_")
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://")
    upgrade(url)

    def cleanup():
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url, cleanup


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request, tmp_path, pg_available):
    """A fresh ledger database, once on SQLite and once on PostgreSQL."""
    url, cleanup = _make_db_url(request.param, tmp_path, pg_available)
    yield url
    cleanup()


@pytest.fixture
def sqlite_url(tmp_path):
    url, _ = _make_db_url("sqlite", tmp_path, False)
    return url


@pytest.fixture
def pg_url(tmp_path, pg_available):
    url, cleanup = _make_db_url("postgres", tmp_path, pg_available)
    yield url
    cleanup()


@pytest.fixture
def ledger(ledger_url):
    from cloudmirror.ledger.repo import Ledger

    led = Ledger(ledger_url)
    yield led
    led.close()


@pytest.fixture(scope="session")
def moto_endpoint_b(tmp_path_factory):
    """A second, separate S3 endpoint: copies between two endpoints are streamed, not server-side."""
    proc, endpoint = start_moto(log_dir=tmp_path_factory.mktemp("moto-b"))
    yield endpoint
    proc.stop()


@pytest.fixture(scope="session")
def localstack_endpoint(tmp_path_factory):
    """LocalStack in host mode (its venv is built by `localstack/launch venv`, run by `make test`)."""
    from cloudmirror.local.localstack import start_localstack
    from cloudmirror.local.procs import LaunchError

    try:
        proc, endpoint = start_localstack(log_dir=tmp_path_factory.mktemp("localstack"), init_hooks=False)
    except LaunchError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"LocalStack unavailable here: {e}")
    yield endpoint
    proc.stop()


# ---------------------------------------------------------------- Google Cloud and Azure emulators
GCS_PROJECT = "cloudmirror-test"
GCS_TOPIC = "gcs-events"


@pytest.fixture(scope="session")
def pubsub_host(tmp_path_factory):
    """The official Pub/Sub emulator (host:port). Skipped with the plain reason where the
    machine lacks it or Java -- never in CI, where it must run."""
    from cloudmirror.local.gcp import pubsub_unavailable, start_pubsub

    reason = pubsub_unavailable()
    if reason:
        if os.environ.get("CI"):
            raise RuntimeError(f"CI must run the GCS event tests: {reason}")
        pytest.skip(reason)
    emu = start_pubsub(log_dir=tmp_path_factory.mktemp("pubsub"))
    yield emu.host
    emu.proc.stop()


@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory):
    """fake-gcs-server without notifications (store tests): its endpoint URL."""
    from cloudmirror.local.gcp import start_fake_gcs

    gcs = start_fake_gcs(log_dir=tmp_path_factory.mktemp("fake-gcs"))
    yield gcs.endpoint
    gcs.proc.stop()


@pytest.fixture(scope="session")
def gcs_with_events(tmp_path_factory, pubsub_host):
    """fake-gcs-server publishing every finalize/delete/metadataUpdate to
    projects/GCS_PROJECT/topics/GCS_TOPIC on the Pub/Sub emulator."""
    from cloudmirror.local.gcp import start_fake_gcs

    gcs = start_fake_gcs(log_dir=tmp_path_factory.mktemp("fake-gcs-events"), pubsub_host=pubsub_host,
                         project=GCS_PROJECT, topic=GCS_TOPIC)
    yield gcs
    gcs.proc.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """Azurite Blob + Queue with two accounts. Sets AZURITE_CONN_<ACCOUNT> (a connection
    string per account) so locations can say ?connection_string_env=AZURITE_CONN_<ACCOUNT>."""
    from cloudmirror.local.azurite import start_azurite

    az = start_azurite(log_dir=tmp_path_factory.mktemp("azurite"))
    for account in az.accounts:
        os.environ[f"AZURITE_CONN_{account.upper()}"] = az.connection_string(account)
    yield az
    az.proc.stop()


def azure_location_url(account: str, container: str, prefix: str = "") -> str:
    """An az:// URL for a container on the test Azurite (credentials by connection string env)."""
    path = f"{container}/{prefix}".rstrip("/")
    return f"az://{account}/{path}?connection_string_env=AZURITE_CONN_{account.upper()}"


def gcs_location_url(endpoint: str, bucket: str, prefix: str = "") -> str:
    path = f"{bucket}/{prefix}".rstrip("/")
    return f"gs://{path}?endpoint={endpoint}&project={GCS_PROJECT}"
