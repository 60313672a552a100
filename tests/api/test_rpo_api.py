"""Live RPO and RPO history through the API (SQLite and PostgreSQL), from ledger rows written
with explicit times: the shapes, the same figures as rpo_service, the period parameters
(ISO 8601, epoch seconds, durations) and their errors."""

from __future__ import annotations

import asyncio
import time

import pytest

from cloudmirror.config import validate_config
from cloudmirror.reports.data import iso
from cloudmirror.services.rpo import rpo_history
from tests.api.conftest import assert_error, mirror_config_data, running_api
from tests.unit.test_rpo import Writer

LATENCY_KEYS = {"count", "p50", "p90", "p99", "max"}
WINDOWS = {"5m", "1h", "24h"}


@pytest.fixture
def grouped(ledger_url):
    data = mirror_config_data(ledger_url, rpo_objective="30s")
    data["groups"] = [{"name": "dr", "mirrors": ["photos", "docs"]}]
    return validate_config(data)


@pytest.fixture
async def api(grouped, ledger):
    async with running_api(grouped, ledger) as a:
        yield a


def write_recent(api, now: float) -> tuple[str, str]:
    """photos: target A copies every write in 0.5 s; target B has had one write pending for
    120 s (over the 30 s objective). Returns (A, B)."""
    a, b = (t.url for t in api.config.mirror("photos").targets)
    w = Writer(api.ledger, mirror="photos")
    for i in range(5):
        seen = now - 600 + 60 * i
        w.put(f"k{i}", seen, {a: seen + 0.5, b: seen + 1.0})
    w.put("late", now - 120, {a: now - 119.5, b: None})
    w.flush()
    return a, b


def assert_latency(latency: dict) -> None:
    assert set(latency) == WINDOWS, latency
    for window in latency.values():
        assert set(window) == LATENCY_KEYS, window


async def test_live_rpo_of_a_mirror_a_group_and_everything(api, monkeypatch):
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)  # the RPO is read at a fixed instant, not the wall clock
    a, b = await asyncio.to_thread(write_recent, api, now)
    r = await api.viewer.get("/v1/mirrors/photos/rpo")
    assert r.status_code == 200, r.text
    live = r.json()
    assert set(live) == {"now", "targets", "mirrors", "groups"} and live["groups"] == []
    by_target = {t["target"]: t for t in live["targets"]}
    assert set(by_target) == {a, b}
    assert by_target[a]["rpo_seconds"] == 0.0 and by_target[a]["objective_met"] is True
    late = by_target[b]
    assert late["rpo_seconds"] == pytest.approx(120.1) and late["objective_met"] is False
    assert (late["backlog_objects"], late["backlog_bytes"], late["rpo_objective_seconds"]) == (1, 100, 30.0)
    assert late["oldest_pending"].endswith("Z")
    for t in live["targets"]:
        assert_latency(t["latency"])
    assert by_target[a]["latency"]["1h"]["count"] == 6 and by_target[a]["latency"]["1h"]["p50"] == 0.6  # write to copy
    [m] = live["mirrors"]
    assert (m["mirror"], m["lagging"], m["objective_met"]) == ("photos", f"photos -> {b}", False)
    assert m["rpo_seconds"] == late["rpo_seconds"] and m["backlog_objects"] == 1
    assert m["history"]["breaches"] == 1 and m["history"]["series"]

    g = (await api.viewer.get("/v1/groups/dr/rpo")).json()
    [group] = g["groups"]
    assert (group["group"], group["mirrors"], group["rpo_objective_seconds"]) == ("dr", ["photos", "docs"], 30.0)
    assert group["lagging"] == f"photos -> {b}" and {x["mirror"] for x in g["mirrors"]} == {"photos", "docs"}

    everything = (await api.viewer.get("/v1/rpo")).json()
    assert [x["mirror"] for x in everything["mirrors"]] == ["docs", "photos"]  # as the ledger keeps them
    assert [x["group"] for x in everything["groups"]] == ["dr"]

    assert_error(await api.viewer.get("/v1/mirrors/nope/rpo"), 404, "not_found")
    assert_error(await api.viewer.get("/v1/groups/nope/rpo"), 404, "not_found")
    for path in ("/v1/rpo", "/v1/mirrors/photos/rpo", "/v1/groups/dr/rpo", "/v1/mirrors/photos/rpo/history"):
        assert_error(await api.anonymous.get(path), 401, "unauthorized")


async def test_history_is_the_same_series_as_rpo_service_for_a_fixed_period(api):
    now = time.time()
    a, b = await asyncio.to_thread(write_recent, api, now)
    since, until = float(int(now) - 900), float(int(now) - 60)  # whole seconds: exact in ISO and epoch
    params = {"since": iso(since), "until": f"{until:.0f}", "points": 50}
    r = await api.viewer.get("/v1/mirrors/photos/rpo/history", params=params)
    assert r.status_code == 200, r.text
    got = r.json()
    want = await asyncio.to_thread(rpo_history, api.config, api.ledger, "photos", since=since, until=until, points=50)
    assert got == want
    assert (got["mirror"], got["target"], got["objective_s"], got["targets"]) == ("photos", None, 30.0, None)
    series = got["series"]
    assert 2 <= len(series) <= 50 and all(set(p) == {"t", "rpo_s"} for p in series)
    assert series[0]["t"] == since and series[-1]["t"] == until
    assert [p["t"] for p in series] == sorted(p["t"] for p in series)
    # the late write on B: its RPO grows from ~0 at now-120 to ~60 at until
    assert 58 < got["worst_rpo_s"] < 62 and got["worst_at"] == until

    one = (await api.viewer.get("/v1/mirrors/photos/rpo/history",
                                params={**params, "target": a, "by_target": "true"})).json()
    assert one["target"] == a and one["worst_rpo_s"] < 1.1
    assert [t["target"] for t in one["targets"]] == [a]
    both = (await api.viewer.get("/v1/mirrors/photos/rpo/history", params={**params, "by_target": "true"})).json()
    assert [t["target"] for t in both["targets"]] == [a, b]
    assert both["targets"][1]["worst_rpo_s"] == got["worst_rpo_s"] and both["series"] == series

    few = (await api.viewer.get("/v1/mirrors/photos/rpo/history", params={**params, "points": 4})).json()
    assert len(few["series"]) <= 4 and max(p["rpo_s"] for p in few["series"]) == got["worst_rpo_s"]  # peaks kept

    default = (await api.viewer.get("/v1/mirrors/photos/rpo/history")).json()
    assert 3599 < default["until"] - default["since"] < 3601  # the last hour


async def test_history_parameters_are_checked(api):
    url = "/v1/mirrors/photos/rpo/history"
    for params, field in (({"since": "yesterday-ish"}, "query.since"),
                          ({"until": "0001-01-01"}, "query.until"),
                          ({"since": "1h", "until": "2h"}, "query.until"),
                          ({"since": "2030-01-01T00:00Z", "until": "2029-01-01T00:00Z"}, "query.until"),
                          ({"points": 1}, "query.points"),
                          ({"points": 100000}, "query.points"),
                          ({"target": "memory://not-a-target"}, "query.target"),
                          ({"by_target": "perhaps"}, "query.by_target")):
        assert_error(await api.viewer.get(url, params=params), 422, "validation_error", field=field)
    assert_error(await api.viewer.get("/v1/mirrors/nope/rpo/history"), 404, "not_found")
    r = await api.viewer.get(url, params={"since": "1700000000", "until": "2023-11-14T22:15:00+00:00"})
    assert r.status_code == 200 and (r.json()["since"], r.json()["until"]) == (1700000000.0, 1700000100.0)


async def test_a_mirror_created_through_the_api_has_its_rpo_at_once(api):
    spec = {"name": "new", "source": "memory://rpo-new-src", "targets": ["memory://rpo-new-dst"],
            "rpo_objective": "1m"}
    assert (await api.admin.post("/v1/mirrors", json=spec)).status_code == 201
    live = (await api.viewer.get("/v1/mirrors/new/rpo")).json()
    assert [(t["target"], t["rpo_objective_seconds"]) for t in live["targets"]] == [("memory://rpo-new-dst", 60.0)]
    assert (await api.viewer.get("/v1/mirrors/new/rpo/history")).json()["objective_s"] == 60.0
    assert "new" in [m["mirror"] for m in (await api.viewer.get("/v1/rpo")).json()["mirrors"]]
