"""The issue's scenario, end to end on memory stores and a real ledger (SQLite and
PostgreSQL): cloudmirror runs (a polled source, the worker pool), a target is unreachable
for N seconds while a workload is written, and the compliance report then shows one breach
of about N seconds naming the objects that waited, the same in JSON, CSV and PDF, signed."""

from __future__ import annotations

import io
import json
import time
import uuid

import pytest
from pypdf import PdfReader

import cloudmirror.services.runtime as service_module
from cloudmirror.config import validate_config
from cloudmirror.location import parse_location
from cloudmirror.reports.keys import KEY_ENV, KEY_FILE_ENV, generate_key_file
from cloudmirror.reports.render import read_csv_sections
from cloudmirror.services.rpo import build_report, rpo_live, verify_report
from cloudmirror.stores import open_store
from cloudmirror.stores.base import PutOptions, RetryableError
from cloudmirror.stores.memory import MemoryStore
from tests.integration.harness import FAST_WORKERS, eventually, running

pytestmark = pytest.mark.timeout(180)

OUTAGE_S = 4.0
OBJECTIVE_S = 0.5


class UnreachableStore(MemoryStore):
    """A memory bucket whose every call fails as a network outage would until `down_until`
    (time.monotonic()); afterwards it is an ordinary memory store."""

    down_until = 0.0

    def _check(self) -> None:
        if time.monotonic() < self.down_until:
            raise RetryableError(f"memory://{self.bucket}: connection refused (test outage)")

    async def head(self, key, opts=None):
        self._check()
        return await super().head(key, opts)

    async def get(self, key, opts=None):
        self._check()
        return await super().get(key, opts)

    async def put(self, key, body, opts=None):
        self._check()
        return await super().put(key, body, opts)

    async def delete(self, key, opts=None):
        self._check()
        return await super().delete(key, opts)

    async def copy(self, source, source_key, key, opts):
        self._check()
        return await super().copy(source, source_key, key, opts)


@pytest.fixture
def env(ledger_url, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "report-signing.pem"))
    public = generate_key_file(tmp_path / "report-signing.pem").public
    src, dst = f"memory://rpo-src-{uuid.uuid4().hex[:8]}", f"memory://rpo-dst-{uuid.uuid4().hex[:8]}"
    flaky = UnreachableStore(parse_location(dst))
    monkeypatch.setattr(service_module, "open_store",
                        lambda loc: flaky if f"memory://{loc.bucket}" == dst else open_store(loc))
    cfg = validate_config({"ledger": ledger_url, "mirrors": [
        {"name": "m", "source": src, "targets": [dst], "events": [{"poll": 0.1}], "rpo_objective": OBJECTIVE_S}],
        "workers": {**FAST_WORKERS, "max_attempts": 100}})
    return cfg, open_store(parse_location(src)), flaky, dst, public


async def test_a_target_down_for_n_seconds_is_one_breach_of_about_n_seconds(env, ledger):
    cfg, source, flaky, dst, public = env
    async with running(cfg, intake=True, workers=True):
        await source.put("before", b"written before the outage", PutOptions())
        await eventually(lambda: ledger.count(mirror="m", status="completed") == 1, message="the first copy")

        since = time.time()
        flaky.down_until = time.monotonic() + OUTAGE_S
        keys = [f"during/{i:02}" for i in range(8)]
        for k in keys:
            await source.put(k, f"written while {dst} is unreachable".encode(), PutOptions())
        await eventually(lambda: ledger.count(mirror="m", status="completed") == 1 + len(keys) and not ledger.backlog(),
                         timeout=OUTAGE_S + 60, message="every copy made once the target is back")
        live = rpo_live(cfg, ledger, mirror="m")
        until = time.time() + 0.001

    [t] = live["targets"]
    assert (t["rpo_seconds"], t["backlog_objects"], t["objective_met"]) == (0.0, 0, True)
    assert t["latency"]["5m"]["count"] == 1 + len(keys) and t["latency"]["5m"]["max"] >= OUTAGE_S - 0.5
    assert live["mirrors"][0]["history"]["breaches"] >= 1  # the outage (the first copy may have been slow too)

    files = {fmt: build_report(cfg, ledger, mirror="m", since=since, until=until, fmt=fmt)
             for fmt in ("json", "csv", "pdf")}
    for fmt, blob in files.items():
        ok, reason = verify_report(blob, cfg, public_keys=[public])
        assert ok and "Ed25519" in reason, f"{fmt}: {reason}"
    data = json.loads(files["json"])["data"]
    [b] = data["breaches"]
    # RPO passes the objective (0.5 s) after the first write of the outage and falls back when
    # the target, back after N s, has taken the last of them (retries back off <= 0.2 s)
    assert OUTAGE_S - OBJECTIVE_S - 0.5 <= b["duration_seconds"] <= OUTAGE_S + 10, b
    assert OUTAGE_S - 0.5 <= b["peak_rpo_seconds"] <= OUTAGE_S + 10 and b["open_at_end"] is False
    assert sorted(o["key"] for o in b["objects"]) == keys and b["objects_affected"] == len(keys)
    assert all(o["status"] == "completed" and o["target"] == dst for o in b["objects"])
    s = data["summary"]
    assert (s["breaches"], s["replications"], s["within_objective"], s["late"]) == (1, len(keys), 0, len(keys))

    csv = read_csv_sections(files["csv"])
    assert [(r["duration_seconds"], r["objects_affected"]) for r in csv["breaches"]] == [
        (str(b["duration_seconds"]), str(len(keys)))]
    assert sorted(r["key"] for r in csv["breach_objects"]) == keys
    pdf = [ln.strip() for p in PdfReader(io.BytesIO(files["pdf"])).pages for ln in p.extract_text().splitlines()]
    at = pdf.index("Breach 1")
    assert pdf[pdf.index("Duration (s)", at) + 1] == str(b["duration_seconds"])
    assert pdf[pdf.index("Objects affected", at) + 1] == str(len(keys))
    assert all(k in pdf for k in keys)
    assert "Breach 2" not in pdf
