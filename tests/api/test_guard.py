"""What every request meets first (api/guard.py): requests without a valid key are counted and
logged but never written to the ledger, failed authentications are limited per client (429),
bodies are capped (413) before anything parses them, and every answer carries the security
headers."""

from __future__ import annotations

import contextlib
import logging

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from api.guard import AuthFailures
from cloudmirror.config import validate_config
from cloudmirror.ledger.models import audit_log
from tests.api.conftest import assert_error, mirror_config_data, running_api

ATTACKER, OTHER = "203.0.113.7", "198.51.100.9"


@contextlib.asynccontextmanager
async def guarded_api(ledger, ledger_url, **api_settings):
    config = validate_config({**mirror_config_data(ledger_url), "api": api_settings})
    async with running_api(config, ledger) as api:
        yield api


def client_at(api, address: str, token: str | None = None, **kw) -> httpx.AsyncClient:
    """A client of the app that comes from `address`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app, client=(address, 40000), **kw),
                             base_url="http://cloudmirror.test", headers=headers)


async def counters(client: httpx.AsyncClient) -> dict[str, float]:
    """The guard's counters as /metrics shows them: {"unauthenticated:REASON": n, "body_too_large": n}."""
    r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            if sample.name == "cloudmirror_api_unauthenticated_total":
                out[f"unauthenticated:{sample.labels['reason']}"] = sample.value
            elif sample.name == "cloudmirror_api_body_too_large_total":
                out["body_too_large"] = sample.value
    return out


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}


def audit_rows(ledger) -> int:
    with ledger.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(audit_log)).scalar_one()


async def test_anonymous_posts_are_counted_and_logged_never_audited(ledger, ledger_url, caplog):
    caplog.set_level(logging.WARNING, logger="cloudmirror.api.guard")
    async with guarded_api(ledger, ledger_url) as api, client_at(api, OTHER, api.tokens["viewer"]) as viewer:
        before, rows = await counters(viewer), audit_rows(ledger)
        statuses = []
        async with client_at(api, ATTACKER) as anonymous:
            for _ in range(200):
                r = await anonymous.post("/v1/mirrors/photos/reconcile", json={"dry_run": True})
                statuses.append(r.status_code)
        # the default limit: 30 failed authentications a minute, then 429 without authenticating
        assert statuses == [401] * 30 + [429] * 170
        assert audit_rows(ledger) == rows
        assert delta(before, await counters(viewer)) == {"unauthenticated:missing": 30,
                                                          "unauthenticated:rate_limited": 170}
        lines = [rec.getMessage() for rec in caplog.records if ATTACKER in rec.getMessage()]
        assert len(lines) == 31  # one per 401, one when the client got blocked; none per 429
        assert "POST '/v1/mirrors/{name}/reconcile' (missing key)" in lines[0] and "429" in lines[-1]
        # a valid key from elsewhere is still audited, 403 included
        async with client_at(api, OTHER, api.tokens["operator"]) as operator:
            assert (await operator.post("/v1/mirrors/photos/reconcile", json={"dry_run": True})).status_code == 202
        assert (await viewer.post("/v1/failures/1/retry")).status_code == 403
        assert audit_rows(ledger) == rows + 2


async def test_a_rejected_key_is_logged_without_any_part_of_it(api, caplog):
    caplog.set_level(logging.WARNING, logger="cloudmirror.api.guard")
    secret = "cm_Sup3rS3cr3tT0k3nTh4tMustN3v3rB3L0gg3dAnyWh3r3"
    revoked = (await api.admin.post("/v1/keys", json={"name": "old", "role": "viewer"})).json()
    await api.admin.delete(f"/v1/keys/{revoked['key']['id']}")
    before = await counters(api.viewer)
    for token, reason in ((secret, "invalid"), (revoked["token"], "invalid"), ("x" * 60, "invalid")):
        caplog.clear()
        assert_error(await api.anonymous.get("/v1/status", headers={"Authorization": f"Bearer {token}"}),
                     401, "unauthorized")
        [line] = [rec.getMessage() for rec in caplog.records]
        assert f"({reason} key)" in line and "GET '/v1/status'" in line and "\n" not in line
        assert not any(token[i:i + 6] in line for i in range(len(token) - 5)), line
    caplog.clear()
    assert_error(await api.anonymous.get("/v1/status", headers={"Authorization": "Basic dXNlcjpwYXNz"}),
                 401, "unauthorized")
    [line] = [rec.getMessage() for rec in caplog.records]
    assert "(malformed key)" in line and "dXNlcjpwYXNz" not in line
    assert delta(before, await counters(api.viewer)) == {"unauthenticated:invalid": 3,
                                                         "unauthenticated:malformed": 1}


async def test_too_many_failed_authentications_from_one_client_get_429(ledger, ledger_url):
    async with guarded_api(ledger, ledger_url, auth_failures_per_minute=3) as api:
        async with client_at(api, ATTACKER, "cm_guess") as attacker, \
                client_at(api, ATTACKER, api.tokens["viewer"]) as attacker_with_a_key, \
                client_at(api, OTHER, api.tokens["viewer"]) as other, client_at(api, OTHER, "cm_typo") as typo:
            for _ in range(3):
                assert_error(await attacker.get("/v1/status"), 401, "unauthorized")
            for client in (attacker, attacker_with_a_key):  # the client is blocked, whatever key it sends now
                r = await client.get("/v1/status")
                assert_error(r, 429, "too_many_requests")
                assert 1 <= int(r.headers["retry-after"]) <= 60
                assert r.headers["x-content-type-options"] == "nosniff"
            assert (await attacker.get("/healthz")).status_code == 200  # probes stay open
            # other clients are not affected: a valid key works, a bad one is a 401, not a 429
            assert (await other.get("/v1/status")).status_code == 200
            assert_error(await typo.get("/v1/status"), 401, "unauthorized")


def test_the_failure_window_slides_and_memory_stays_bounded():
    now = [1000.0]
    failures = AuthFailures(3, window=60, clock=lambda: now[0])
    for t in (0, 10, 20):
        now[0] = 1000 + t
        assert failures.blocked_for("a") is None
        assert failures.failed("a") is (t == 20)  # the third failure blocks
    assert failures.blocked_for("a") == pytest.approx(40)  # until the first failure is a minute old
    now[0] = 1059.9
    assert failures.blocked_for("a") == pytest.approx(0.1)
    now[0] = 1060.1
    assert failures.blocked_for("a") is None  # two failures left in the last minute
    assert failures.failed("a") is True
    assert failures.blocked_for("a") == pytest.approx(9.9)  # until the failure at 1010 is a minute old
    assert failures.blocked_for("b") is None

    # a flood of addresses: at most max_clients are kept, the most recent ones
    flood = AuthFailures(3, max_clients=100, clock=lambda: now[0])
    for i in range(10_000):
        flood.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(flood.clients) == 100 and flood.entries == 100
    # at most max_entries timestamps in all; the latest client is still blocked
    busy = AuthFailures(10, max_entries=50, clock=lambda: now[0])
    for i in range(100):
        for _ in range(10):
            busy.failed(f"client-{i}")
    assert busy.entries <= 50 and sum(len(t) for t in busy.clients.values()) == busy.entries
    assert busy.blocked_for("client-99") is not None
    # clients whose failures are all older than the window are forgotten
    now[0] += 61
    flood.failed("late")
    assert list(flood.clients) == ["late"] and flood.entries == 1


async def test_a_body_over_the_cap_is_413_from_its_length_before_anything_parses_it(ledger, ledger_url):
    async with guarded_api(ledger, ledger_url, max_body_bytes=1024) as api:
        before, rows = await counters(api.viewer), audit_rows(ledger)
        junk = b"{" + b"x" * 2000  # not JSON: a parser would answer 422
        for client in (api.admin, api.anonymous):  # before authentication too
            r = await client.post("/v1/keys", content=junk, headers={"content-type": "application/json"})
            assert r.request.headers["content-length"] == "2001"
            err = assert_error(r, 413, "payload_too_large")
            assert "1024" in err["message"] and "api.max_body_bytes" in err["message"]
            assert r.headers["cache-control"] == "no-store" and r.headers["x-content-type-options"] == "nosniff"
        # up to the cap, the body is read as usual
        head = b'{"name": "k", "role": "viewer", "pad": "'
        body = head + b"x" * (1024 - len(head) - 2) + b'"}'
        assert len(body) == 1024
        assert_error(await api.admin.post("/v1/keys", content=body, headers={"content-type": "application/json"}),
                     422, "validation_error", field="body.pad")
        assert delta(before, await counters(api.viewer)) == {"body_too_large": 2}
        assert audit_rows(ledger) == rows + 1  # the 422 by the admin


async def test_a_streamed_body_is_cut_off_at_the_cap(ledger, ledger_url):
    async with guarded_api(ledger, ledger_url, max_body_bytes=1024) as api:
        before = await counters(api.viewer)
        sent = []

        async def chunks():
            for _ in range(1000):  # 500 KiB if it were all read
                sent.append(512)
                yield b"x" * 512

        r = await api.admin.post("/v1/keys", content=chunks(), headers={"content-type": "application/json"})
        assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
        assert_error(r, 413, "payload_too_large")
        assert sum(sent) <= 2048  # reading stopped at the first chunk past the cap
        assert delta(before, await counters(api.viewer)) == {"body_too_large": 1}


async def test_every_answer_has_nosniff_and_api_answers_are_not_stored(api, monkeypatch):
    for path in ("/healthz", "/openapi.json", "/docs", "/", "/ui/dashboard.js", "/v1/status", "/v1/nope", "/metrics"):
        r = await api.viewer.get(path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["cache-control"] == ("no-cache" if path in ("/", "/ui/dashboard.js") else "no-store"), path
    r = await api.anonymous.get("/v1/status")
    assert r.status_code == 401 and r.headers["x-content-type-options"] == "nosniff"
    r = await api.admin.post("/v1/keys", json={"name": "ci", "role": "viewer"})  # carries a token
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"

    from cloudmirror.services import failures

    def boom(*_a, **_k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(failures, "retry_failure", boom)
    async with client_at(api, OTHER, api.tokens["operator"], raise_app_exceptions=False) as client:
        r = await client.post("/v1/failures/1/retry")
    assert_error(r, 500, "internal")
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
