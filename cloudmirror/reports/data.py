"""The report's data: one plain dict (JSON types only) that every format renders.

Definitions (stated in the report too):
- scope: one mirror, or a consistency group (its mirrors); its RPO is the worst of its
  targets'; its objective is the mirror's `rpo_objective` (a group's: the strictest of its
  mirrors').
- replications: versions seen in the period x targets that needed a copy (skipped and
  superseded ones did not). A replication is *within the objective* when it completed no
  later than `objective` after the source write; *late* when it completed later, failed,
  or is still pending and already older than the objective; *in flight* otherwise.
- breach: a maximal interval where the scope's RPO exceeded the objective; its objects are
  the replications whose own age exceeded the objective while pending during it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

from cloudmirror.config import Config
from cloudmirror.errors import RequestError
from cloudmirror.ledger import rpo as ledger_rpo
from cloudmirror.ledger.repo import Ledger
from cloudmirror.replication import rpo

SCHEMA = 1
TITLE = "cloudmirror RPO compliance report"
MAX_OBJECTS_LISTED = 1000  # per breach; objects_affected is always the full count
MAX_SERIES_POINTS = 600


class ReportError(RequestError, ValueError):
    """Bad report parameters (scope, period, format); the message says which."""

    code = "validation_error"


class FailoverRecord(TypedDict):
    """A failover or failback of a mirror in the period (table failovers)."""

    mirror: str
    at: str  # ISO 8601 UTC
    kind: Literal["planned", "forced", "failback"]
    to: str  # the location that became primary
    rpo_seconds: float | None  # the RPO at the moment of the switch (data not carried over)
    outcome: str


class DrillRecord(TypedDict):
    """A failover drill of a mirror and one of its targets in the period (table drills)."""

    mirror: str
    at: str  # ISO 8601 UTC
    target: str
    outcome: str
    rpo_seconds: float | None
    rto_seconds: float | None


def failover_summary(record: dict[str, Any]) -> str:
    """One line for reports and the CLI."""
    if record["status"] != "completed":
        return f"{record['status']}: {record.get('error') or ''}".strip().rstrip(":")
    if record["kind"] == "failback":
        return (f"completed: {record['conflicts']} conflict(s) ({record['policy']}), {record['restored']} restored, "
                f"{record['copied']} copied, {record['deleted']} deleted")
    return f"completed: {record['at_risk_objects']} object(s) at risk ({record['at_risk_bytes']} bytes)"


def failovers_in_period(config: Config, ledger: Ledger, mirrors: Sequence[str], since: float,
                        until: float) -> list[FailoverRecord]:
    """Failovers and failbacks of `mirrors` that switched (or ended without switching) in
    [since, until), from the ledger's failovers table, oldest first."""
    from cloudmirror.ledger.failovers import Failovers

    return [FailoverRecord(mirror=r["mirror"], at=iso(r["switched_at"] or r["finished_at"] or r["started_at"]),
                           kind=r["kind"], to=r["to_location"], rpo_seconds=r3(r["rpo_seconds"]),
                           outcome=failover_summary(r))
            for r in Failovers(ledger).between(list(mirrors), since, until)]


def drills_in_period(config: Config, ledger: Ledger, mirrors: Sequence[str], since: float,
                     until: float) -> list[DrillRecord]:
    """Drills of `mirrors` started in [since, until): one row per drill and target, oldest first."""
    from cloudmirror.ledger.failovers import Failovers

    out: list[DrillRecord] = []
    for d in Failovers(ledger).drills_between(list(mirrors), since, until):
        for t in d["results"] or [{"target": "", "outcome": d["outcome"], "rpo_seconds": None, "rto_seconds": None}]:
            outcome = t["outcome"] if not d["error"] else f"{d['outcome']}: {d['error']}"
            reasons = "; ".join(t.get("reasons") or [])
            out.append(DrillRecord(mirror=d["mirror"], at=iso(d["started_at"]), target=t["target"],
                                   outcome=f"{outcome}: {reasons}" if reasons else outcome,
                                   rpo_seconds=r3(t["rpo_seconds"]), rto_seconds=r3(t["rto_seconds"])))
    return out


def iso(t: float) -> str:
    """Epoch seconds -> '2024-05-01T12:00:00.123Z'."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def r3(x: float | None) -> float | None:
    return None if x is None else round(float(x), 3)


def resolve_scope(config: Config, mirror: str | None, group: str | None) -> tuple[str, str, list, float]:
    """(kind, name, mirror configs, objective). Raises ReportError for a bad combination,
    NotFoundError for an unknown mirror or group."""
    if bool(mirror) == bool(group):
        raise ReportError("name exactly one of a mirror or a group")
    if mirror:
        m = config.mirror(mirror)
        return "mirror", m.name, [m], m.rpo_objective
    g = config.group(group)
    ms = [config.mirror(n) for n in g.mirrors]
    return "group", g.name, ms, min(m.rpo_objective for m in ms)


def configured(rows: list[dict], mirrors: Sequence) -> list[dict]:
    """Only the rows of targets the config names (a target removed from a mirror is out of scope)."""
    wanted = {(m.name, t.name) for m in mirrors for t in m.targets}
    return [r for r in rows if (r["mirror"], r["target"]) in wanted]


def _intervals(rows: list[dict]) -> list[rpo.Interval]:
    return [rpo.Interval(r["created_at"], r["end"], r["source_time"], i) for i, r in enumerate(rows)]


def _counts(rows: list[dict], objective: float, now: float) -> dict:
    """within / late / in_flight over replications seen in the period that needed a copy."""
    within = late = in_flight = 0
    for r in rows:
        st = r["status"]
        if st == "completed":
            if r["completed_at"] - r["source_time"] <= objective:
                within += 1
            else:
                late += 1
        elif st == "failed":
            late += 1
        elif st in ("pending", "in_progress"):
            if now - r["source_time"] > objective:
                late += 1
            else:
                in_flight += 1
    judged = within + late
    return dict(replications=within + late + in_flight, within_objective=within, late=late, in_flight=in_flight,
                percent_within_objective=r3(100.0 * within / judged) if judged else None)


def _figures(rows: list[dict], seen: list[dict], objective: float, since: float, until: float,
             now: float) -> tuple[dict, list, list]:
    """Summary figures for one set of rows; also the steps and breaches (with refs)."""
    ivs = _intervals(rows)
    steps = rpo.rpo_steps(ivs, since, until)
    worst, worst_at = rpo.worst(steps, since)
    breaches = rpo.attach_late(rpo.find_breaches(steps, objective, until), ivs, objective, since, until)
    in_breach = sum(b.duration for b in breaches)
    span = until - since
    lat = rpo.latency_summary(r["completed_at"] - r["source_time"] for r in rows
                              if r["status"] == "completed" and since <= r["completed_at"] < until)
    fig = dict(_counts(seen, objective, now), worst_rpo_seconds=r3(worst), worst_rpo_at=iso(worst_at),
               rpo_at_end_seconds=r3(steps[-1].peak if steps else 0.0), breaches=len(breaches),
               breach_seconds=r3(in_breach),
               percent_time_within_objective=r3(100.0 * (span - in_breach) / span) if span > 0 else None,
               latency_seconds={k: r3(v) if k != "count" else v for k, v in lat.items()})
    return fig, steps, breaches


def _object(r: dict, now: float) -> dict:
    done = r["end"]
    return dict(mirror=r["mirror"], target=r["target"], key=r["key"], op=r["op"], status=r["status"],
                source_time=iso(r["source_time"]), seen_at=iso(r["created_at"]),
                replicated_at=iso(r["completed_at"]) if r["status"] == "completed" else None,
                pending_seconds=r3((now if done is None else done) - r["source_time"]))


def build_data(config: Config, ledger: Ledger, *, mirror: str | None = None, group: str | None = None,
               since: float, until: float, now: float | None = None) -> dict:
    """The report's data dict for one mirror or group over [since, until) (epoch seconds).
    Raises ReportError (bad parameters) or NotFoundError (unknown mirror or group). Read-only."""
    now = time.time() if now is None else now
    if not until > since:
        raise ReportError("the period is empty: --until must be after --since")
    kind, name, mirrors, objective = resolve_scope(config, mirror, group)
    names = [m.name for m in mirrors]
    rows = configured(ledger_rpo.period_rows(ledger, names, since, until), mirrors)
    seen = [r for r in rows if since <= r["created_at"] < until]
    summary, steps, breaches = _figures(rows, seen, objective, since, until, now)

    targets = []
    by_target: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        by_target[(r["mirror"], r["target"])].append(r)
    for m in mirrors:
        for t in m.targets:
            trows = by_target.get((m.name, t.name), [])
            fig, _, _ = _figures(trows, [r for r in trows if since <= r["created_at"] < until],
                                 objective, since, until, now)
            targets.append(dict(mirror=m.name, target=t.name, **fig))

    out_breaches = []
    for n, b in enumerate(breaches, 1):
        affected = sorted((rows[i] for i in b.refs),
                          key=lambda r: (r["source_time"], r["mirror"], r["target"], r["key"]))
        out_breaches.append(dict(
            number=n, start=iso(b.start), end=iso(b.end), duration_seconds=r3(b.duration),
            peak_rpo_seconds=r3(b.peak_rpo), peak_at=iso(b.peak_at), open_at_end=b.open_at_end,
            targets=sorted({r["target"] for r in affected}), objects_affected=len(affected),
            objects_listed=min(len(affected), MAX_OBJECTS_LISTED),
            objects=[_object(r, now) for r in affected[:MAX_OBJECTS_LISTED]]))

    return dict(
        report=TITLE, schema=SCHEMA, generated_at=iso(now),
        period=dict(since=iso(since), until=iso(until), seconds=r3(until - since)),
        scope=dict(kind=kind, name=name,
                   mirrors=[dict(name=m.name, source=m.source, targets=[t.name for t in m.targets],
                                 rpo_objective_seconds=r3(m.rpo_objective)) for m in mirrors]),
        objective_seconds=r3(objective),
        summary=summary,
        targets=targets,
        breaches=out_breaches,
        failovers=[dict(f) for f in failovers_in_period(config, ledger, names, since, until)],
        drills=[dict(d) for d in drills_in_period(config, ledger, names, since, until)],
        rpo_series=[[r3(t), r3(v)] for t, v in rpo.series(steps, since, until, MAX_SERIES_POINTS)],
    )
