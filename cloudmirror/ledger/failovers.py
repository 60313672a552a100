"""SQL for failovers, failbacks and drills (tables failovers, failover_objects, drills).

The two switches are single transactions that also move the mirror's active location
(mirror_specs), so a running service sees the new direction exactly when the record says
it happened:
- `switch_over` lists every version not yet on the new primary as data at risk, moves
  `active` to it and forgets the mirror's key heads (versions of the two directions come
  from different buckets: their sequencers are not comparable);
- `switch_back` clears `active`, forgets the key heads, and closes the replications the
  failback made moot.
Synchronous (call it through asyncio.to_thread); every method is one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import case, delete, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError

from cloudmirror.ledger.models import (
    drills,
    failover_objects,
    failovers,
    key_heads,
    mirror_specs,
    replications,
    versions,
)
from cloudmirror.ledger.paging import newest_first, oldest_first, read_rows
from cloudmirror.ledger.repo import Ledger, _retry_transient
from cloudmirror.redact import redact_obj

F = failovers.c
FO = failover_objects.c
D = drills.c
M = mirror_specs.c
R = replications.c
V = versions.c
NOT_REPLICATED = ("pending", "in_progress", "failed")
SWITCH_KINDS = ("planned", "forced")


class Busy(RuntimeError):
    """Another failover or failback of the mirror is running (its record is `args[0]`)."""


class NotDrained(RuntimeError):
    """A switch that must leave nothing at risk found versions not yet replicated (rolled back)."""


class SwitchRefused(RuntimeError):
    """The mirror is not in the state the switch expects (already failed over, not failed
    over, or deleted); the message says which."""


def _d(row) -> dict[str, Any] | None:
    return dict(row._mapping) if row is not None else None


class Failovers:
    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    # ------------------------------------------------------------ records
    @_retry_transient
    def start(self, *, mirror: str, kind: str, from_location: str, to_location: str, requested_by: str,
              fence: bool = False, drain_timeout_s: float | None = None, policy: str | None = None,
              of_failover: int | None = None, reverse_events: list | None = None, abandoned_after: float = 120.0,
              now: float | None = None) -> dict:
        """Create a running record. A running record of the mirror whose heartbeat is older
        than `abandoned_after` (its process died) is marked failed first. Raises Busy."""
        now = time.time() if now is None else now
        with self.ledger.engine.begin() as conn:
            conn.execute(update(failovers).where(F.mirror == mirror, F.status == "running",
                                                 F.heartbeat_at < now - abandoned_after)
                         .values(status="failed", finished_at=now,
                                 error="abandoned: the process running it stopped (no heartbeat)"))
        try:
            with self.ledger.engine.begin() as conn:
                fid = conn.execute(insert(failovers).values(
                    mirror=mirror, kind=kind, status="running", from_location=from_location, to_location=to_location,
                    requested_by=requested_by, started_at=now, heartbeat_at=now, fence=fence,
                    fenced_at=now if fence else None, drain_timeout_s=drain_timeout_s, policy=policy,
                    of_failover=of_failover, reverse_events=reverse_events).returning(F.id)).scalar_one()
        except IntegrityError:
            raise Busy(self.running(mirror)) from None
        return self.get(fid)

    def running(self, mirror: str) -> dict | None:
        with self.ledger.reader.connect() as conn:
            return _d(conn.execute(select(failovers).where(F.mirror == mirror, F.status == "running")).first())

    def get(self, failover_id: int) -> dict | None:
        with self.ledger.reader.connect() as conn:
            return _d(conn.execute(select(failovers).where(F.id == failover_id)).first())

    @_retry_transient
    def beat(self, failover_id: int, detail: dict | None = None, *, now: float | None = None) -> None:
        """The heartbeat of a running record (and its progress)."""
        values: dict[str, Any] = dict(heartbeat_at=time.time() if now is None else now)
        if detail is not None:
            values["detail"] = redact_obj(detail)
        with self.ledger.engine.begin() as conn:
            conn.execute(update(failovers).where(F.id == failover_id, F.status == "running").values(**values))

    @_retry_transient
    def finish(self, failover_id: int, status: str, *, now: float | None = None, **values: Any) -> dict:
        """End a record (completed | aborted | failed) with its figures (error and detail
        are stored redacted)."""
        now = time.time() if now is None else now
        values = {k: redact_obj(v) if k in ("error", "detail") else v for k, v in values.items()}
        with self.ledger.engine.begin() as conn:
            conn.execute(update(failovers).where(F.id == failover_id)
                         .values(status=status, finished_at=now, heartbeat_at=now, **values))
        return self.get(failover_id)

    def list(self, *, mirror: str | None = None, kind: str | None = None, before: int | None = None,
             limit: int = 100) -> list[dict]:
        """Newest first, ids below `before`; up to limit + 1 rows."""
        return read_rows(self.ledger.reader, newest_first(select(failovers), F.id, limit=limit, before=before,
                                                     where={F.mirror: mirror, F.kind: kind}))

    def latest_switch(self, mirror: str) -> dict | None:
        """The mirror's last completed planned or forced failover."""
        q = (select(failovers).where(F.mirror == mirror, F.kind.in_(SWITCH_KINDS), F.status == "completed")
             .order_by(F.id.desc()).limit(1))
        with self.ledger.reader.connect() as conn:
            return _d(conn.execute(q).first())

    def reversals(self, mirrors: Sequence[str]) -> dict[str, dict]:
        """Per mirror: how its last failover runs the reversed direction
        ({"events": [...] | None, "old_is_target": bool})."""
        if not mirrors:
            return {}
        last = (select(F.mirror, func.max(F.id).label("id"))
                .where(F.mirror.in_(list(mirrors)), F.kind.in_(SWITCH_KINDS), F.status == "completed")
                .group_by(F.mirror).subquery())
        q = select(F.mirror, F.reverse_events, F.old_is_target).join(last, last.c.id == F.id)
        with self.ledger.reader.connect() as conn:
            return {r.mirror: {"events": r.reverse_events, "old_is_target": r.old_is_target is not False}
                    for r in conn.execute(q)}

    def between(self, mirrors: Sequence[str], since: float, until: float) -> list[dict]:
        """Records of `mirrors` that switched (or ended without switching) in [since, until)."""
        at = func.coalesce(F.switched_at, F.finished_at, F.started_at)
        q = (select(failovers).where(F.mirror.in_(list(mirrors)), at >= since, at < until, F.status != "running")
             .order_by(at, F.id))
        with self.ledger.reader.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    # ------------------------------------------------------------ objects
    @_retry_transient
    def add_objects(self, failover_id: int, kind: str, rows: Iterable[dict]) -> int:
        rows = [dict(failover_id=failover_id, kind=kind, **r) for r in rows]
        if rows:
            with self.ledger.engine.begin() as conn:
                conn.execute(insert(failover_objects), rows)
        return len(rows)

    def objects(self, failover_id: int, *, kind: str | None = None, after: int | None = None,
                limit: int = 100) -> list[dict]:
        """In id order after `after`; up to limit + 1 rows."""
        q = select(failover_objects).where(FO.failover_id == failover_id)
        return read_rows(self.ledger.reader, oldest_first(q, FO.id, limit=limit, after=after, where={FO.kind: kind}))

    def at_risk_keys(self, failover_id: int) -> set[str]:
        q = select(FO.key).where(FO.failover_id == failover_id, FO.kind == "at_risk").distinct()
        with self.ledger.reader.connect() as conn:
            return {r[0] for r in conn.execute(q)}

    def deleted_since(self, mirror: str, since: float) -> dict[str, float]:
        """Keys whose newest recorded version seen since `since` is a delete: key -> when."""
        q = (select(V.key, V.op, V.source_time).where(V.mirror == mirror, V.seen_at >= since)
             .order_by(V.key, V.source_time, V.id))
        out: dict[str, float] = {}
        with self.ledger.reader.connect() as conn:
            for key, op, when in conn.execute(q):
                if op == "delete":
                    out[key] = when
                else:
                    out.pop(key, None)
        return out

    def backlog_to(self, mirror: str, target: str) -> dict:
        """Versions not yet on `target`: {"objects", "bytes", "failed", "oldest"} (oldest source time)."""
        q = (select(func.count(), func.coalesce(func.sum(V.size), 0),
                    func.sum(case((R.status == "failed", 1), else_=0)), func.min(V.source_time))
             .select_from(replications.join(versions, V.id == R.version_pk))
             .where(R.mirror == mirror, R.target == target, R.status.in_(NOT_REPLICATED)))
        with self.ledger.reader.connect() as conn:
            n, size, failed, oldest = conn.execute(q).one()
        return {"objects": int(n or 0), "bytes": int(size or 0), "failed": int(failed or 0), "oldest": oldest}

    # ------------------------------------------------------------ switches
    def _move(self, conn, mirror: str, expect: str | None, active: str | None, now: float) -> None:
        cur = conn.execute(select(M.active).where(M.name == mirror, M.deleted_at.is_(None))).first()
        if cur is None:
            raise SwitchRefused(f"no mirror named {mirror!r}")
        if cur.active != expect:
            raise SwitchRefused(f"mirror {mirror!r} is active at {cur.active or 'its source'}, "
                                f"not {expect or 'its source'}")
        conn.execute(update(mirror_specs).where(M.name == mirror)
                     .values(active=active, revision=M.revision + 1, updated_at=now))
        conn.execute(delete(key_heads).where(key_heads.c.mirror == mirror))

    @_retry_transient
    def switch_over(self, failover_id: int, mirror: str, to: str, *, drained: bool = False,
                    now: float | None = None) -> dict:
        """Make `to` the mirror's active location, recording every version not yet
        replicated to it (pending, in progress or failed) as data at risk. Raises
        SwitchRefused when the mirror is already failed over, NotDrained (nothing changed)
        when `drained` is asked for and a version is not replicated yet. Returns the record."""
        now = time.time() if now is None else now
        risky = (select(literal(failover_id), literal("at_risk"), V.key, V.op, V.size, V.source_time, R.target, V.id,
                        R.status)
                 .select_from(replications.join(versions, V.id == R.version_pk))
                 .where(R.mirror == mirror, R.target == to, R.status.in_(NOT_REPLICATED)))
        with self.ledger.engine.begin() as conn:
            self._move(conn, mirror, None, to, now)
            conn.execute(insert(failover_objects).from_select(
                ["failover_id", "kind", "key", "op", "size", "source_time", "target", "version_pk", "detail"], risky))
            n, size, oldest = conn.execute(
                select(func.count(), func.coalesce(func.sum(FO.size), 0), func.min(FO.source_time))
                .where(FO.failover_id == failover_id, FO.kind == "at_risk")).one()
            if drained and n:
                raise NotDrained(f"{n} version(s) arrived since the backlog drained")
            conn.execute(update(failovers).where(F.id == failover_id).values(
                switched_at=now, at_risk_objects=int(n), at_risk_bytes=int(size), old_is_target=int(n) == 0,
                rpo_seconds=max(0.0, now - oldest) if oldest is not None else 0.0, heartbeat_at=now))
        return self.get(failover_id)

    @_retry_transient
    def switch_back(self, failback_id: int, mirror: str, old: str, new: str, *, now: float | None = None) -> dict:
        """Make the mirror's source its active location again. Replications to `old` still
        open (it is the source again) and replications to `new` from before (the failback
        reconciled their keys) are closed as superseded. Raises SwitchRefused when the
        mirror is not active at `new`. Returns the record."""
        now = time.time() if now is None else now
        why = f"failback #{failback_id} reconciled the key"
        with self.ledger.engine.begin() as conn:
            self._move(conn, mirror, new, None, now)
            conn.execute(update(replications)
                         .where(R.mirror == mirror, R.target.in_([old, new]), R.status.in_(("pending", "failed")))
                         .values(status="superseded", detail=why, completed_at=now))
            conn.execute(update(failovers).where(F.id == failback_id).values(switched_at=now, heartbeat_at=now))
        return self.get(failback_id)

    # ------------------------------------------------------------ drills
    @_retry_transient
    def drill_start(self, mirror: str, requested_by: str, *, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self.ledger.engine.begin() as conn:
            return conn.execute(insert(drills).values(mirror=mirror, requested_by=requested_by, started_at=now,
                                                      outcome="running").returning(D.id)).scalar_one()

    @_retry_transient
    def drill_finish(self, drill_id: int, *, outcome: str, results: list | None, rpo_seconds: float | None,
                     rto_seconds: float | None, error: str | None = None, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        with self.ledger.engine.begin() as conn:
            conn.execute(update(drills).where(D.id == drill_id).values(
                outcome=outcome, results=redact_obj(results), rpo_seconds=rpo_seconds, rto_seconds=rto_seconds,
                error=redact_obj(error),
                finished_at=now))
        return self.drill(drill_id)

    def drill(self, drill_id: int) -> dict | None:
        with self.ledger.reader.connect() as conn:
            return _d(conn.execute(select(drills).where(D.id == drill_id)).first())

    def drill_list(self, *, mirror: str | None = None, before: int | None = None, limit: int = 100) -> list[dict]:
        """Newest first, ids below `before`; up to limit + 1 rows."""
        return read_rows(self.ledger.reader, newest_first(select(drills), D.id, limit=limit, before=before,
                                                     where={D.mirror: mirror}))

    def drills_between(self, mirrors: Sequence[str], since: float, until: float) -> list[dict]:
        q = (select(drills).where(D.mirror.in_(list(mirrors)), D.started_at >= since, D.started_at < until,
                                  D.outcome != "running").order_by(D.started_at, D.id))
        with self.ledger.reader.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]
