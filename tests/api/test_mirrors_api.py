"""Mirrors through the API (SQLite and PostgreSQL): the ledger's mirrors as they run now,
seeded from the config file at startup; create / change / delete (admin), pause / resume
(operator), validated like the config file (422 naming the field), 409s, audited; a mirror
created through the API is in the list, /v1/status, /metrics, current_config, `cloudmirror
status`, and can be reconciled at once."""

from __future__ import annotations

import asyncio
import json

import yaml
from typer.testing import CliRunner

from api.app import create_app
from api.schemas import MirrorCreate, MirrorOut, MirrorUpdate
from cloudmirror.config import Mirror, validate_config
from cloudmirror.location import parse_location
from cloudmirror.services import mirrors
from cloudmirror.stores import open_store
from tests.api.conftest import assert_error, mirror_config_data, running_api
from tests.api.test_jobs import assert_job_ends
from tests.conftest import unique_name

SPEC_FIELDS = set(Mirror.model_fields)


def new_spec(name: str = "videos", **kw) -> dict:
    return {"name": name, "source": f"memory://{unique_name('src')}", "targets": [f"memory://{unique_name('dst')}"],
            **kw}


async def assert_audited(api, expected: list[tuple[str, str, str, int]]) -> list[dict]:
    """The newest audit entries are `expected` (actor, action, target, status), newest first."""
    r = await api.operator.get("/v1/audit", params={"limit": len(expected)})
    assert r.status_code == 200, r.text
    entries = r.json()["items"]
    assert [(e["actor"], e["action"], e["target"], e["status"]) for e in entries] == expected
    return entries


def test_the_bodies_are_the_config_files_mirror_entry():
    """Request and response schemas cannot drift from cloudmirror.config.Mirror."""
    assert set(MirrorCreate.model_fields) == SPEC_FIELDS
    assert set(MirrorUpdate.model_fields) == SPEC_FIELDS | {"expect_revision"}
    assert set(MirrorOut.model_fields) == SPEC_FIELDS | {"active", "revision", "origin", "created_at", "updated_at"}


async def test_the_file_seeds_the_ledger_at_startup_and_the_list_shows_it(api):
    r = await api.viewer.get("/v1/mirrors")
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [m["name"] for m in items] == ["docs", "photos"]
    photos = items[1]
    want = api.config.mirror("photos")
    assert photos["source"] == photos["active"] == want.source
    assert [t["url"] for t in photos["targets"]] == [t.url for t in want.targets]
    assert (photos["origin"], photos["revision"], photos["rpo_objective"]) == ("file", 1, 900.0)
    one = await api.viewer.get("/v1/mirrors/photos")
    assert one.json() == photos
    page = (await api.viewer.get("/v1/mirrors", params={"limit": 1})).json()
    assert [m["name"] for m in page["items"]] == ["docs"]
    rest = (await api.viewer.get("/v1/mirrors", params={"cursor": page["next_cursor"]})).json()
    assert [m["name"] for m in rest["items"]] == ["photos"] and rest["next_cursor"] is None
    assert_error(await api.viewer.get("/v1/mirrors/nope"), 404, "not_found")


async def test_a_second_start_with_the_same_file_changes_nothing(api_config, ledger):
    async with running_api(api_config, ledger) as api:
        r = await api.admin.patch("/v1/mirrors/photos", json={"rpo_objective": "5m"})
        assert r.status_code == 200 and r.json()["revision"] == 2, r.text
    app = create_app(api_config, ledger)
    async with app.router.lifespan_context(app):  # seeds again: the API's change stands
        m = await asyncio.to_thread(mirrors.get_mirror, ledger, "photos")
        assert (m["rpo_objective"], m["revision"]) == (300.0, 2)


async def test_create_change_pause_delete_with_roles_and_audit(api):
    spec = new_spec(rpo_objective="2m", filter={"prefix": "in/"})
    for client, status, code in ((api.anonymous, 401, "unauthorized"), (api.viewer, 403, "forbidden"),
                                 (api.operator, 403, "forbidden")):
        assert_error(await client.post("/v1/mirrors", json=spec), status, code)
    r = await api.admin.post("/v1/mirrors", json=spec)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/v1/mirrors/videos"
    made = r.json()
    assert (made["name"], made["origin"], made["revision"], made["rpo_objective"]) == ("videos", "api", 1, 120.0)
    assert made["filter"]["prefix"] == "in/" and made["active"] == spec["source"] and made["paused"] is False
    assert_error(await api.admin.post("/v1/mirrors", json=new_spec()), 409, "conflict")  # the name is taken

    # PATCH: fields replace, expect_revision guards
    for client, status in ((api.viewer, 403), (api.operator, 403)):
        assert_error(await client.patch("/v1/mirrors/videos", json={"paused": True}), status, "forbidden")
    r = await api.admin.patch("/v1/mirrors/videos", json={"rpo_objective": 300, "expect_revision": 1})
    assert r.status_code == 200 and (r.json()["rpo_objective"], r.json()["revision"]) == (300.0, 2), r.text
    assert r.json()["filter"]["prefix"] == "in/"  # untouched fields stay
    assert_error(await api.admin.patch("/v1/mirrors/videos", json={"rpo_objective": "1m", "expect_revision": 1}),
                 409, "conflict")
    assert_error(await api.admin.patch("/v1/mirrors/nope", json={"paused": True}), 404, "not_found")

    # pause / resume: operators may, idempotently
    assert_error(await api.viewer.post("/v1/mirrors/videos/pause"), 403, "forbidden")
    paused = (await api.operator.post("/v1/mirrors/videos/pause")).json()
    assert paused["paused"] is True and paused["revision"] == 3
    again = await api.operator.post("/v1/mirrors/videos/pause")
    assert again.status_code == 200 and again.json() == paused  # no change, no new revision
    resumed = (await api.operator.post("/v1/mirrors/videos/resume")).json()
    assert resumed["paused"] is False and resumed["revision"] == 4
    assert_error(await api.operator.post("/v1/mirrors/nope/resume"), 404, "not_found")

    # DELETE: admin only; 204, then gone
    assert_error(await api.operator.delete("/v1/mirrors/videos"), 403, "forbidden")
    r = await api.admin.delete("/v1/mirrors/videos")
    assert r.status_code == 204 and r.content == b""
    assert_error(await api.viewer.get("/v1/mirrors/videos"), 404, "not_found")
    assert_error(await api.admin.delete("/v1/mirrors/videos"), 404, "not_found")

    entries = await assert_audited(api, [
        ("test-admin", "DELETE /v1/mirrors/{name}", "/v1/mirrors/videos", 404),
        ("test-admin", "DELETE /v1/mirrors/{name}", "/v1/mirrors/videos", 204),
        ("test-operator", "DELETE /v1/mirrors/{name}", "/v1/mirrors/videos", 403),
        ("test-operator", "POST /v1/mirrors/{name}/resume", "/v1/mirrors/nope/resume", 404),
        ("test-operator", "POST /v1/mirrors/{name}/resume", "/v1/mirrors/videos/resume", 200),
        ("test-operator", "POST /v1/mirrors/{name}/pause", "/v1/mirrors/videos/pause", 200),
        ("test-operator", "POST /v1/mirrors/{name}/pause", "/v1/mirrors/videos/pause", 200),
        ("test-viewer", "POST /v1/mirrors/{name}/pause", "/v1/mirrors/videos/pause", 403),
        ("test-admin", "PATCH /v1/mirrors/{name}", "/v1/mirrors/nope", 404),
        ("test-admin", "PATCH /v1/mirrors/{name}", "/v1/mirrors/videos", 409),
        ("test-admin", "PATCH /v1/mirrors/{name}", "/v1/mirrors/videos", 200),
        ("test-operator", "PATCH /v1/mirrors/{name}", "/v1/mirrors/videos", 403),
        ("test-viewer", "PATCH /v1/mirrors/{name}", "/v1/mirrors/videos", 403),
        ("test-admin", "POST /v1/mirrors", "/v1/mirrors", 409),
        ("test-admin", "POST /v1/mirrors", "/v1/mirrors", 201),
        ("test-operator", "POST /v1/mirrors", "/v1/mirrors", 403),
        ("test-viewer", "POST /v1/mirrors", "/v1/mirrors", 403),
    ])  # the anonymous 401 is not audited (api/guard.py counts it)
    details = [e["detail"] for e in entries]
    assert details[1] == "mirror videos deleted"
    assert details[4] == "mirror videos resumed"
    assert details[5] == "mirror videos was already paused" and details[6] == "mirror videos paused"
    assert details[9].startswith("conflict: videos is at revision 2, not 1")
    assert details[10] == "mirror videos changed: rpo_objective (revision 2)"
    assert details[14] == "mirror videos created (revision 1)"


async def test_bad_specs_are_422_naming_the_field(api):
    cases = [
        (new_spec(source="ftp://nowhere/x"), "source"),
        (new_spec(targets=["s3://"]), "targets[0].url"),
        (new_spec(targets=[{"url": "memory://ok", "sse": "aws:kms", "kms_key_id": "k", "bogus": 1}]), None),
        (new_spec(bogus=True), "body.bogus"),
        (new_spec(rpo_objective="soon"), "rpo_objective"),
        (new_spec(rpo_objective=-5), "rpo_objective"),
        (new_spec(rpo_objective=[5]), "body.rpo_objective"),
        (new_spec(reconcile_every="0s"), "reconcile_every"),
        (new_spec(rpo_objective="9" * 400 + "d"), "rpo_objective"),  # not a finite number of seconds
        (new_spec(filter={"prefix": "a\x00b"}), "filter.prefix"),
        (new_spec(filter={"prefixes": ["a/"]}), "body.filter.prefixes"),
        (new_spec(events=[{"sqs": "not-a-url"}]), "body.events.0"),
        (new_spec(name="bad name!"), "body.name"),
        (new_spec(deletes="sometimes"), "body.deletes"),
        ({"name": "x", "source": "memory://a"}, "body.targets"),
    ]
    for spec, field in cases:
        r = await api.admin.post("/v1/mirrors", json=spec)
        err = assert_error(r, 422, "validation_error", field=field)
        assert err["fields"], (spec, err)
    src = "memory://overlap"
    assert_error(await api.admin.post("/v1/mirrors", json=new_spec(source=src, targets=[src + "/sub"])), 422,
                 "validation_error", field="(mirror)")
    assert_error(await api.admin.patch("/v1/mirrors/photos", json={"name": "pictures"}), 422, "validation_error",
                 field="name")
    assert_error(await api.admin.patch("/v1/mirrors/photos", json={}), 422, "validation_error", field="body")
    assert_error(await api.admin.patch("/v1/mirrors/photos", json={"source": None}), 422, "validation_error",
                 field="source")
    assert_error(await api.admin.patch("/v1/mirrors/photos", json={"rpo_objective": "1 fortnight"}), 422,
                 "validation_error", field="rpo_objective")
    assert (await api.viewer.get("/v1/mirrors/photos")).json()["revision"] == 1  # nothing changed
    assert [m["name"] for m in (await api.viewer.get("/v1/mirrors")).json()["items"]] == ["docs", "photos"]


async def test_a_mirror_of_a_group_cannot_be_deleted(ledger_url, ledger):
    data = mirror_config_data(ledger_url)
    data["groups"] = [{"name": "dr", "mirrors": ["photos"]}]
    async with running_api(validate_config(data), ledger) as api:
        err = assert_error(await api.admin.delete("/v1/mirrors/photos"), 409, "conflict")
        assert "dr" in err["message"]
        assert (await api.admin.delete("/v1/mirrors/docs")).status_code == 204
        assert (await api.viewer.get("/v1/status")).status_code == 200


async def test_a_created_mirror_is_live_everywhere_at_once(api, tmp_path):
    spec = new_spec("fresh", rpo_objective="1m")
    src = open_store(parse_location(spec["source"]))
    for i in range(3):
        await src.put(f"k{i}", b"x" * (i + 1))
    assert (await api.admin.post("/v1/mirrors", json=spec)).status_code == 201

    names = [m["name"] for m in (await api.viewer.get("/v1/mirrors")).json()["items"]]
    assert names == ["docs", "fresh", "photos"]
    rows = (await api.viewer.get("/v1/status")).json()["targets"]
    assert [(r["target"], r["rpo_objective"]) for r in rows if r["mirror"] == "fresh"] == [(spec["targets"][0], 60.0)]
    live = await asyncio.to_thread(mirrors.current_config, api.config, api.ledger)
    assert live.mirror("fresh").targets[0].url == spec["targets"][0]
    scrape = (await api.viewer.get("/metrics")).text
    assert 'cloudmirror_rpo_objective_seconds{mirror="fresh"} 60.0' in scrape

    # the API's own service reconciles it (it was not in the config file the app started with)
    r = await api.operator.post("/v1/mirrors/fresh/reconcile", json={})
    assert r.status_code == 202, r.text
    job = await assert_job_ends(api.viewer, r.json()["job"]["id"])
    assert [(x["target"], x["missing"]) for x in job["result"]] == [(spec["targets"][0], 3)]

    # ...and the CLI's status shows it, from the ledger
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(api.config.model_dump(mode="json")))
    out = await asyncio.to_thread(_cli_status, path)
    assert [(r["mirror"], r["pending"]) for r in out if r["mirror"] == "fresh"] == [("fresh", 3)]
    assert {r["mirror"] for r in out} == {"docs", "fresh", "photos"}


def _cli_status(path) -> list[dict]:
    from cloudmirror.cli import app

    r = CliRunner().invoke(app, ["status", "--json", "-c", str(path)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)
