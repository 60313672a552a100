"""Shared fixtures: emulators (started once per session), fresh buckets and databases per test."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudmirror.local.moto import start_moto

ARTIFACTS = Path(os.environ.get("CLOUDMIRROR_TEST_ARTIFACTS", ".cloudmirror/test-artifacts"))
# memory:// stores are for tests: the security policy refuses them elsewhere (cloudmirror.policy);
# set at import so that every service and CLI process the tests start inherits it
os.environ["CLOUDMIRROR_ALLOW_MEMORY"] = "1"


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


@pytest.fixture
def fips_md5(monkeypatch):
    """hashlib.md5 as a FIPS-mode OpenSSL has it: refused unless usedforsecurity=False."""
    import hashlib

    real = hashlib.md5

    def md5(*args, usedforsecurity=True, **kw):
        if usedforsecurity:
            raise ValueError("[digital envelope routines: EVP_DigestInit_ex] disabled for FIPS")
        return real(*args, usedforsecurity=False, **kw)

    monkeypatch.setattr(hashlib, "md5", md5)
    return real


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


# ---------------------------------------------------------------- ledger databases
# The migrations run once per session into a template (a SQLite file, a PostgreSQL database);
# each test gets a copy of it: a file copy, or CREATE DATABASE ... TEMPLATE.


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A SQLite ledger file migrated to head, once per session (copied per test)."""
    from cloudmirror.ledger.db import upgrade

    path = tmp_path_factory.mktemp("ledger-template") / "ledger.db"
    upgrade(f"sqlite:///{path}")
    return path


def _copy_sqlite(template: Path, dest: Path) -> str:
    """Copy the template (and its WAL, should one be left) to `dest`; return its URL."""
    shutil.copyfile(template, dest)
    wal = template.with_name(template.name + "-wal")
    if wal.exists():
        shutil.copyfile(wal, dest.with_name(dest.name + "-wal"))
    return f"sqlite:///{dest}"


def _pg_url(name: str) -> str:
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}".replace("postgresql://", "postgresql+psycopg://")


def _drop_stale_templates(conn) -> None:
    """Templates left by sessions that died before their teardown (their pid is gone)."""
    from cloudmirror.local.procs import pid_alive

    rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'cmtest\\_template\\_%'").fetchall()
    for (name,) in rows:
        pid = name.split("_")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_template(pg_available):
    """A PostgreSQL database migrated to head, once per session; dropped at the end.

    Nothing stays connected to it (Alembic's engine uses NullPool and is disposed), as
    CREATE DATABASE ... TEMPLATE requires."""
    from cloudmirror.ledger.db import upgrade

    if not pg_available:
        pytest.skip("PostgreSQL not reachable at " + PG_ADMIN_URL)
    name = f"cmtest_template_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with _pg_admin() as conn:
        _drop_stale_templates(conn)
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        upgrade(_pg_url(name))
        yield name
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _create_from_template(template: str, name: str, *, timeout: float = 30.0) -> None:
    """CREATE DATABASE name TEMPLATE template, retried while PostgreSQL says the template is in
    use (another session's connection or copy still on it): polled with a deadline."""
    import psycopg

    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            with _pg_admin() as conn:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            return
        except psycopg.errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _make_db_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest):
    """A fresh ledger database at the migrations' head, copied from the session's template;
    returns (url, cleanup)."""
    if kind == "sqlite":
        return _copy_sqlite(request.getfixturevalue("sqlite_template"), tmp_path / "ledger.db"), lambda: None
    template = request.getfixturevalue("pg_template")  # skips when PostgreSQL is not reachable
    name = unique_name("cmtest").replace("-", "_")
    _create_from_template(template, name)

    def cleanup():
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return _pg_url(name), cleanup


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request, tmp_path):
    """A fresh ledger database, once on SQLite and once on PostgreSQL."""
    url, cleanup = _make_db_url(request.param, tmp_path, request)
    yield url
    cleanup()


@pytest.fixture
def sqlite_url(request, tmp_path):
    url, _ = _make_db_url("sqlite", tmp_path, request)
    return url


@pytest.fixture
def pg_url(request, tmp_path):
    url, cleanup = _make_db_url("postgres", tmp_path, request)
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


@dataclass(frozen=True)
class LocalStack:
    """The session's LocalStack: its endpoint, port and per-run data directory."""

    endpoint: str
    port: int
    data_dir: Path


@pytest.fixture(scope="session")
def localstack(tmp_path_factory):
    """One LocalStack in host mode for the whole session (its venv is built by `localstack/launch
    venv`, run by `make test`), with the demo setup of localstack/init/ready.d; tests isolate
    themselves with fresh bucket and queue names. At the end it must stop on SIGTERM (exit 0,
    not the SIGKILL fallback) and free its port."""
    from cloudmirror.local import procs
    from cloudmirror.local.localstack import start_localstack

    log_dir = tmp_path_factory.mktemp("localstack")
    try:
        proc, endpoint = start_localstack(log_dir=log_dir, init_hooks=True)
    except procs.LaunchError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"LocalStack unavailable here: {e}")
    port = int(endpoint.rsplit(":", 1)[1])
    yield LocalStack(endpoint=endpoint, port=port, data_dir=log_dir / f"localstack-{port}")
    proc.stop(timeout=15)
    assert proc.popen.returncode == 0, f"LocalStack exit code {proc.popen.returncode}:\n{proc.log_tail()}"
    assert not procs.pid_alive(proc.pid)
    assert not procs.port_open(port)


@pytest.fixture(scope="session")
def localstack_endpoint(localstack) -> str:
    """The session's LocalStack endpoint URL."""
    return localstack.endpoint


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
    """Azurite Blob + Queue with two accounts. Sets CLOUDMIRROR_AZURITE_CONN_<ACCOUNT> (a connection
    string per account) so locations can say ?connection_string_env=CLOUDMIRROR_AZURITE_CONN_<ACCOUNT>."""
    from cloudmirror.local.azurite import start_azurite

    az = start_azurite(log_dir=tmp_path_factory.mktemp("azurite"))
    for account in az.accounts:
        os.environ[f"CLOUDMIRROR_AZURITE_CONN_{account.upper()}"] = az.connection_string(account)
    yield az
    az.proc.stop()


def azure_location_url(account: str, container: str, prefix: str = "") -> str:
    """An az:// URL for a container on the test Azurite (credentials by connection string env)."""
    path = f"{container}/{prefix}".rstrip("/")
    return f"az://{account}/{path}?connection_string_env=CLOUDMIRROR_AZURITE_CONN_{account.upper()}"


def gcs_location_url(endpoint: str, bucket: str, prefix: str = "") -> str:
    path = f"{bucket}/{prefix}".rstrip("/")
    return f"gs://{path}?endpoint={endpoint}&project={GCS_PROJECT}"
