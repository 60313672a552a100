"""The work queue part of the ledger: claims, leases and the outcome of replications.

A claim hands a due `pending` replication to one worker (`in_progress`) under a lease:
`lease_owner`, `lease_expires_at` and `lease_token`, a fencing token that every claim
increments. Lease times are taken from the database's clock at the moment the row is
written, never from a clock read before waiting for a lock, so a lease is as long as asked
even when the claim or renewal queued behind another writer.

Every call that acts on a claim -- renew, release, complete, retry, fail, record an upload
-- may name the token it holds; it then changes nothing (and says so) unless the row is
still `in_progress` under that very claim. A worker that was starved past its lease, and
whose job was reclaimed and handed out again (to another worker, or to itself), can
therefore neither renew nor finish what is no longer its own. Without a token the owner
alone is checked (tools and tests that claim and finish synchronously).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Double, Integer, bindparam, func, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from cloudmirror.ledger.db import retry_transient
from cloudmirror.ledger.models import replications, versions
from cloudmirror.redact import redact

R = replications.c
V = versions.c
LEASE_EXPIRED = "lease expired (worker died?)"  # last_error of a job reclaimed from a lapsed lease


@dataclass
class Job:
    """A claimed replication with what the worker needs to know about its version."""

    id: int
    version_pk: int
    mirror: str
    target: str
    key: str
    op: str
    attempts: int
    source_time: float
    version_id: str | None
    etag: str | None
    sequencer: str | None
    size: int | None
    upload_id: str | None
    origin: str = "event"  # event | poll | backfill | reconcile
    last_copied_etag: str | None = None  # what the newest completed copy of this key shipped
    last_copied_version: str | None = None
    token: int = 0  # this claim's lease token (see the module docstring)
    last_error: str | None = None  # why the previous attempt ended; LEASE_EXPIRED: its holder lapsed

    @property
    def lapsed_before(self) -> bool:
        """The previous holder's lease lapsed mid-flight: it may have finished the copy."""
        return self.last_error == LEASE_EXPIRED


class Claims:
    """Claims, leases and outcomes; mixed into `Ledger`, which provides `engine` (writes),
    `reader` (reads) and `sqlite`. Thread-safe; every method is one transaction."""

    engine: object
    reader: object
    sqlite: bool

    def _db_now(self):
        """The database's clock at the moment a row is written, in epoch seconds: a claim's
        started_at then always follows the commit that freed its key, across hosts too."""
        if self.sqlite:
            return (func.julianday("now") - 2440587.5) * 86400.0
        return func.extract("epoch", func.clock_timestamp()).cast(Double)

    def _clock(self, now: float | None):
        """`now` when a caller (a test) fixes it, else the database's clock."""
        return self._db_now() if now is None else now

    @staticmethod
    def _ours(owner: str, token: int | None = None) -> list:
        cond = [R.status == "in_progress", R.lease_owner == owner]
        if token is not None:
            cond.append(R.lease_token == token)
        return cond

    @staticmethod
    def _held(owner: str, ids: Sequence[int] | Mapping[int, int]) -> list:
        """Rows in flight under our lease: `ids`, or {id: token} pairs to fence each claim."""
        if isinstance(ids, Mapping):
            return [tuple_(R.id, R.lease_token).in_(list(ids.items())), *Claims._ours(owner)]
        return [R.id.in_(list(ids)), *Claims._ours(owner)]

    # ------------------------------------------------------------ claims
    @retry_transient
    def claim(self, mirror: str, target: str, owner: str, limit: int, lease: float, *,
              now: float | None = None) -> list[Job]:
        """Claim up to `limit` due pending replications of one (mirror, target), each under a
        new lease token; the lease runs `lease` seconds from the database's clock at the
        claim (from `now` when given).

        One statement; on PostgreSQL `FOR UPDATE SKIP LOCKED` lets several workers claim
        side by side, and the partial unique index on `lock` keeps one key in flight at once.
        """
        due_at = time.time() if now is None else now
        due = (select(R.id).where(R.mirror == mirror, R.target == target, R.status == "pending",
                                  R.next_attempt_at <= due_at).limit(1))
        with self.reader.connect() as conn:  # nothing due: no write transaction at all
            if conn.execute(due).first() is None:
                return []
        x = replications.alias("x")
        busy = select(x.c.id).where(x.c.lock == R.lock, x.c.status == "in_progress").exists()
        pick = (select(R.id).where(R.mirror == mirror, R.target == target, R.status == "pending",
                                   R.next_attempt_at <= due_at, ~busy)
                .order_by(R.next_attempt_at, R.id).limit(limit))
        if not self.sqlite:
            pick = pick.with_for_update(skip_locked=True)
        stmt = (update(replications).where(R.id.in_(pick.scalar_subquery()))
                .values(status="in_progress", lease_owner=owner, lease_expires_at=self._clock(now) + lease,
                        lease_token=R.lease_token + 1, attempts=R.attempts + 1, started_at=self._db_now())
                .returning(R.id))
        try:
            with self.engine.begin() as conn:
                ids = [r[0] for r in conn.execute(stmt)]
                return self._jobs(conn, ids)
        except IntegrityError:
            # two pending versions of one key in one batch (rare): claim them one at a time
            if limit == 1:
                return []
            return self.claim(mirror, target, owner, 1, lease, now=now)

    @staticmethod
    def _jobs(conn, ids: list[int]) -> list[Job]:
        if not ids:
            return []
        done = replications.alias("done")
        last = (select(done.c.copied_etag, done.c.copied_version_id)
                .where(done.c.lock == R.lock, done.c.status == "completed", done.c.copied_etag.is_not(None))
                .order_by(done.c.completed_at.desc(), done.c.id.desc()).limit(1))
        q = (select(R.id, R.version_pk, R.mirror, R.target, R.key, V.op, R.attempts, V.source_time, V.version_id,
                    V.etag, V.sequencer, V.size, R.upload_id, V.origin,
                    last.with_only_columns(done.c.copied_etag).scalar_subquery().label("last_copied_etag"),
                    last.with_only_columns(done.c.copied_version_id).scalar_subquery().label("last_copied_version"),
                    R.lease_token.label("token"), R.last_error)
             .join(versions, V.id == R.version_pk).where(R.id.in_(ids)).order_by(R.id))
        return [Job(**r._mapping) for r in conn.execute(q)]

    @retry_transient
    def renew_leases(self, owner: str, held: Mapping[int, int], lease: float, *,
                     now: float | None = None) -> set[int]:
        """Push the leases of in-flight jobs ({id: token}) to `lease` seconds from the
        database's clock. Returns the ids still ours (renewed); the others were finished or
        handed to another claim. A lease that lapsed but was not reclaimed yet is renewed:
        nobody else can hold it. Idempotent."""
        if not held:
            return set()
        with self.engine.begin() as conn:
            return {r[0] for r in conn.execute(update(replications).where(*self._held(owner, held))
                                               .values(lease_expires_at=self._clock(now) + lease).returning(R.id))}

    @retry_transient
    def reclaim_expired(self, *, now: float | None = None, spare: Collection[int] = ()) -> int:
        """Put in-flight jobs whose lease ran out (a crashed or starved worker's) back to
        pending, by the database's clock (or `now`). Their upload_id stays so the next attempt
        aborts the unfinished upload first; their token stays, to be outdated by the next claim.
        `spare`: ids the caller holds and renews itself (a keeper whose reclaim queued behind
        another writer for longer than a lease must not take back its own live jobs)."""
        expired = [R.status == "in_progress", R.lease_expires_at < self._clock(now)]
        if spare:
            expired.append(R.id.not_in(list(spare)))
        with self.reader.connect() as conn:  # none expired (the usual case): no write transaction
            if conn.execute(select(R.id).where(*expired).limit(1)).first() is None:
                return 0
        with self.engine.begin() as conn:
            n = conn.execute(update(replications)
                             .where(*expired)
                             .values(status="pending", lease_owner=None, lease_expires_at=None,
                                     next_attempt_at=time.time() if now is None else now,
                                     last_error=LEASE_EXPIRED)).rowcount
            if n:  # a version recorded while the dead job was in flight is newer: it wins (when its copy
                # is of the same operation: a delete's copy never copies a put, nor the reverse)
                y, yv, rv = replications.alias("y"), versions.alias("yv"), versions.alias("rv")
                newer = (select(y.c.id).where(y.c.lock == R.lock, y.c.status == "pending", y.c.id > R.id,
                                              yv.c.id == y.c.version_pk, rv.c.id == R.version_pk, yv.c.op == rv.c.op)
                         .exists())
                conn.execute(update(replications).where(R.status == "pending", newer)
                             .values(status="superseded", detail="superseded by a newer version",
                                     completed_at=time.time() if now is None else now, upload_id=R.upload_id))
            return n

    @retry_transient
    def release(self, owner: str, ids: Sequence[int] | Mapping[int, int]) -> int:
        """Give unstarted claimed jobs back (on shutdown); attempts are not counted. `ids`
        may be {id: token} to release only those claims. Returns how many went back."""
        if not ids:
            return 0
        with self.engine.begin() as conn:
            return conn.execute(update(replications).where(*self._held(owner, ids))
                                .values(status="pending", lease_owner=None, lease_expires_at=None,
                                        attempts=R.attempts - 1)).rowcount

    # ------------------------------------------------------------ outcomes
    @retry_transient
    def _finish(self, job_id: int, owner: str, token: int | None, **values) -> bool:
        """End (or reschedule) a job we hold; lease_owner stays as a record of who ran it."""
        with self.engine.begin() as conn:
            return conn.execute(update(replications).where(R.id == job_id, *self._ours(owner, token))
                                .values(lease_expires_at=None, **values)).rowcount == 1

    def complete(self, job_id: int, owner: str, *, copied_etag: str | None = None,
                 copied_version_id: str | None = None, target_etag: str | None = None,
                 target_version_id: str | None = None, size: int | None = None, detail: str | None = None,
                 now: float | None = None, token: int | None = None) -> bool:
        """Mark a job completed. False when the job was no longer ours (lease lost)."""
        return self.complete_many(owner, [dict(id=job_id, token=token, copied_etag=copied_etag,
                                               copied_version_id=copied_version_id, target_etag=target_etag,
                                               target_version_id=target_version_id, bytes=size, detail=detail)],
                                  now=now) == 1

    @retry_transient
    def complete_many(self, owner: str, done: Sequence[dict], *, now: float | None = None) -> int:
        """Mark many jobs completed in one transaction. Each dict has `id` and optionally
        `token` (the claim's lease token), copied_etag, copied_version_id, target_etag,
        target_version_id, bytes, detail. Returns how many were still ours (a job whose
        lease was lost is left alone). Idempotent."""
        if not done:
            return 0
        fields = ("copied_etag", "copied_version_id", "target_etag", "target_version_id", "bytes", "detail")
        rows = [{"_id": d["id"], "_token": d.get("token"), **{f: d.get(f) for f in fields}} for d in done]
        for r in rows:
            r["detail"] = redact(r["detail"])
        fenced = R.lease_token == func.coalesce(bindparam("_token", type_=Integer), R.lease_token)
        stmt = (update(replications)
                .where(R.id == bindparam("_id"), *self._ours(owner), fenced)
                .values(status="completed", completed_at=self._clock(now), lease_expires_at=None,
                        upload_id=None, last_error=None, **{f: bindparam(f) for f in fields}))
        with self.engine.begin() as conn:
            return conn.execute(stmt, rows).rowcount

    def finish_other(self, job_id: int, owner: str, status: str, detail: str, *, token: int | None = None) -> bool:
        """End a job as superseded or skipped, with the reason (redacted)."""
        assert status in ("superseded", "skipped")
        return self._finish(job_id, owner, token, status=status, detail=redact(detail), completed_at=time.time(),
                            upload_id=None)

    def retry_later(self, job_id: int, owner: str, error: str, at: float, *, count_attempt: bool = True,
                    token: int | None = None) -> bool:
        """Reschedule a job we hold; `error` (why the attempt failed) is stored redacted."""
        values = dict(status="pending", last_error=redact(error), next_attempt_at=at)
        if not count_attempt:
            values["attempts"] = R.attempts - 1
        return self._finish(job_id, owner, token, **values)

    def fail(self, job_id: int, owner: str, error: str, *, token: int | None = None) -> bool:
        """Give a job up; `error` is stored redacted."""
        return self._finish(job_id, owner, token, status="failed", last_error=redact(error), completed_at=time.time())

    @retry_transient
    def set_upload_id(self, job_id: int, upload_id: str | None, *, owner: str | None = None,
                      token: int | None = None) -> bool:
        """Remember (or forget) the job's unfinished multipart upload. With `owner`, only
        while the job is still ours (False otherwise)."""
        cond = [R.id == job_id, *(self._ours(owner, token) if owner is not None else [])]
        with self.engine.begin() as conn:
            return conn.execute(update(replications).where(*cond).values(upload_id=upload_id)).rowcount == 1
