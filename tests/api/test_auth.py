"""Access control: bearer keys, roles on every route, keys hashed at rest, revocation, and
the `cloudmirror keys` commands."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re

import pytest
from fastapi.routing import iter_route_contexts
from sqlalchemy import select
from typer.testing import CliRunner

from cloudmirror.config import validate_config
from cloudmirror.ledger.models import api_keys, audit_log
from cloudmirror.services.access import Role
from tests.api.conftest import assert_error, mirror_config_data

OPEN_PATHS = {"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


@pytest.fixture
def api_config(ledger_url):
    """Room for the tests here that call every route without a key (the limit on failed
    authentications itself is tested in test_guard.py)."""
    return validate_config({**mirror_config_data(ledger_url), "api": {"auth_failures_per_minute": 1000}})


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def _api_routes(app):
    """Every route with its effective dependencies (those of the routers it is included in too)."""
    for route in iter_route_contexts(app.routes):
        if getattr(route, "dependant", None) is not None and route.path not in OPEN_PATHS:
            yield route


def _required_role(route) -> Role | None:
    """The highest role any dependency of the route asks for."""
    found: list[Role] = []

    def walk(dependant) -> None:
        role = getattr(dependant.call, "role", None)
        if role is not None:
            found.append(role)
        for d in dependant.dependencies:
            walk(d)

    walk(route.dependant)
    return max(found, default=None)


def assert_is_our_401(r) -> None:
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"


async def test_probes_are_open_and_every_other_route_needs_a_key(api):
    assert (await api.anonymous.get("/healthz")).json() == {"status": "ok"}
    assert (await api.anonymous.get("/readyz")).json() == {"status": "ready"}
    assert (await api.anonymous.get("/openapi.json")).status_code == 200
    checked = 0
    for route in _api_routes(api.app):
        for method in route.methods:
            r = await api.anonymous.request(method, _concrete(route.path), json={} if method != "GET" else None)
            assert_is_our_401(r)
            checked += 1
    assert checked >= 14


def test_every_route_declares_a_role_and_every_change_needs_an_operator(api_config):
    from api.app import create_app

    app = create_app(api_config)
    routes = list(_api_routes(app))
    assert len(routes) >= 14
    for route in routes:
        role = _required_role(route)
        assert role is not None, f"{route.path} is not protected"
        if route.methods - {"GET", "HEAD"}:
            assert role >= Role.operator, f"{route.methods} {route.path} lets a {role.name} change things"


@pytest.mark.parametrize("header", ["Bearer cm_not-a-key", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer " + "x" * 5000])
async def test_a_bad_key_is_401(api, header):
    r = await api.anonymous.get("/v1/status", headers={"Authorization": header})
    assert_is_our_401(r)


async def test_roles_viewer_reads_operator_acts_admin_manages_keys(api):
    assert (await api.viewer.get("/v1/status")).status_code == 200
    assert (await api.viewer.get("/metrics")).status_code == 200
    for client, _role in ((api.viewer, "viewer"),):
        assert_error(await client.post("/v1/mirrors/photos/reconcile", json={"dry_run": True}), 403, "forbidden")
        assert_error(await client.post("/v1/failures/1/retry"), 403, "forbidden")
        assert_error(await client.get("/v1/audit"), 403, "forbidden")
    for client in (api.viewer, api.operator):
        assert_error(await client.get("/v1/keys"), 403, "forbidden")
        assert_error(await client.post("/v1/keys", json={"name": "x", "role": "admin"}), 403, "forbidden")
    assert (await api.operator.get("/v1/audit")).status_code == 200
    assert (await api.operator.post("/v1/mirrors/photos/reconcile", json={"dry_run": True})).status_code == 202
    assert (await api.admin.get("/v1/keys")).status_code == 200
    # 403 says which role is needed; it is not a 401 (the key is fine)
    r = await api.viewer.post("/v1/failures/1/retry")
    assert "operator" in r.json()["error"]["message"] and "www-authenticate" not in r.headers


async def test_keys_are_hashed_at_rest_and_a_revoked_key_is_401(api):
    r = await api.admin.post("/v1/keys", json={"name": "ci", "role": "operator"})
    assert r.status_code == 201
    created = r.json()
    token, key = created["token"], created["key"]
    assert token.startswith("cm_") and len(token) >= 40 and token.startswith(key["prefix"])
    assert "token_hash" not in key
    with api.ledger.engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(select(api_keys))]
    assert not any(token in str(v) for row in rows for v in row.values())  # never the token itself
    [row] = [row for row in rows if row["id"] == key["id"]]
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()

    ci = api.client(token)
    async with ci:
        assert (await ci.get("/v1/status")).status_code == 200
        listed = (await api.admin.get("/v1/keys")).json()["items"]
        assert next(k for k in listed if k["id"] == key["id"])["last_used_at"] is not None
        assert_error(await api.admin.post("/v1/keys", json={"name": "ci", "role": "viewer"}), 409, "conflict")
        r = await api.admin.delete(f"/v1/keys/{key['id']}")
        assert r.status_code == 200 and r.json()["revoked_at"] is not None
        assert_is_our_401(await ci.get("/v1/status"))
        assert (await api.admin.delete(f"/v1/keys/{key['id']}")).status_code == 200  # idempotent
    assert_error(await api.admin.delete("/v1/keys/999999"), 404, "not_found")
    # a revoked key's name may be given again
    assert (await api.admin.post("/v1/keys", json={"name": "ci", "role": "viewer"})).status_code == 201


def _cli(args: list[str]):
    from cloudmirror.cli import app

    return CliRunner().invoke(app, args, catch_exceptions=False)


async def test_cli_keys_create_list_revoke_are_audited(api, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"ledger: {api.config.ledger}\n")
    r = await asyncio.to_thread(_cli, ["keys", "create", "--name", "bot", "--role", "operator", "-c", str(cfg)])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"cm_[A-Za-z0-9_-]{43}", token)
    bot = api.client(token)
    async with bot:
        assert (await bot.get("/v1/audit")).status_code == 200  # an operator

        r = await asyncio.to_thread(_cli, ["keys", "list", "--json", "-c", str(cfg)])
        listed = json.loads(r.stdout)
        [key] = [k for k in listed if k["name"] == "bot"]
        assert key["role"] == "operator" and token not in r.stdout

        r = await asyncio.to_thread(_cli, ["keys", "create", "--name", "bot", "--role", "viewer", "-c", str(cfg)])
        assert r.exit_code == 2 and "already named 'bot'" in r.stderr
        r = await asyncio.to_thread(_cli, ["keys", "create", "--name", "x", "--role", "root", "-c", str(cfg)])
        assert r.exit_code == 2 and "role" in r.stderr

        r = await asyncio.to_thread(_cli, ["keys", "revoke", str(key["id"]), "-c", str(cfg)])
        assert r.exit_code == 0, r.output
        assert_is_our_401(await bot.get("/v1/status"))
    r = await asyncio.to_thread(_cli, ["keys", "revoke", "424242", "-c", str(cfg)])
    assert r.exit_code == 2 and "no API key with id 424242" in r.stderr

    with api.ledger.engine.connect() as conn:
        entries = [dict(row._mapping) for row in conn.execute(
            select(audit_log).where(audit_log.c.actor == "cli").order_by(audit_log.c.id))]
    assert [(e["action"], e["status"]) for e in entries] == [
        ("keys create", 201), ("keys create", 409), ("keys create", 422), ("keys revoke", 200), ("keys revoke", 404)]
    assert token not in json.dumps(entries)
