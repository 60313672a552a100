"""Reconcile jobs through the API: run in the background by the same Service.reconcile as
`cloudmirror reconcile`, followed with GET /v1/jobs/{id} until finished (polled with a
deadline), with the counts the CLI reports."""

from __future__ import annotations

import asyncio
import json

import yaml
from typer.testing import CliRunner

from cloudmirror.config import validate_config
from cloudmirror.ledger.jobs import JobLedger
from cloudmirror.location import parse_location
from cloudmirror.stores import open_store
from cloudmirror.stores.base import RetryableError
from cloudmirror.stores.memory import inject_fault
from tests.api.conftest import assert_error, mirror_config, mirror_config_data, running_api
from tests.integration.harness import eventually

CLI_KEYS = ("target", "kind", "listed", "missing", "stale", "extra", "extra_kept", "in_flight", "recorded",
            "missed_events", "examples", "target_listed", "foreign", "deletes", "delete_limit", "deletes_refused",
            "delete_sample", "refusal")


async def assert_job_ends(client, job_id: int, status: str = "finished", timeout: float = 30.0) -> dict:
    """Poll GET /v1/jobs/{id} until the job has ended, then check how."""
    async def ended():
        r = await client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()["job"]
        return job if job["status"] in ("finished", "failed") else None

    job = await eventually(ended, timeout=timeout, message=f"job {job_id} did not end")
    assert job["status"] == status, job
    return job


async def _start(client, body: dict, mirror: str = "photos") -> dict:
    r = await client.post(f"/v1/mirrors/{mirror}/reconcile", json=body)
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["kind"] == "reconcile" and job["status"] in ("queued", "running", "finished")
    return job


def _cli_reconcile(config_path, *args: str) -> list[dict]:
    from cloudmirror.cli import app

    r = CliRunner().invoke(app, ["reconcile", "photos", "--json", "-c", str(config_path), *args],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


async def test_reconcile_job_finishes_with_the_counts_the_cli_reports(ledger_url, ledger, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    data = mirror_config_data(ledger_url, source=f"file://{src}", targets=[f"file://{dst}"])
    config = validate_config(data)
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(data))
    s, d = (open_store(parse_location(f"file://{p}")) for p in (src, dst))
    for i in range(40):
        await s.put(f"k{i:03}", f"value {i}".encode())
    await d.put("k000", b"value 0")  # in sync
    await d.put("k001", b"stale!!")  # same size, other bytes
    await d.put("k002", b"much longer than the source")
    await d.put("zz-only-on-target", b"x")  # not written by cloudmirror: kept (deletes: replicate)

    cli_dry = await asyncio.to_thread(_cli_reconcile, config_path, "--dry-run")
    assert [(r["missing"], r["stale"], r["extra"]) for r in cli_dry] == [(37, 2, 1)]

    async with running_api(config, ledger) as api:
        job = await _start(api.operator, {"dry_run": True})
        assert job["params"]["dry_run"] is True and job["created_by"] == "test-operator"
        dry = await assert_job_ends(api.viewer, job["id"])
        assert [{k: r[k] for k in CLI_KEYS} for r in dry["result"]] == [{k: r[k] for k in CLI_KEYS} for r in cli_dry]
        assert dry["result"][0]["run_id"] is None and dry["progress"]["enqueued"] == 0
        assert ledger.backlog() == 0  # a dry run changes nothing

        job = await _start(api.operator, {})
        done = await assert_job_ends(api.viewer, job["id"])
        [row] = done["result"]
        assert {k: row[k] for k in ("listed", "missing", "stale", "extra")} == {
            k: cli_dry[0][k] for k in ("listed", "missing", "stale", "extra")}
        assert row["kind"] == "backfill" and row["recorded"] == 39 and row["run_id"]
        assert (row["copies_enqueued"], row["deletes_enqueued"], row["foreign"], row["deletes"]) == (39, 0, 1, 0)
        progress = done["progress"]
        assert (progress["listed"], progress["differences"], progress["enqueued"], progress["copies_enqueued"],
                progress["deletes_enqueued"], progress["foreign"], progress["targets_done"],
                progress["targets_total"]) == (40, 40, 39, 39, 0, 1, 1, 1)
        assert done["started_at"] and done["finished_at"] and done["error"] is None
        assert ledger.backlog() == 39

    # the CLI, run now, finds the same work already pending: nothing new is recorded
    again = await asyncio.to_thread(_cli_reconcile, config_path)
    assert again[0]["kind"] == "reconcile" and again[0]["recorded"] == 0 and again[0]["in_flight"] == 39


async def test_a_reconcile_above_max_deletes_fails_deleting_nothing_until_forced(ledger_url, ledger):
    config = mirror_config(ledger_url, deletes="replicate_all")  # max_deletes: 10 % by default
    photos = config.mirror("photos")
    target = photos.targets[0].name
    dst = open_store(parse_location(target))
    for i in range(12):
        await dst.put(f"extra/{i:02}", b"x")
    async with running_api(config, ledger) as api:
        dry = await assert_job_ends(api.viewer, (await _start(api.operator, {"target": target, "dry_run": True}))["id"])
        job = await assert_job_ends(api.viewer, (await _start(api.operator, {"target": target}))["id"], "failed")
        for j in (dry, job):
            [row] = j["result"]
            assert (row["deletes"], row["delete_limit"], row["deletes_refused"]) == (12, 2, True)
            assert row["delete_sample"] == [f"extra/{i:02}" for i in range(12)] and "--force" in row["refusal"]
        assert dry["error"] is None and job["result"][0]["deletes_enqueued"] == 0
        assert job["error"].startswith("deletes refused (max_deletes) on 1 target(s)") and "extra/00" in job["error"]
        assert ledger.backlog() == 0 and len([o async for o in dst.list()]) == 12

        forced = await _start(api.operator, {"target": target, "force": True})
        assert forced["params"]["force"] is True
        done = await assert_job_ends(api.viewer, forced["id"])
        assert done["result"][0]["deletes_enqueued"] == 12 and done["error"] is None
        assert ledger.backlog() == 12  # the workers (none here) carry them out


async def test_reconcile_of_every_target_a_failed_listing_and_unknown_names(api):
    photos = api.config.mirror("photos")
    src = open_store(parse_location(photos.source))
    for i in range(5):
        await src.put(f"a{i}", b"x")
    job = await _start(api.operator, {})
    done = await assert_job_ends(api.viewer, job["id"])
    assert [r["target"] for r in done["result"]] == [t.name for t in photos.targets]
    assert [r["recorded"] for r in done["result"]] == [5, 5] and done["progress"]["copies_enqueued"] == 10

    inject_fault(parse_location(photos.source).bucket, "list", RetryableError("connection reset"), times=1)
    job = await _start(api.operator, {"target": photos.targets[1].name})
    failed = await assert_job_ends(api.viewer, job["id"], "failed")
    assert "connection reset" in failed["error"] and failed["finished_at"]

    assert_error(await api.operator.post("/v1/mirrors/nope/reconcile", json={}), 404, "not_found")
    assert_error(await api.operator.post("/v1/mirrors/photos/reconcile", json={"target": "memory://other"}), 422,
                 "validation_error", field="target")

    r = await api.viewer.get("/v1/jobs", params={"limit": 1})
    assert [j["id"] for j in r.json()["items"]] == [job["id"]]
    r = await api.viewer.get("/v1/jobs", params={"cursor": r.json()["next_cursor"]})
    assert [j["status"] for j in r.json()["items"]] == ["finished"]
    assert [j["id"] for j in (await api.viewer.get("/v1/jobs", params={"status": "failed"})).json()["items"]] == [
        job["id"]]


async def test_a_second_reconcile_of_the_same_target_is_409_but_a_dry_run_is_not(api):
    photos = api.config.mirror("photos")
    # a reconcile still running in some API process (its heartbeat is fresh)
    busy = JobLedger(api.ledger).create(kind="reconcile", mirror="photos", target=photos.targets[0].name,
                                        params={"dry_run": False}, created_by="someone", owner="other-host-1",
                                        progress={})
    err = assert_error(await api.operator.post("/v1/mirrors/photos/reconcile", json={}), 409, "conflict")
    assert f"job {busy['id']}" in err["message"]
    r = await api.operator.post("/v1/mirrors/photos/reconcile", json={"target": photos.targets[0].name})
    assert_error(r, 409, "conflict")
    # another target, another mirror, or a dry run: fine
    for body, mirror in (({"target": photos.targets[1].name}, "photos"), ({}, "docs"), ({"dry_run": True}, "photos")):
        job = await _start(api.operator, body, mirror)
        await assert_job_ends(api.viewer, job["id"])


async def test_jobs_of_a_process_that_died_are_failed_at_the_next_start(api_config, ledger):
    from cloudmirror.services.jobs import ABANDONED_AFTER_S

    jobs = JobLedger(ledger)
    old = jobs.create(kind="reconcile", mirror="photos", target=None, params={"dry_run": False}, created_by="x",
                      owner="dead-host-1", progress={})
    fresh = jobs.create(kind="reconcile", mirror="docs", target=None, params={"dry_run": False}, created_by="x",
                        owner="live-host-1", progress={})
    jobs.beat(old["id"], {}, now=old["created_at"] - ABANDONED_AFTER_S - 1)
    async with running_api(api_config, ledger) as api:
        abandoned = (await api.viewer.get(f"/v1/jobs/{old['id']}")).json()["job"]
        assert abandoned["status"] == "failed" and abandoned["error"].startswith("abandoned")
        assert (await api.viewer.get(f"/v1/jobs/{fresh['id']}")).json()["job"]["status"] == "queued"
