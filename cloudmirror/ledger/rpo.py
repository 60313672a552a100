"""SQL reads for RPO figures and reports: the replications that were pending during a
period, the backlog per target, and replication latency percentiles. Read-only; every
function is one query (or a few) on the ledger's reader engine.

A `failed` replication is still pending for the RPO (its version is not on the target)
until a newer version of its key is copied to that target (`resolved_at`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Integer, and_, case, exists, func, literal, or_, select

from cloudmirror.ledger.models import OPEN_STATUSES, replications, versions
from cloudmirror.ledger.repo import Ledger

R = replications.c
V = versions.c
LATENCY_QUANTILES = (50, 90, 99)


def _newer_completed():
    """A later replication of the same (mirror, target, key) that completed."""
    return replications.alias("newer")


def _resolved_at():
    y = _newer_completed()
    return (select(func.min(y.c.completed_at))
            .where(y.c.lock == R.lock, y.c.status == "completed", y.c.id > R.id)
            .scalar_subquery())


def _unresolved_failure():
    y = _newer_completed()
    return and_(R.status == "failed",
                ~exists().where(y.c.lock == R.lock, y.c.status == "completed", y.c.id > R.id))


def period_rows(ledger: Ledger, mirrors: Sequence[str], since: float, until: float) -> list[dict]:
    """Every replication of `mirrors` that was pending at some time in [since, until), or
    was seen in it, with its version: id, mirror, target, key, op, status, size,
    source_time, created_at, completed_at and `end` (when it stopped being pending; None
    while it still is). Ordered by created_at, id."""
    if not mirrors:
        return []
    resolved = case((R.status == "failed", _resolved_at()), else_=None).label("resolved_at")
    q = (select(R.id, R.mirror, R.target, R.key, V.op, R.status, V.size, V.source_time, R.created_at,
                R.completed_at, resolved)
         .join(versions, V.id == R.version_pk)
         .where(R.mirror.in_(list(mirrors)), R.created_at < until,
                or_(R.status.in_((*OPEN_STATUSES, "failed")), R.completed_at > since, R.created_at >= since))
         .order_by(R.created_at, R.id))
    out = []
    with ledger.reader.connect() as conn:
        for r in conn.execute(q):
            d = dict(r._mapping)
            if d["status"] in OPEN_STATUSES:
                d["end"] = None
            elif d["status"] == "failed":
                d["end"] = d["resolved_at"]
            else:
                d["end"] = d["completed_at"] if d["completed_at"] is not None else d["created_at"]
            if d["end"] is not None and d["end"] <= since and d["created_at"] < since:
                continue  # resolved before the period began
            out.append(d)
    return out


def backlog(ledger: Ledger, mirrors: Sequence[str] | None = None) -> list[dict]:
    """Per (mirror, target) that has replications: backlog_objects and backlog_bytes
    (pending + in progress), failed (gave up, awaiting a retry), and oldest_open: the
    source time of the oldest version not yet on the target (open, or failed and not
    made moot by a newer copy of its key), None when there is none."""
    is_open = R.status.in_(OPEN_STATUSES)
    holds_rpo = or_(is_open, _unresolved_failure())
    q = (select(R.mirror, R.target,
                func.sum(case((is_open, 1), else_=0)).label("backlog_objects"),
                func.sum(case((is_open, func.coalesce(V.size, 0)), else_=0)).label("backlog_bytes"),
                func.sum(case((R.status == "failed", 1), else_=0)).label("failed"),
                func.min(case((holds_rpo, V.source_time), else_=None)).label("oldest_open"))
         .join(versions, V.id == R.version_pk)
         .where(or_(is_open, R.status == "failed"))
         .group_by(R.mirror, R.target).order_by(R.mirror, R.target))
    if mirrors is not None:
        q = q.where(R.mirror.in_(list(mirrors)))
    with ledger.reader.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    for r in rows:
        for k in ("backlog_objects", "backlog_bytes", "failed"):
            r[k] = int(r[k] or 0)
    return rows


def latency_percentiles(ledger: Ledger, mirrors: Sequence[str], since: float, until: float,
                        target: str | None = None) -> dict:
    """count, p50, p90, p99 and max of (completed_at - source_time) for the replications of
    `mirrors` (one `target`, or all) completed in (since, until]. Nearest-rank percentiles,
    computed in the database (window functions), so no rows are transferred. Values are
    None when nothing completed."""
    lat = (R.completed_at - V.source_time).label("lat")
    inner = (select(lat,
                    func.row_number().over(order_by=lat).label("rn"),
                    func.count().over().label("n"))
             .join(versions, V.id == R.version_pk)
             .where(R.mirror.in_(list(mirrors)), R.status == "completed",
                    R.completed_at > since, R.completed_at <= until))
    if target is not None:
        inner = inner.where(R.target == target)
    sub = inner.subquery()
    # nearest rank ceil(q * n / 100) in integer arithmetic, the same on SQLite and PostgreSQL
    ranks = [(literal(q, Integer) * sub.c.n + literal(99, Integer)) // literal(100, Integer) for q in LATENCY_QUANTILES]
    q = select(sub.c.rn, sub.c.n, sub.c.lat).where(or_(*(sub.c.rn == r for r in ranks), sub.c.rn == sub.c.n))
    out: dict = dict(count=0, **{f"p{q}": None for q in LATENCY_QUANTILES}, max=None)
    with ledger.reader.connect() as conn:
        rows = conn.execute(q).all()
    if not rows:
        return out
    n = int(rows[0].n)
    by_rank = {int(r.rn): max(0.0, float(r.lat)) for r in rows}
    out["count"] = n
    for qq in LATENCY_QUANTILES:
        out[f"p{qq}"] = by_rank[max(1, (qq * n + 99) // 100)]
    out["max"] = by_rank[n]
    return out
