"""RPO over time: the step function, breaches and percentiles (pure), the ledger reads behind
them (SQLite and PostgreSQL, rows written through the ledger with explicit times), the live
figures of rpo_service.rpo_live and the /metrics collector."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from cloudmirror.config import validate_config
from cloudmirror.errors import NotFoundError
from cloudmirror.ledger import rpo as ledger_rpo
from cloudmirror.ledger.repo import Ledger, NewVersion, TargetPlan
from cloudmirror.replication.rpo import (
    Interval,
    attach_late,
    find_breaches,
    latency_summary,
    percentile,
    rpo_steps,
    series,
    worst,
)
from cloudmirror.services import metrics as ledger_metrics
from cloudmirror.services.rpo import rpo_live

T0 = 1_700_000_000.0
A, B = "memory://rpo-a", "memory://rpo-b"


# ------------------------------------------------------------------ synthetic ledger rows
@dataclass
class Writer:
    """Writes versions and their outcomes through the ledger's own functions, at given times."""

    ledger: Ledger
    mirror: str = "m"
    n: int = 0
    pending_done: list = field(default_factory=list)

    def put(self, key: str, seen: float, targets: dict[str, float | None], *, source_time: float | None = None,
            size: int = 100, mirror: str | None = None) -> None:
        """Record a write seen at `seen` (source write `source_time`, default seen - 0.1) and,
        per target, when its copy completes (None: it stays pending). Call flush() after."""
        mirror = mirror or self.mirror
        self.n += 1
        st = seen - 0.1 if source_time is None else source_time
        self.ledger.record([NewVersion(mirror=mirror, key=key, token=f"t{self.n}", op="put", source_time=st, size=size,
                                       targets=[TargetPlan(t) for t in targets])], now=seen)
        for t, done in targets.items():
            if done is not None:
                self.pending_done.append((done, mirror, t, key))

    def flush(self) -> None:
        """Complete the recorded copies in time order: claim the target's due work, complete
        the one key, give the rest back."""
        for done, mirror, target, key in sorted(self.pending_done):
            jobs = self.ledger.claim(mirror, target, "test", 100_000, 1e9, now=done)
            self.ledger.complete_many("test", [dict(id=j.id, bytes=100) for j in jobs if j.key == key], now=done)
            self.ledger.release("test", [j.id for j in jobs if j.key != key])
        self.pending_done.clear()

    def fail(self, mirror: str, target: str, key: str, at: float) -> None:
        jobs = self.ledger.claim(mirror, target, "test", 100_000, 1e9, now=at)
        for j in jobs:
            if j.key == key:
                self.ledger.fail(j.id, "test", "gave up (test)")
        self.ledger.release("test", [j.id for j in jobs if j.key != key])


def outage_workload(w: Writer, *, down_from: float = 30.0, down_until: float = 90.2) -> None:
    """20 writes, one every 5 s from T0 to two targets; A is down from `down_from` to
    `down_until` (copies there wait until then), B copies each write in 0.5 s."""
    for i in range(20):
        t = T0 + 5 * i
        done_a = T0 + down_until if down_from <= 5 * i < down_until else t + 0.5
        w.put(f"k{i:02}", t, {A: done_a, B: t + 0.5})
    w.flush()


# ------------------------------------------------------------------ pure computation
def rpo_brute(intervals, t):
    """RPO at t by definition, for cross-checking the sweep."""
    pending = [iv.source_time for iv in intervals if iv.start <= t and (iv.end is None or t < iv.end)]
    return max(0.0, t - min(pending)) if pending else 0.0


def rpo_from_steps(steps, t):
    for s in steps:
        if s.start <= t < s.end:
            return s.rpo_at(t)
    raise AssertionError(f"{t} outside the steps")


def test_nothing_pending_is_rpo_zero_and_no_breach():
    steps = rpo_steps([], 0.0, 100.0)
    assert [(s.start, s.end, s.oldest) for s in steps] == [(0.0, 100.0, None)]
    assert worst(steps, 0.0) == (0.0, 0.0)
    assert find_breaches(steps, 5.0, 100.0) == []


def test_one_slow_copy_makes_one_breach_from_objective_to_completion():
    steps = rpo_steps([Interval(10.0, 20.0, 9.0)], 0.0, 30.0)
    assert [(s.start, s.end, s.oldest) for s in steps] == [(0.0, 10.0, None), (10.0, 20.0, 9.0), (20.0, 30.0, None)]
    assert worst(steps, 0.0) == (11.0, 20.0)
    [b] = find_breaches(steps, 5.0, 30.0)
    assert (b.start, b.end, b.peak_rpo, b.peak_at, b.open_at_end) == (14.0, 20.0, 11.0, 20.0, False)


def test_an_older_write_seen_late_sets_the_rpo_while_pending():
    ivs = [Interval(10.0, 30.0, 9.0), Interval(15.0, 20.0, 2.0)]
    steps = rpo_steps(ivs, 0.0, 40.0)
    assert [(s.start, s.end, s.oldest) for s in steps] == [
        (0.0, 10.0, None), (10.0, 15.0, 9.0), (15.0, 20.0, 2.0), (20.0, 30.0, 9.0), (30.0, 40.0, None)]
    assert worst(steps, 0.0) == (21.0, 30.0)


def test_end_and_start_at_one_instant_are_two_breaches_but_overlap_is_one():
    apart = rpo_steps([Interval(0.0, 10.0, 0.0), Interval(10.0, 20.0, 10.0)], 0.0, 20.0)
    assert [(b.start, b.end) for b in find_breaches(apart, 5.0, 20.0)] == [(5.0, 10.0), (15.0, 20.0)]
    overlapping = rpo_steps([Interval(0.0, 10.0, 0.0), Interval(5.0, 20.0, 4.0)], 0.0, 30.0)
    [b] = find_breaches(overlapping, 3.0, 30.0)
    assert (b.start, b.end, b.peak_rpo, b.peak_at) == (3.0, 20.0, 16.0, 20.0)


def test_the_period_clips_intervals_and_an_open_breach_is_marked():
    ivs = [Interval(-50.0, None, -60.0), Interval(-100.0, -20.0, -100.0), Interval(200.0, 300.0, 199.0)]
    steps = rpo_steps(ivs, 0.0, 100.0)
    assert [(s.start, s.end, s.oldest) for s in steps] == [(0.0, 100.0, -60.0)]
    [b] = find_breaches(steps, 30.0, 100.0)
    assert (b.start, b.end, b.open_at_end, b.peak_rpo) == (0.0, 100.0, True, 160.0)


def test_late_objects_belong_to_their_breach_and_young_ones_do_not():
    ivs = [Interval(0.0, 10.0, 0.0, "slow"), Interval(4.0, 6.0, 4.0, "young"), Interval(20.0, 30.0, 19.0, "later"),
           Interval(40.0, 41.0, 40.0, "quick")]
    steps = rpo_steps(ivs, 0.0, 50.0)
    got = attach_late(find_breaches(steps, 3.0, 50.0), ivs, 3.0, 0.0, 50.0)
    assert [(b.start, b.end, b.refs) for b in got] == [(3.0, 10.0, ("slow",)), (22.0, 30.0, ("later",))]


def test_the_sweep_matches_the_definition_on_random_workloads():
    rnd = random.Random(7)
    for _ in range(30):
        ivs = []
        for i in range(rnd.randint(0, 40)):
            start = rnd.uniform(-20, 100)
            end = None if rnd.random() < 0.1 else start + rnd.choice([0.0, rnd.uniform(0, 30)])
            ivs.append(Interval(start, end, start - rnd.uniform(0, 5), i))
        since, until = 0.0, 100.0
        steps = rpo_steps(ivs, since, until)
        assert steps[0].start == since and steps[-1].end == until
        assert all(a.end == b.start for a, b in zip(steps, steps[1:], strict=False))
        for t in [rnd.uniform(since, until) for _ in range(60)]:
            assert rpo_from_steps(steps, t) == pytest.approx(rpo_brute(ivs, t))
        objective = rnd.uniform(1, 10)
        breaches = find_breaches(steps, objective, until)
        for t in [rnd.uniform(since, until) for _ in range(60)]:
            inside = any(b.start < t < b.end for b in breaches)
            edge = any(abs(t - x) < 1e-9 for b in breaches for x in (b.start, b.end))
            assert edge or inside == (rpo_brute(ivs, t) > objective)


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 11)]
    assert [percentile(values, q) for q in (50, 90, 99, 100)] == [5.0, 9.0, 10.0, 10.0]
    assert percentile([], 50) is None
    assert latency_summary([3.0, 1.0, 2.0]) == dict(count=3, p50=2.0, p90=3.0, p99=3.0, max=3.0)
    assert latency_summary([]) == dict(count=0, p50=None, p90=None, p99=None, max=None)


def test_a_long_series_is_reduced_without_losing_the_peak():
    ivs = [Interval(float(i), float(i) + 0.5 + (30.0 if i == 4321 else 0.0), float(i) - 0.2) for i in range(10_000)]
    steps = rpo_steps(ivs, 0.0, 10_000.0)
    pts = series(steps, 0.0, 10_000.0, max_points=600)
    assert len(pts) <= 600
    assert max(v for _, v in pts) == pytest.approx(worst(steps, 0.0)[0]) == pytest.approx(30.7)
    small = series(rpo_steps([Interval(10.0, 20.0, 9.0)], 0.0, 30.0), 0.0, 30.0)
    assert small == [(0.0, 0.0), (10.0, 0.0), (10.0, 1.0), (20.0, 11.0), (20.0, 0.0), (30.0, 0.0)]


# ------------------------------------------------------------------ ledger reads
def test_period_rows_know_when_each_copy_stopped_being_pending(ledger):
    w = Writer(ledger)
    w.put("old", T0 - 100, {A: T0 - 90})  # done before the period: not read
    w.put("slow", T0 - 10, {A: T0 + 5})  # pending when the period began
    w.put("open", T0 + 1, {A: None})
    w.put("broken", T0 + 2, {A: None})
    w.flush()
    w.fail("m", A, "broken", T0 + 3)
    w.put("failed-then-fixed", T0 + 4, {A: None})
    w.fail("m", A, "failed-then-fixed", T0 + 5)
    w.put("failed-then-fixed", T0 + 6, {A: T0 + 7})  # a newer version of the key is copied
    w.flush()
    rows = {r["key"]: r for r in ledger_rpo.period_rows(ledger, ["m"], T0, T0 + 60) if r["status"] != "superseded"}
    assert "old" not in rows
    assert rows["slow"]["end"] == T0 + 5 and rows["slow"]["source_time"] == pytest.approx(T0 - 10.1)
    assert rows["open"]["end"] is None and rows["broken"]["end"] is None
    fixed = [r for r in ledger_rpo.period_rows(ledger, ["m"], T0, T0 + 60) if r["key"] == "failed-then-fixed"]
    assert [(r["status"], r["end"]) for r in fixed] == [("failed", T0 + 7), ("completed", T0 + 7)]
    assert ledger_rpo.period_rows(ledger, [], T0, T0 + 60) == []


def test_backlog_counts_objects_bytes_failures_and_the_oldest_unreplicated(ledger):
    w = Writer(ledger)
    w.put("a", T0, {A: None, B: T0 + 1}, size=10)
    w.put("b", T0 + 1, {A: None}, size=32)
    w.put("c", T0 + 2, {B: None}, size=5)
    w.flush()
    w.fail("m", B, "c", T0 + 3)
    got = {r["target"]: r for r in ledger_rpo.backlog(ledger)}
    assert (got[A]["backlog_objects"], got[A]["backlog_bytes"], got[A]["failed"]) == (2, 42, 0)
    assert got[A]["oldest_open"] == pytest.approx(T0 - 0.1)
    assert (got[B]["backlog_objects"], got[B]["backlog_bytes"], got[B]["failed"]) == (0, 0, 1)
    assert got[B]["oldest_open"] == pytest.approx(T0 + 1.9)  # a failed copy is not on the target
    assert ledger_rpo.backlog(ledger, ["other"]) == []


def test_sql_latency_percentiles_equal_the_pure_ones(ledger):
    w = Writer(ledger)
    rnd = random.Random(3)
    lat = []
    for i in range(57):
        d = round(rnd.uniform(0.1, 20), 3)
        w.put(f"k{i}", T0 + i, {A: T0 + i + d}, source_time=T0 + i)
        lat.append(d)
    w.flush()
    got = ledger_rpo.latency_percentiles(ledger, ["m"], T0, T0 + 1000, target=A)
    want = latency_summary(lat)
    assert got["count"] == want["count"] == 57
    for k in ("p50", "p90", "p99", "max"):
        assert got[k] == pytest.approx(want[k], abs=1e-6)
    assert ledger_rpo.latency_percentiles(ledger, ["m"], T0, T0 + 1000, target=B)["count"] == 0


# ------------------------------------------------------------------ live figures and /metrics
def two_target_config(url: str, objective: str = "10s"):
    return validate_config({"ledger": url, "mirrors": [
        {"name": "m", "source": "memory://rpo-src", "targets": [A, B], "rpo_objective": objective},
        {"name": "n", "source": "memory://rpo-src2", "targets": ["memory://rpo-c"], "rpo_objective": "1h"}],
        "groups": [{"name": "g", "mirrors": ["m", "n"]}]})


def test_rpo_live_per_target_mirror_and_group(ledger, ledger_url):
    cfg = two_target_config(ledger_url)
    w = Writer(ledger)
    outage_workload(w)
    w.put("stuck", T0 + 100, {A: None}, size=7)
    w.flush()
    live = rpo_live(cfg, ledger, now=T0 + 120)
    t = {r["target"]: r for r in live["targets"]}
    assert t[A]["rpo_seconds"] == pytest.approx(20.1) and t[A]["objective_met"] is False
    assert (t[A]["backlog_objects"], t[A]["backlog_bytes"]) == (1, 7)
    assert t[B]["rpo_seconds"] == 0.0 and t[B]["objective_met"] is True
    assert t[B]["latency"]["5m"] == dict(count=20, p50=0.6, p90=0.6, p99=0.6, max=0.6)
    assert t[A]["latency"]["24h"]["max"] == pytest.approx(60.3)
    assert t["memory://rpo-c"]["rpo_seconds"] == 0.0 and t["memory://rpo-c"]["latency"]["1h"]["count"] == 0
    m = next(x for x in live["mirrors"] if x["mirror"] == "m")
    assert m["rpo_seconds"] == pytest.approx(20.1) and m["lagging"] == f"m -> {A}"
    assert m["latency"]["1h"]["count"] == 40
    assert m["history"]["breaches"] == 2  # the outage and the stuck write
    assert m["history"]["worst_rpo_seconds"] == pytest.approx(60.3)
    [g] = live["groups"]
    assert (g["group"], g["rpo_objective_seconds"], g["objective_met"]) == ("g", 10.0, False)
    only = rpo_live(cfg, ledger, mirror="n", now=T0 + 120)
    assert [r["target"] for r in only["targets"]] == ["memory://rpo-c"] and only["groups"] == []
    assert [x["group"] for x in rpo_live(cfg, ledger, group="g", now=T0 + 120)["groups"]] == ["g"]
    with pytest.raises(NotFoundError, match="no mirror named 'nope'"):
        rpo_live(cfg, ledger, mirror="nope")
    with pytest.raises(NotFoundError, match="no group named 'nope'"):
        rpo_live(cfg, ledger, group="nope")


def metric(text: str, name: str, **labels) -> float:
    want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    for line in text.splitlines():
        if line.startswith(name + want + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{want} not exposed")


def test_metrics_collector_reads_the_ledger_at_scrape_time(ledger, ledger_url):
    cfg = two_target_config(ledger_url)
    registry = CollectorRegistry()
    ledger_metrics.register_ledger_collector(cfg, ledger, registry)
    text = generate_latest(registry).decode()
    assert metric(text, "cloudmirror_ledger_up") == 1
    assert metric(text, "cloudmirror_backlog_objects", mirror="m", target=A) == 0
    w = Writer(ledger)
    w.put("x", T0, {A: None, B: None}, size=11)
    w.put("y", T0 + 1, {A: None}, size=5)
    w.flush()
    w.fail("m", B, "x", T0 + 2)
    ledger_metrics.register_ledger_collector(cfg, ledger, registry)  # registering again only rebinds
    text = generate_latest(registry).decode()
    assert metric(text, "cloudmirror_backlog_objects", mirror="m", target=A) == 2
    assert metric(text, "cloudmirror_backlog_bytes", mirror="m", target=A) == 16
    assert metric(text, "cloudmirror_failed_replications", mirror="m", target=B) == 1
    assert metric(text, "cloudmirror_rpo_seconds", mirror="m", target=A) > 1000  # written in 2023
    assert metric(text, "cloudmirror_missed_events_total", mirror="m", target=A) == 0
    assert metric(text, "cloudmirror_rpo_objective_seconds", mirror="n") == 3600
    assert metric(text, "cloudmirror_group_rpo_seconds", group="g") == metric(
        text, "cloudmirror_rpo_seconds", mirror="m", target=A)
    ledger.close()  # an unreadable ledger does not fail the scrape
    broken = Ledger("sqlite:////nonexistent-dir/ledger.db")
    ledger_metrics.register_ledger_collector(cfg, broken, registry)
    assert metric(generate_latest(registry).decode(), "cloudmirror_ledger_up") == 0
    broken.close()


def test_status_and_live_rpo_agree_that_a_failed_copy_holds_the_rpo(ledger, ledger_url):
    from cloudmirror.services.status import group_status, status

    cfg = two_target_config(ledger_url)
    w = Writer(ledger)
    w.put("c", T0 + 2, {B: None}, size=5)
    w.fail("m", B, "c", T0 + 3)
    rows = {r["target"]: r for r in status(cfg, ledger, now=T0 + 50)}
    live = {r["target"]: r for r in rpo_live(cfg, ledger, now=T0 + 50)["targets"]}
    assert rows[B]["failed"] == 1 and rows[B]["pending"] == 0
    assert rows[B]["rpo_seconds"] == pytest.approx(48.1) == pytest.approx(live[B]["rpo_seconds"])
    assert rows[B]["objective_met"] is False
    [g] = group_status(cfg, list(rows.values()), now=T0 + 50)
    assert g["rpo_seconds"] == pytest.approx(48.1) and g["lagging"] == f"m -> {B}"
