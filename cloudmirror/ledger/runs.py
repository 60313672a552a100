"""SQL for reconciliation: runs (with their resume position and findings), and what the
ledger already knows about a page of keys."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import func, insert, select, update

from cloudmirror.ledger.db import retry_transient
from cloudmirror.ledger.models import OPEN_STATUSES, reconcile_runs, replications, versions
from cloudmirror.ledger.repo import Ledger
from cloudmirror.redact import redact

RUN = reconcile_runs.c
R = replications.c
V = versions.c
COUNTS = ("listed", "missing", "stale", "extra", "missed_events")
# the detail of a delete a reconcile run recorded but holds back (as `skipped`, which no
# worker claims) until the run has counted all its deletes against the mirror's max_deletes
HELD = "held until its reconcile run has counted its deletes (max_deletes)"


class Runs:
    """Reconcile runs and the lookups a run makes per listing page. Synchronous (call it
    through asyncio.to_thread); every method is one transaction."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    @retry_transient
    def start(self, mirror: str, target: str, kind: str, *, resume: bool = True) -> tuple[int, str | None]:
        """Start a run, or resume the newest run of the same kind when it did not finish (the
        process died, or a listing failed) from its checkpointed position. Returns (run id,
        position to list after or None)."""
        with self.ledger.engine.begin() as conn:
            if resume:
                row = conn.execute(select(RUN.id, RUN.position, RUN.status).where(
                    RUN.mirror == mirror, RUN.target == target, RUN.kind == kind)
                    .order_by(RUN.id.desc()).limit(1)).first()
                if row is not None and row.status != "finished":
                    conn.execute(update(reconcile_runs).where(RUN.id == row.id).values(status="running", error=None))
                    return row.id, row.position
            run_id = conn.execute(insert(reconcile_runs).values(
                mirror=mirror, target=target, kind=kind, status="running", started_at=time.time())
                .returning(RUN.id)).scalar_one()
            return run_id, None

    @retry_transient
    def checkpoint(self, run_id: int, position: str | None, **counts: int) -> None:
        """Add a page's findings and move the resume position past it."""
        values = {k: getattr(RUN, k) + counts.get(k, 0) for k in COUNTS}
        with self.ledger.engine.begin() as conn:
            conn.execute(update(reconcile_runs).where(RUN.id == run_id).values(position=position, **values))

    @retry_transient
    def finish(self, run_id: int, *, error: str | None = None) -> None:
        with self.ledger.engine.begin() as conn:
            conn.execute(update(reconcile_runs).where(RUN.id == run_id).values(
                status="failed" if error else "finished", error=redact(error), finished_at=time.time()))

    def get(self, run_id: int) -> dict:
        with self.ledger.reader.connect() as conn:
            return dict(conn.execute(select(reconcile_runs).where(RUN.id == run_id)).one()._mapping)

    def list(self, mirror: str | None = None, limit: int = 50) -> list[dict]:
        q = select(reconcile_runs).order_by(RUN.id.desc()).limit(limit)
        if mirror is not None:
            q = q.where(RUN.mirror == mirror)
        with self.ledger.reader.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def has_finished(self, mirror: str, target: str, kinds: Sequence[str] = ("backfill", "reconcile")) -> bool:
        with self.ledger.reader.connect() as conn:
            return conn.execute(select(RUN.id).where(RUN.mirror == mirror, RUN.target == target,
                                                     RUN.kind.in_(kinds), RUN.status == "finished")
                                .limit(1)).first() is not None

    def missed_events(self) -> dict[tuple[str, str], int]:
        """Per (mirror, target): differences that no event announced, found by reconciles."""
        q = (select(RUN.mirror, RUN.target, func.sum(RUN.missed_events)).where(RUN.kind == "reconcile")
             .group_by(RUN.mirror, RUN.target))
        with self.ledger.reader.connect() as conn:
            return {(m, t): int(n or 0) for m, t, n in conn.execute(q)}

    def open_keys(self, mirror: str, target: str, keys: Sequence[str]) -> set[str]:
        """The keys among `keys` with a replication to `target` still pending or in progress."""
        if not keys:
            return set()
        with self.ledger.reader.connect() as conn:
            return {r[0] for r in conn.execute(select(R.key).where(
                R.mirror == mirror, R.target == target, R.key.in_(list(keys)), R.status.in_(OPEN_STATUSES)))}

    def copied(self, mirror: str, target: str, keys: Sequence[str], since: float) -> dict[str, set[str]]:
        """Per key, the source etags copied to `target` by replications completed at or
        after `since` (after a listing began, so the listing may not show them)."""
        out: dict[str, set[str]] = defaultdict(set)
        if not keys:
            return out
        with self.ledger.reader.connect() as conn:
            for key, etag in conn.execute(select(R.key, R.copied_etag).where(
                    R.mirror == mirror, R.target == target, R.key.in_(list(keys)), R.status == "completed",
                    R.copied_etag.is_not(None), R.completed_at >= since)):
                out[key].add(etag)
        return out

    @retry_transient
    def seen(self, mirror: str, keys: Sequence[str]) -> dict[str, set[str]]:
        """Per key, every etag and version id the ledger has recorded (events or listings)."""
        out: dict[str, set[str]] = defaultdict(set)
        if not keys:
            return out
        with self.ledger.reader.connect() as conn:
            for key, etag, vid in conn.execute(select(V.key, V.etag, V.version_id).where(
                    V.mirror == mirror, V.key.in_(list(keys)))):
                out[key].update(x for x in (etag, vid) if x)
        return out

    def _held(self, mirror: str, target: str, run_id: int):
        tokens = select(V.id).where(V.mirror == mirror, V.token == f"r:{run_id}:delete")
        return (R.mirror == mirror, R.target == target, R.status == "skipped", R.detail == HELD,
                R.version_pk.in_(tokens.scalar_subquery()))

    def held_deletes(self, mirror: str, target: str, run_id: int, *, sample: int = 20) -> tuple[int, list[str]]:
        """How many deletes run `run_id` holds back on `target` (also those recorded before
        the run was resumed), and the first `sample` of their keys."""
        cond = self._held(mirror, target, run_id)
        with self.ledger.reader.connect() as conn:
            n = int(conn.execute(select(func.count()).select_from(replications).where(*cond)).scalar() or 0)
            keys = [k for (k,) in conn.execute(select(R.key).where(*cond).order_by(R.key).limit(sample))] if n else []
        return n, keys

    @retry_transient
    def settle_held(self, mirror: str, target: str, run_id: int, *, release: bool, detail: str | None = None,
                    now: float | None = None) -> int:
        """Release the deletes run `run_id` holds back (they become pending: the workers carry
        them out), or refuse them all (they stay `skipped`, with `detail` saying why).
        Returns how many. Idempotent."""
        now = time.time() if now is None else now
        values = (dict(status="pending", detail=None, completed_at=None, next_attempt_at=now) if release
                  else dict(detail=detail or "not deleted: above max_deletes"))
        with self.ledger.engine.begin() as conn:
            return conn.execute(update(replications).where(*self._held(mirror, target, run_id))
                                .values(**values)).rowcount
