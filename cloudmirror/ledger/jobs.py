"""SQL for background jobs started through the API (a reconcile): the job record, its
progress and heartbeat, and how many copies and deletes a reconcile run put in the ledger.
Synchronous (call it through asyncio.to_thread); every method is one transaction."""

from __future__ import annotations

import time

from sqlalchemy import func, insert, or_, select, update

from cloudmirror.ledger.db import retry_transient
from cloudmirror.ledger.models import jobs, versions
from cloudmirror.ledger.paging import newest_first, read_rows
from cloudmirror.ledger.repo import Ledger
from cloudmirror.redact import redact, redact_obj

J = jobs.c
V = versions.c
ACTIVE = ("queued", "running")


class JobLedger:
    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    @retry_transient
    def create(self, *, kind: str, mirror: str, target: str | None, params: dict, created_by: str, owner: str,
               progress: dict, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        with self.ledger.engine.begin() as conn:
            job_id = conn.execute(insert(jobs).values(
                kind=kind, mirror=mirror, target=target, params=params, status="queued", created_by=created_by,
                owner=owner, created_at=now, heartbeat_at=now, progress=progress,
                dry_run=bool(params.get("dry_run"))).returning(J.id)).scalar_one()
            return dict(conn.execute(select(jobs).where(J.id == job_id)).one()._mapping)

    def get(self, job_id: int) -> dict | None:
        with self.ledger.reader.connect() as conn:
            row = conn.execute(select(jobs).where(J.id == job_id)).first()
        return dict(row._mapping) if row else None

    def list(self, *, before: int | None = None, limit: int = 100, mirror: str | None = None,
             status: str | None = None) -> list[dict]:
        """Jobs newest first, before the id `before`; up to limit + 1 rows."""
        return read_rows(self.ledger.reader, newest_first(select(jobs), J.id, limit=limit, before=before,
                                                     where={J.mirror: mirror, J.status: status}))

    def active_changing(self, kind: str, mirror: str, target: str | None, *, exclude: int | None = None) -> dict | None:
        """An active job of `kind` on the mirror that changes the ledger (not a dry run) and
        overlaps `target` (None: every target), or None."""
        q = select(jobs).where(J.kind == kind, J.mirror == mirror, J.status.in_(ACTIVE), J.dry_run.is_(False))
        if target is not None:
            q = q.where(or_(J.target.is_(None), J.target == target))
        if exclude is not None:
            q = q.where(J.id != exclude)
        with self.ledger.reader.connect() as conn:
            row = conn.execute(q.order_by(J.id).limit(1)).first()
        return dict(row._mapping) if row else None

    @retry_transient
    def start(self, job_id: int, *, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self.ledger.engine.begin() as conn:
            conn.execute(update(jobs).where(J.id == job_id, J.status == "queued")
                         .values(status="running", started_at=now, heartbeat_at=now))

    @retry_transient
    def beat(self, job_id: int, progress: dict, *, now: float | None = None) -> None:
        """Record progress; also the heartbeat that tells a live job from an abandoned one."""
        now = time.time() if now is None else now
        with self.ledger.engine.begin() as conn:
            conn.execute(update(jobs).where(J.id == job_id, J.status.in_(ACTIVE))
                         .values(progress=progress, heartbeat_at=now))

    @retry_transient
    def finish(self, job_id: int, *, progress: dict, result: list | dict | None = None, error: str | None = None,
               now: float | None = None) -> None:
        """End a job: failed when `error` is given. Error and result are stored redacted."""
        now = time.time() if now is None else now
        with self.ledger.engine.begin() as conn:
            conn.execute(update(jobs).where(J.id == job_id).values(
                status="failed" if error else "finished", progress=progress, result=redact_obj(result),
                error=redact(error), finished_at=now, heartbeat_at=now))

    @retry_transient
    def fail_abandoned(self, older_than: float, reason: str, *, owner: str | None = None,
                       now: float | None = None) -> int:
        """Fail active jobs whose heartbeat is older than `older_than` seconds (their process
        died), or every active job of `owner` (this process is stopping). Returns how many."""
        now = time.time() if now is None else now
        cond = J.owner == owner if owner is not None else J.heartbeat_at < now - older_than
        with self.ledger.engine.begin() as conn:
            return conn.execute(update(jobs).where(J.status.in_(ACTIVE), cond)
                                .values(status="failed", error=redact(reason), finished_at=now)).rowcount

    def run_ops(self, mirror: str, run_id: int) -> dict[str, int]:
        """How many copies ("put") and deletes a reconcile run recorded. The reconciler gives
        the versions it records the token `r:RUN:OP` (cloudmirror.replication.reconcile)."""
        tokens = {f"r:{run_id}:put": "put", f"r:{run_id}:delete": "delete"}
        q = (select(V.token, func.count()).where(V.mirror == mirror, V.token.in_(list(tokens)))
             .group_by(V.token))
        out = {"put": 0, "delete": 0}
        with self.ledger.reader.connect() as conn:
            for token, n in conn.execute(q):
                out[tokens[token]] = int(n)
        return out
