"""SQL for what operators inspect and repair: failed replications (list, retry) and the
history of one key (every version seen and its replication on each target).
Synchronous (call it through asyncio.to_thread); every method is one transaction."""

from __future__ import annotations

import time

from sqlalchemy import select, update

from cloudmirror.ledger.db import retry_transient
from cloudmirror.ledger.models import replications, versions
from cloudmirror.ledger.paging import newest_first, oldest_first, read_rows
from cloudmirror.ledger.repo import Ledger

R = replications.c
V = versions.c
FAILURE_COLUMNS = (R.id, R.mirror, R.target, R.key, R.status, R.attempts, R.last_error, R.created_at, R.completed_at,
                   R.version_pk, V.op, V.version_id, V.etag, V.size, V.source_time)


class FailureLedger:
    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def failures(self, *, mirror: str | None = None, target: str | None = None, before: int | None = None,
                 limit: int = 100) -> list[dict]:
        """Failed replications, newest first, before the id `before`; up to limit + 1 rows."""
        q = select(*FAILURE_COLUMNS).join(versions, V.id == R.version_pk).where(R.status == "failed")
        return read_rows(self.ledger.reader, newest_first(q, R.id, limit=limit, before=before,
                                                     where={R.mirror: mirror, R.target: target}))

    @retry_transient
    def retry(self, replication_id: int, *, now: float | None = None) -> tuple[dict | None, bool]:
        """Put a failed replication back to pending, due now, with its attempts reset (its
        last_error stays until the next attempt). Returns (the replication or None when
        unknown, whether it was failed and is now pending)."""
        now = time.time() if now is None else now
        with self.ledger.engine.begin() as conn:
            n = conn.execute(update(replications).where(R.id == replication_id, R.status == "failed").values(
                status="pending", attempts=0, next_attempt_at=now, completed_at=None, lease_owner=None,
                lease_expires_at=None)).rowcount
            row = conn.execute(select(*FAILURE_COLUMNS).join(versions, V.id == R.version_pk)
                               .where(R.id == replication_id)).first()
        return (dict(row._mapping) if row else None), n == 1

    def key_history(self, mirror: str, key: str, *, after: int | None = None, limit: int = 100) -> list[dict]:
        """Versions of one key, oldest first, after the version id `after` (up to limit + 1),
        each with `replications`: its replication on each target."""
        q = (select(V.id, V.op, V.token, V.version_id, V.etag, V.sequencer, V.size, V.source_time, V.seen_at,
                    V.origin, V.duplicates)
             .where(V.mirror == mirror, V.key == key))
        q = oldest_first(q, V.id, limit=limit, after=after)
        with self.ledger.reader.connect() as conn:
            out = [dict(r._mapping, replications=[]) for r in conn.execute(q)]
            if out:
                by_id = {v["id"]: v for v in out}
                reps = conn.execute(
                    select(R.id, R.version_pk, R.target, R.status, R.attempts, R.detail, R.last_error, R.created_at,
                           R.started_at, R.completed_at, R.copied_etag, R.target_etag, R.target_version_id, R.bytes)
                    .where(R.version_pk.in_(list(by_id))).order_by(R.version_pk, R.target, R.id))
                for r in reps:
                    by_id[r.version_pk]["replications"].append(dict(r._mapping))
        return out
