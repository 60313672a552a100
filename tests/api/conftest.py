"""The REST API through its ASGI interface (httpx), lifespan included, on a fresh ledger
(SQLite and PostgreSQL), with one key per role."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from api.app import create_app
from cloudmirror.config import Config, validate_config
from cloudmirror.ledger.repo import Ledger
from cloudmirror.services import access
from tests.conftest import unique_name


@dataclass
class Api:
    """A running app, its ledger and config, and a client per role."""

    app: Any
    config: Config
    ledger: Ledger
    tokens: dict[str, str]
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    @property
    def anonymous(self) -> httpx.AsyncClient:
        return self.clients["anonymous"]

    @property
    def viewer(self) -> httpx.AsyncClient:
        return self.clients["viewer"]

    @property
    def operator(self) -> httpx.AsyncClient:
        return self.clients["operator"]

    @property
    def admin(self) -> httpx.AsyncClient:
        return self.clients["admin"]

    def client(self, token: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://cloudmirror.test",
                                 headers=headers)


def mirror_config_data(ledger_url: str, *, source: str | None = None, targets: list[str] | None = None,
                       **mirror: Any) -> dict:
    """Two mirrors: `photos` (two memory targets unless told) and `docs`."""
    source = source or f"memory://{unique_name('src')}"
    targets = targets or [f"memory://{unique_name('dst')}", f"memory://{unique_name('dst')}"]
    return {"ledger": ledger_url, "mirrors": [
        {"name": "photos", "source": source, "targets": targets, "events": [], **mirror},
        {"name": "docs", "source": f"memory://{unique_name('src')}", "targets": [f"memory://{unique_name('dst')}"],
         "events": []}]}


def mirror_config(ledger_url: str, **kw: Any) -> Config:
    return validate_config(mirror_config_data(ledger_url, **kw))


@contextlib.asynccontextmanager
async def running_api(config: Config, ledger: Ledger):
    """The app with its lifespan running, keys for every role, and a client for each."""
    tokens = {role: access.create_key(ledger, f"test-{role}", role)[0] for role in ("viewer", "operator", "admin")}
    app = create_app(config, ledger)
    api = Api(app=app, config=config, ledger=ledger, tokens=tokens)
    async with app.router.lifespan_context(app):
        async with contextlib.AsyncExitStack() as stack:
            api.clients["anonymous"] = await stack.enter_async_context(api.client(None))
            for role, token in tokens.items():
                api.clients[role] = await stack.enter_async_context(api.client(token))
            yield api


@pytest.fixture(autouse=True)
def _report_key(tmp_path, monkeypatch):
    """Reports are signed with a key file of the test's own, never one in ~/.config (made here:
    with a PostgreSQL ledger a missing signing key is not created on first use)."""
    from cloudmirror.reports.keys import HMAC_KEY_ENV, HMAC_KEY_FILE_ENV, KEY_ENV, KEY_FILE_ENV, generate_key_file

    for var in (KEY_ENV, HMAC_KEY_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "report-signing.pem"))
    monkeypatch.setenv(HMAC_KEY_FILE_ENV, str(tmp_path / "report-hmac.key"))
    generate_key_file(tmp_path / "report-signing.pem")


@pytest.fixture
def api_config(ledger_url) -> Config:
    return mirror_config(ledger_url)


@pytest.fixture
async def api(api_config, ledger):
    async with running_api(api_config, ledger) as a:
        yield a


def assert_error(response: httpx.Response, status: int, code: str, *, field: str | None = None) -> dict:
    """The response is our JSON error with this status and code (and names `field`)."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert err["code"] == code and isinstance(err["message"], str) and err["message"], body
    if field is not None:
        assert field in [f["field"] for f in err.get("fields") or []], body
        assert field in err["message"], body
    return err


def record_versions(ledger: Ledger, mirror: str, key: str, targets: list[str], tokens: list[str]) -> None:
    """Record versions of `key` (one per token, written a second apart) as the intake would."""
    from cloudmirror.ledger.repo import NewVersion, TargetPlan

    for i, token in enumerate(tokens):
        ledger.record([NewVersion(mirror=mirror, key=key, token=token, op="put", source_time=1000.0 + i,
                                  etag=f"etag-{token}", size=10 + i, targets=[TargetPlan(t) for t in targets])])


def fail_pending(ledger: Ledger, mirror: str, target: str, error: str = "AccessDenied: no") -> list[int]:
    """Claim every pending replication of (mirror, target) and fail it, as a worker giving up would."""
    jobs = ledger.claim(mirror, target, "test-worker", 1000, lease=60)
    for job in jobs:
        assert ledger.fail(job.id, "test-worker", error)
    return [job.id for job in jobs]
