"""Issue 11, item 3: errors never carry secrets. A recognisable secret is planted in the
environment (AWS_SECRET_ACCESS_KEY, a CLOUDMIRROR_* connection string with AccountKey=SECRET,
a CLOUDMIRROR_* variable holding it bare), in a SAS token and in request bodies; every failing
path reachable here is driven (a variable that is no connection string, Azurite refusing a
wrong key and a wrong SAS signature, S3 on moto signed with the secret against a missing
bucket, failing reconcile jobs, replications that give up, a failover that aborts, a drill,
refused and malformed API requests, the CLI); then every API answer, every log record (DEBUG,
every logger) and every row of every ledger table is searched for the secret: zero hits.

Not reachable locally: an S3 signature failure (moto and LocalStack accept any secret) and a
GCS credential failure (fake-gcs-server checks no credentials); their stores' errors go
through the same sinks as the paths driven here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from dataclasses import dataclass, field

import httpx
import pytest
import yaml
from sqlalchemy import MetaData, select
from typer.testing import CliRunner

from api.app import create_app
from cloudmirror.config import validate_config
from cloudmirror.ledger.repo import Ledger
from cloudmirror.location import parse_location
from cloudmirror.redact import MARK
from cloudmirror.services import access
from cloudmirror.stores import open_store
from tests.conftest import unique_name
from tests.integration.harness import FAST_WORKERS, eventually, running


@pytest.fixture
def secret() -> str:
    # 'S3CR3T' + 34 hex digits: still a valid base64 account key once the '-' is dropped
    return f"S3CR3T-{secrets.token_hex(17)}"


@dataclass
class Seen:
    """Everything the test got back: API answers and CLI output."""

    texts: list[str] = field(default_factory=list)

    async def on_response(self, response: httpx.Response) -> None:
        await response.aread()
        # the answer only: status, headers, body (the request's URL is what the test sent)
        self.texts.append(f"{response.status_code} {dict(response.headers)} {response.text}")


@contextlib.asynccontextmanager
async def api_beside(svc, seen: Seen):
    """The app beside a running service (as `cloudmirror run` serves it), a client per role
    whose every answer is kept."""
    led = svc.ledger
    tokens = {role: access.create_key(led, f"leak-{role}-{unique_name()}", role)[0]
              for role in ("viewer", "operator", "admin")}
    app = create_app(svc.base_config, led, service=svc)

    def client(token: str | None) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cloudmirror.test",
                                 headers={"Authorization": f"Bearer {token}"} if token else {},
                                 event_hooks={"response": [seen.on_response]})

    async with app.router.lifespan_context(app), contextlib.AsyncExitStack() as stack:
        yield {role: await stack.enter_async_context(client(t)) for role, t in
               [("anonymous", None), *tokens.items()]}


def ledger_rows(ledger: Ledger) -> list[str]:
    """Every row of every table of the ledger, as text (tables found by reflection)."""
    md = MetaData()
    md.reflect(ledger.engine)
    out = []
    with ledger.engine.connect() as conn:
        for table in md.sorted_tables:
            out.extend(f"{table.name}: {tuple(row)}" for row in conn.execute(select(table)))
    return out


def assert_nothing_leaked(secret: str, *, answers: list[str], logs: list[str], rows: list[str]) -> None:
    """Neither the secret nor a recognisable part of it (its random 34 hex digits, their
    first 12) anywhere."""
    marks = (secret, secret[7:], secret[7:19])
    for kind, texts in (("API answer", answers), ("log record", logs), ("ledger row", rows)):
        for text in texts:
            assert not any(m in text for m in marks), f"{kind} holds the secret: {text[:2000]}"


def log_texts(caplog) -> list[str]:
    fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return [fmt.format(r) for r in caplog.records]


async def _job_ends(client: httpx.AsyncClient, job_id: int) -> dict:
    async def ended():
        r = await client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()["job"]
        return job if job["status"] in ("finished", "failed") else None

    return await eventually(ended, timeout=60, message=f"job {job_id} did not end")


async def _failures(client: httpx.AsyncClient, mirrors: set[str]) -> list[dict]:
    """GET /v1/failures until every mirror named has a replication that gave up."""
    async def all_failed():
        r = await client.get("/v1/failures", params={"limit": 500})
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        return items if mirrors <= {f["mirror"] for f in items} else None

    return await eventually(all_failed, timeout=90, message=f"no failure for each of {sorted(mirrors)}")


async def _bad_requests(clients: dict[str, httpx.AsyncClient], secret: str, target: str) -> list[httpx.Response]:
    """Requests that are refused and whose input holds the secret."""
    admin, viewer = clients["admin"], clients["viewer"]
    sas = f"sv=2022-11-02&ss=b&srt=co&sp=rwdl&se=2030-01-01T00:00:00Z&sig={secret}"
    got = [
        await admin.post("/v1/mirrors", json={"name": "leaky", "source": "memory://leaky-src", "targets": [
            f"az://acct/c?endpoint=https://acct.blob.core.windows.net/&{sas}"]}),
        await admin.post("/v1/mirrors", json={"name": "leaky2", "source": "memory://leaky-src", "targets": [
            "az://acct/c?connection_string_env=CLOUDMIRROR_REPORT_KEY"]}),
        await admin.post("/v1/mirrors", json={"name": f"bad name {secret}", "source": f"s3://{secret}",
                                              "targets": [f"https://x/?{sas}"]}),
        await admin.post("/v1/mirrors", content=f'{{"name": "{secret}", '.encode(),
                         headers={"Content-Type": "application/json"}),
        await admin.patch("/v1/mirrors/leak", json={"targets": [f"{target}&sig={secret}"]}),
        await clients["operator"].post("/v1/mirrors/leak/failover", json={"to": f"{target}&token={secret}"}),
        await viewer.get(f"/v1/jobs/{secret}"),
        await viewer.get("/v1/failures", params={"limit": secret}),
        await clients["anonymous"].get("/v1/mirrors", headers={"Authorization": f"Bearer {secret}"}),
        await clients["anonymous"].get("/v1/mirrors", headers={"Authorization": f"Bearer cm_{secret}"}),
    ]
    for r in got:
        assert 400 <= r.status_code < 500 and set(r.json()) == {"error"}, (r.status_code, r.text)
    return got


def _cli(config_path, *args: str) -> str:
    from cloudmirror.cli import app

    r = CliRunner().invoke(app, [*args, "-c", str(config_path)], catch_exceptions=False)
    return f"exit {r.exit_code}: {r.output}"


# ------------------------------------------------------------------ the known leak
async def test_a_location_naming_a_secret_variable_leaks_nothing(ledger_url, secret, monkeypatch, caplog, tmp_path):
    """The issue's leak: connection_string_env=AWS_SECRET_ACCESS_KEY (allowed here by a policy
    with env_prefix AWS_, so that redaction is tested on its own), through a reconcile job a
    viewer reads, replications, a failover, a drill, the CLI. The parser of the time (it
    echoed the first 40 characters of the value) is put back: what it echoes is redacted."""
    import cloudmirror.stores.azure.auth as azure_auth

    def parser_of_the_time(value: str) -> dict[str, str]:
        for part in value.split(";"):
            if "=" not in part:
                raise ValueError(f"malformed segment {part.split('=')[0][:40]!r}")
        return {}

    monkeypatch.setattr(azure_auth, "parse_connection_string", parser_of_the_time)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    caplog.set_level(logging.DEBUG)
    source = f"memory://{unique_name('src')}"
    target = "az://leakacct/c?connection_string_env=AWS_SECRET_ACCESS_KEY"
    data = {"ledger": ledger_url, "security": {"env_prefix": "AWS_"}, "workers": FAST_WORKERS,
            "mirrors": [{"name": "leak", "source": source, "targets": [target], "events": [{"poll": 0.2}]}]}
    cfg = validate_config(data)
    (config_path := tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    await open_store(parse_location(source)).put("a.txt", b"hello")
    seen = Seen()

    async with running(cfg) as r, api_beside(r.service, seen) as clients:
        viewer, operator = clients["viewer"], clients["operator"]
        started = await operator.post("/v1/mirrors/leak/reconcile", json={})
        assert started.status_code == 202, started.text
        job = await _job_ends(viewer, started.json()["job"]["id"])
        assert job["status"] == "failed" and "InvalidConnectionString" in job["error"], job
        assert MARK in job["error"] and "AWS_SECRET_ACCESS_KEY" in job["error"], job  # code, variable, no value

        [failure] = await _failures(viewer, {"leak"})
        assert "InvalidConnectionString" in failure["last_error"] and MARK in failure["last_error"], failure
        assert (await viewer.get(f"/v1/mirrors/leak/objects/{failure['key']}")).status_code == 200
        fo = await operator.post("/v1/mirrors/leak/failover", json={"to": target, "drain_timeout_s": 0.3})
        assert fo.status_code == 409, fo.text  # the backlog cannot drain: aborted, nothing changed
        drill = await operator.post("/v1/mirrors/leak/drills", json={})
        assert drill.status_code in (201, 400, 409, 422), drill.text
        await _bad_requests(clients, secret, target)
        for path in ("/v1/jobs", "/v1/failovers", "/v1/drills", "/v1/audit", "/v1/status", "/v1/mirrors/leak"):
            assert (await clients["admin"].get(path)).status_code == 200, path
        cli = await asyncio.to_thread(_cli, config_path, "reconcile", "leak", "--json")

    answers = [*seen.texts, cli]
    assert any(MARK in a for a in answers)  # what was echoed was redacted, not merely absent
    assert_nothing_leaked(secret, answers=answers, logs=log_texts(caplog), rows=ledger_rows(Ledger(ledger_url)))


# ------------------------------------------------------------------ every provider path
async def test_failing_paths_on_the_emulators_leak_nothing(ledger_url, secret, azurite, moto_endpoint, monkeypatch,
                                                           caplog, tmp_path):
    """A wrong account key and a wrong SAS signature refused by Azurite, a variable that holds
    the secret bare (no connection string), S3 on moto signed with the secret against a
    bucket that does not exist; jobs, replications, a failover and a drill on each."""
    account = "devstoreaccount1"
    blob = azurite.blob_endpoint(account)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)  # moto accepts any secret: every request is signed with it
    monkeypatch.setenv("CLOUDMIRROR_TEST_LEAK_CONN", f"DefaultEndpointsProtocol=http;AccountName={account};"
                                                     f"AccountKey={secret};BlobEndpoint={blob};")
    monkeypatch.setenv("CLOUDMIRROR_TEST_LEAK_BARE", secret)
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", f"sv=2022-11-02&ss=b&srt=sco&sp=rwdlacl&se=2030-01-01T00:00:00Z"
                                                  f"&spr=https,http&sig={secret}")
    caplog.set_level(logging.DEBUG)
    endpoint = f"http://127.0.0.1:{azurite.blob_port}"
    targets = {
        "azkey": f"az://{account}/{unique_name('c')}?connection_string_env=CLOUDMIRROR_TEST_LEAK_CONN",
        "azsas": f"az://{account}/{unique_name('c')}?credential=sas&endpoint={endpoint}",
        "bare": f"az://{account}/{unique_name('c')}?connection_string_env=CLOUDMIRROR_TEST_LEAK_BARE",
        "s3": f"s3://{unique_name('missing')}?region=us-east-1&endpoint={moto_endpoint}",
    }
    mirrors = []
    for name, target in targets.items():
        source = f"memory://{unique_name('src')}"
        await open_store(parse_location(source)).put(f"{name}/k.txt", b"data")
        mirrors.append({"name": name, "source": source, "targets": [target], "events": [{"poll": 0.2}]})
    data = {"ledger": ledger_url, "workers": FAST_WORKERS, "mirrors": mirrors}
    cfg = validate_config(data)
    (config_path := tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    seen = Seen()

    async with running(cfg) as r, api_beside(r.service, seen) as clients:
        viewer, operator = clients["viewer"], clients["operator"]
        jobs = {}
        for name in targets:
            started = await operator.post(f"/v1/mirrors/{name}/reconcile", json={})
            assert started.status_code == 202, started.text
            jobs[name] = started.json()["job"]["id"]
        ended = {name: await _job_ends(viewer, job_id) for name, job_id in jobs.items()}
        assert all(j["status"] == "failed" and j["error"] for j in ended.values()), ended
        codes = {"azkey": "AuthorizationFailure", "azsas": "AuthorizationFailure", "bare": "InvalidConnectionString",
                 "s3": "NoSuchBucket"}
        for name, job in ended.items():  # each error says what went wrong, by its code
            assert codes[name] in job["error"] or codes[name] in json.dumps(job["result"]), (name, job)

        failures = await _failures(viewer, set(targets))
        assert all(f["last_error"] for f in failures)
        for name, target in targets.items():
            fo = await operator.post(f"/v1/mirrors/{name}/failover", json={"to": target, "drain_timeout_s": 0.3})
            assert fo.status_code == 409, fo.text
        drill = await operator.post("/v1/mirrors/azkey/drills", json={})
        assert drill.status_code in (201, 400, 409, 422), drill.text
        await _bad_requests(clients, secret, targets["azkey"])
        for path in ("/v1/jobs", "/v1/failovers", "/v1/drills", "/v1/audit", "/v1/status"):
            assert (await clients["admin"].get(path)).status_code == 200, path
        cli = [await asyncio.to_thread(_cli, config_path, "reconcile", name, "--json") for name in ("azkey", "bare")]

    assert_nothing_leaked(secret, answers=[*seen.texts, *cli], logs=log_texts(caplog),
                          rows=ledger_rows(Ledger(ledger_url)))
