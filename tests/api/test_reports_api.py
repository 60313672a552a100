"""The compliance report through the API (SQLite and PostgreSQL): the very file `cloudmirror
report` writes for the same period (same digest), in JSON, CSV and PDF, that verifies with
the public key the API publishes (nothing private); a group's; the period cap; and every bad
request as our JSON error (422 naming the field, 404, and 503 when the server has no usable
key)."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
import yaml
from typer.testing import CliRunner

from cloudmirror.config import validate_config
from cloudmirror.reports import PublicKey
from cloudmirror.reports.data import iso
from cloudmirror.reports.keys import KEY_FILE_ENV, load_public_keys
from cloudmirror.services.rpo import REPORT_MEDIA_TYPES, verify_report
from tests.api.conftest import assert_error, mirror_config_data, running_api
from tests.unit.test_rpo import T0, A, B, Writer, outage_workload

FORMATS = ("json", "csv", "pdf")
FROZEN = T0 + 200  # "now" for the API and the CLI alike, so that the two files can be compared
_TRAILER = re.compile(rb"digest[=: ]+sha256:([0-9a-f]{64})")


@pytest.fixture
def config(ledger_url):
    data = mirror_config_data(ledger_url, targets=[A, B], rpo_objective="10s")
    data["groups"] = [{"name": "dr", "mirrors": ["photos", "docs"]}]
    return validate_config(data)


@pytest.fixture
async def api(config, ledger):
    await asyncio.to_thread(outage_workload, Writer(ledger, mirror="photos"))  # A down T0+30..T0+90.2
    async with running_api(config, ledger) as a:
        yield a


def digest(blob: bytes, fmt: str) -> str:
    """The signed digest of a report file, whatever its format."""
    if fmt == "json":
        return json.loads(blob)["digest"]
    return _TRAILER.findall(blob)[-1].decode()


def cli_report(config, tmp_path, fmt: str, *args: str) -> bytes:
    from cloudmirror.cli import app

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    out = tmp_path / f"cli.{fmt}"
    r = CliRunner().invoke(app, ["report", *args, "--format", fmt, "-o", str(out), "-c", str(path)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out.read_bytes()


async def published_key(api) -> list[PublicKey]:
    """The public key as GET /v1/reports/public-key publishes it (a viewer may read it)."""
    r = await api.viewer.get("/v1/reports/public-key")
    assert r.status_code == 200, r.text
    return [PublicKey.of(k.key, "api") for k in load_public_keys_text(r.json()["public_key_pem"])]


def load_public_keys_text(pem: str) -> list[PublicKey]:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "k.pem").write_text(pem)
        return load_public_keys(Path(d) / "k.pem")


def assert_report_file(r, fmt: str, filename: str, public: list[PublicKey]) -> bytes:
    """A 200 with the format's media type, as an attachment named `filename`, that verifies
    with the published public key alone."""
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == REPORT_MEDIA_TYPES[fmt]
    assert r.headers["content-disposition"] == f'attachment; filename="{filename}"'
    ok, reason = verify_report(r.content, public_keys=public)
    assert ok and reason.startswith(f"valid {fmt} report, Ed25519 signature by key {public[0].id}"), reason
    return r.content


async def test_the_api_serves_the_file_the_cli_writes(api, tmp_path, monkeypatch):
    public = await published_key(api)
    monkeypatch.setattr(time, "time", lambda: FROZEN)
    since, until = iso(T0), iso(T0 + 120)
    for fmt in FORMATS:
        r = await api.viewer.get("/v1/reports/rpo", params={"mirror": "photos", "since": since,
                                                             "until": str(int(T0 + 120)), "format": fmt})
        blob = assert_report_file(r, fmt, f"rpo-report-photos-20231114T221320Z-20231114T221520Z.{fmt}", public)
        cli = await asyncio.to_thread(cli_report, api.config, tmp_path, fmt, "photos", "--since", since,
                                      "--until", until)
        assert digest(blob, fmt) == digest(cli, fmt), fmt
        assert blob == cli, fmt
    r = await api.viewer.get("/v1/reports/rpo", params={"mirror": "photos", "since": since, "until": until})
    data = json.loads(assert_report_file(r, "json", "rpo-report-photos-20231114T221320Z-20231114T221520Z.json",
                                         public))
    assert data["data"]["scope"]["name"] == "photos" and data["data"]["summary"]["breaches"] == 1
    assert data["data"]["generated_at"] == iso(FROZEN)
    tampered = r.content.replace(b'"breaches": 1', b'"breaches": 0', 1)
    assert tampered != r.content and not verify_report(tampered, public_keys=public)[0]


async def test_a_group_report_and_the_default_period(api, monkeypatch):
    r = await api.viewer.get("/v1/reports/rpo", params={"group": "dr", "since": str(int(T0)),
                                                         "until": str(int(T0 + 120)), "format": "csv"})
    blob = assert_report_file(r, "csv", "rpo-report-dr-20231114T221320Z-20231114T221520Z.csv", await published_key(api))
    assert b"scope_kind,group" in blob and b"scope_name,dr" in blob
    monkeypatch.setattr(time, "time", lambda: FROZEN)  # "the last 24 hours" from a fixed instant
    r = await api.viewer.get("/v1/reports/rpo", params={"mirror": "docs"})  # the last 24 hours, JSON
    assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
    period = json.loads(r.content)["data"]["period"]
    assert period["seconds"] == 86400


async def test_bad_requests_are_our_errors(api):
    url = "/v1/reports/rpo"
    for params, field in (({}, "query.mirror"),
                          ({"mirror": "photos", "group": "dr"}, "query.group"),
                          ({"mirror": "photos", "format": "xml"}, "query.format"),
                          ({"mirror": "photos", "since": "last tuesday"}, "query.since"),
                          ({"mirror": "photos", "until": "99999999999999"}, "query.until"),
                          ({"mirror": "photos", "since": "1h", "until": "2h"}, "query.until"),
                          ({"mirror": "photos", "since": ""}, "query.since")):
        assert_error(await api.viewer.get(url, params=params), 422, "validation_error", field=field)
    assert_error(await api.viewer.get(url, params={"mirror": "nope"}), 404, "not_found")
    assert_error(await api.viewer.get(url, params={"group": "nope"}), 404, "not_found")
    assert_error(await api.anonymous.get(url, params={"mirror": "photos"}), 401, "unauthorized")


async def test_no_usable_report_key_is_503_not_a_crash(api, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    monkeypatch.setenv(KEY_FILE_ENV, str(blocker / "report.key"))  # cannot be read nor created
    err = assert_error(await api.viewer.get("/v1/reports/rpo", params={"mirror": "photos"}), 503, "unavailable")
    assert "report signing key" in err["message"] and "not-a-directory" in err["message"]
    err = assert_error(await api.viewer.get("/v1/reports/public-key"), 503, "unavailable")
    assert "report signing key" in err["message"]


async def test_the_public_key_is_published_and_a_readable_key_file_refused(api, tmp_path, monkeypatch):
    import os

    r = await api.viewer.get("/v1/reports/public-key")
    assert r.status_code == 200 and r.json()["algorithm"] == "ed25519", r.text
    body = r.json()
    assert body["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----\n") and "PRIVATE" not in r.text
    [k] = load_public_keys_text(body["public_key_pem"])
    assert body["key_id"] == k.id
    r = await api.viewer.get("/v1/reports/public-key", params={"format": "pem"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-pem-file"
    assert r.text == body["public_key_pem"]
    r = await api.viewer.get("/v1/reports/rpo", params={"mirror": "photos", "since": str(int(T0)),
                                                         "until": str(int(T0 + 120))})
    assert json.loads(r.content)["key_id"] == k.id
    assert_error(await api.anonymous.get("/v1/reports/public-key"), 401, "unauthorized")
    assert_error(await api.viewer.get("/v1/reports/public-key", params={"format": "der"}), 422, "validation_error",
                 field="query.format")
    path = os.environ[KEY_FILE_ENV]
    secret_line = open(path).read().splitlines()[1]
    os.chmod(path, 0o644)
    for url in ("/v1/reports/public-key", "/v1/reports/rpo?mirror=photos"):
        r = await api.viewer.get(url)
        err = assert_error(r, 503, "unavailable")
        assert f"refusing the report signing key file {path}: mode 0644" in err["message"]
        assert f"chmod 600 {path}" in err["message"] and secret_line not in r.text


async def test_a_period_longer_than_the_cap_is_a_422_naming_the_limit(api):
    r = await api.viewer.get("/v1/reports/rpo", params={"mirror": "photos", "since": "2020-01-01",
                                                         "until": "2024-01-01"})
    err = assert_error(r, 422, "validation_error", field="query.since")
    assert "longer than the limit api.max_report_period (400d)" in err["message"]


async def test_a_smaller_cap_also_shortens_the_default_period(ledger_url, ledger, monkeypatch):
    data = mirror_config_data(ledger_url, targets=[A, B])
    data["api"] = {"max_report_period": "1h"}
    monkeypatch.setattr(time, "time", lambda: FROZEN)
    async with running_api(validate_config(data), ledger) as small:
        r = await small.viewer.get("/v1/reports/rpo", params={"mirror": "photos", "since": "2h"})
        assert "api.max_report_period (1h)" in assert_error(r, 422, "validation_error", field="query.since")["message"]
        r = await small.viewer.get("/v1/reports/rpo", params={"mirror": "photos"})  # the default 24 h, cut to 1 h
        assert r.status_code == 200, r.text
        assert json.loads(r.content)["data"]["period"]["seconds"] == 3600


def test_the_document_describes_the_new_routes(config):
    from api.app import create_app

    doc = create_app(config).openapi()
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    report = paths["/v1/reports/rpo"]["get"]
    assert set(report["responses"]["200"]["content"]) == {"application/json", "text/csv", "application/pdf"}
    assert {"404", "422", "503"} <= set(report["responses"])
    assert {p["name"] for p in report["parameters"]} == {"mirror", "group", "since", "until", "format"}
    key = paths["/v1/reports/public-key"]["get"]
    assert set(key["responses"]["200"]["content"]) == {"application/json", "application/x-pem-file"}
    assert schemas["ReportPublicKey"]["examples"] and {"503"} <= set(key["responses"])
    history = paths["/v1/mirrors/{name}/rpo/history"]["get"]
    assert history["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RpoHistory"}
    for name in ("MirrorCreate", "MirrorUpdate", "MirrorOut", "RpoLive", "RpoHistory"):
        assert schemas[name]["examples"], name
    assert "expect_revision" in schemas["MirrorUpdate"]["properties"]
    assert set(paths["/v1/mirrors"]) == {"get", "post"}
    assert set(paths["/v1/mirrors/{name}"]) == {"get", "patch", "delete"}
