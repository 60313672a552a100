"""All SQL lives here. The Ledger is synchronous (call it through asyncio.to_thread from
async code); every method is one transaction.

Ordering of versions of one key (invariant 3): by provider sequencer when both versions
have different ones (left-padded hex, as S3 documents), else by source write time, else the
one seen later wins. A version older than the key's head is recorded as `superseded` at
once; a newer one supersedes the older versions' pending replications.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Double, bindparam, case, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

from cloudmirror.ledger import db
from cloudmirror.ledger.models import dead_letters, key_heads, replications, versions

R = replications.c
LISTED_ORIGINS = ("backfill", "reconcile")  # versions found by comparing listings, not announced
V = versions.c


def _is_transient(e: BaseException) -> bool:
    """PostgreSQL deadlock (40P01) or serialization failure (40001), or SQLite still busy or
    locked after its busy timeout: the transaction rolled back, safe to run again."""
    return isinstance(e, OperationalError) and (getattr(e.orig, "sqlstate", None) in ("40P01", "40001")
                                                or db.is_locked(e))


_retry_transient = retry(retry=retry_if_exception(_is_transient), stop=stop_after_attempt(8),
                         wait=wait_random_exponential(multiplier=0.01, max=0.5), reraise=True)


def lock_id(mirror: str, target: str, key: str) -> str:
    return hashlib.sha1(f"{mirror}\0{target}\0{key}".encode()).hexdigest()


def is_newer(a_seq: str | None, a_time: float | None, b_seq: str | None, b_time: float | None) -> bool:
    """Is version a newer than version b of the same key? Ties go to a (seen later)."""
    if a_seq and b_seq and a_seq != b_seq:
        w = max(len(a_seq), len(b_seq))
        return a_seq.upper().rjust(w, "0") > b_seq.upper().rjust(w, "0")
    if a_time is not None and b_time is not None and a_time != b_time:
        return a_time > b_time
    return True


@dataclass
class TargetPlan:
    target: str
    status: str = "pending"  # pending | skipped
    detail: str | None = None


@dataclass
class NewVersion:
    mirror: str
    key: str  # relative to the source location's prefix
    token: str
    op: str
    source_time: float
    targets: list[TargetPlan]
    version_id: str | None = None
    etag: str | None = None
    sequencer: str | None = None
    size: int | None = None
    origin: str = "event"


@dataclass
class DeadLetter:
    feed: str
    body: str
    reason: str
    message_id: str | None = None


@dataclass
class RecordOutcome:
    new: int = 0
    duplicate: int = 0
    stale: int = 0


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


class Ledger:
    """The SQL ledger. Thread-safe (one connection per call from the pool)."""

    def __init__(self, url: str, *, pool_size: int = 8):
        self.url = db.normalize_url(url)
        self.engine = db.make_engine(self.url, pool_size=pool_size)
        self.sqlite = db.is_sqlite(self.url)
        # reads on SQLite must not queue behind the writer lock; PostgreSQL needs no second pool
        self.reader = db.make_engine(self.url, read_only=True) if self.sqlite else self.engine

    def upgrade(self) -> None:
        db.upgrade(self.url)

    def close(self) -> None:
        self.engine.dispose()
        self.reader.dispose()

    def _db_now(self):
        """The database's clock at the moment a row is written, in epoch seconds: a claim's
        started_at then always follows the commit that freed its key, across hosts too."""
        if self.sqlite:
            return (func.julianday("now") - 2440587.5) * 86400.0
        return func.extract("epoch", func.clock_timestamp()).cast(Double)

    def _insert(self, table):
        return (sqlite if self.sqlite else postgresql).insert(table)

    # ------------------------------------------------------------ intake
    @_retry_transient
    def record(self, items: Sequence[NewVersion], dead: Sequence[DeadLetter] = (), *, now: float | None = None) -> RecordOutcome:
        """Record versions (dropping duplicates by token) and dead letters in ONE transaction.

        Items are written in (mirror, key, token) order so that concurrent transactions take
        their row locks in the same order; a deadlock or serialization failure that still
        happens is retried. Idempotent: recording the same versions again changes only the
        duplicate counters.
        """
        now = time.time() if now is None else now
        out = RecordOutcome()
        ordered = sorted(items, key=lambda i: (i.mirror, i.key, i.token))
        with self.engine.begin() as conn:
            for item in ordered:
                pk = conn.execute(
                    self._insert(versions)
                    .values(mirror=item.mirror, key=item.key, token=item.token, op=item.op, version_id=item.version_id,
                            etag=item.etag, sequencer=item.sequencer, size=item.size, source_time=item.source_time,
                            seen_at=now, origin=item.origin)
                    .on_conflict_do_nothing(index_elements=["mirror", "key", "token"])
                    .returning(V.id)
                ).scalar()
                if pk is None:
                    conn.execute(update(versions).where(V.mirror == item.mirror, V.key == item.key, V.token == item.token)
                                 .values(duplicates=V.duplicates + 1))
                    out.duplicate += 1
                    continue
                stale, first = self._advance_head(conn, item, pk)
                if stale is not None:
                    out.stale += 1
                rows = []
                for t in item.targets:
                    status, detail = t.status, t.detail
                    # a difference found by listing is always worth the (guarded, current-state) copy
                    if stale is not None and status == "pending" and item.origin not in LISTED_ORIGINS:
                        status, detail = "superseded", f"older than version #{stale} already seen"
                    rows.append(dict(version_pk=pk, mirror=item.mirror, target=t.target, key=item.key,
                                     lock=lock_id(item.mirror, t.target, item.key), status=status, detail=detail,
                                     next_attempt_at=now, created_at=now,
                                     completed_at=now if status != "pending" else None))
                if stale is None and not first:  # a newer version makes older pending copies moot
                    locks = [lock_id(item.mirror, t.target, item.key) for t in item.targets]
                    conn.execute(update(replications)
                                 .where(R.lock.in_(locks), R.status == "pending", R.version_pk != pk)
                                 .values(status="superseded", detail=f"superseded by version #{pk}", completed_at=now))
                if rows:
                    conn.execute(insert(replications), rows)
                out.new += 1
            if dead:
                conn.execute(insert(dead_letters), [dict(feed=d.feed, message_id=d.message_id, body=d.body,
                                                         reason=d.reason, received_at=now) for d in dead])
        return out

    def _advance_head(self, conn, item: NewVersion, pk: int) -> tuple[int | None, bool]:
        """Make `pk` the key's head when it is newer. Returns (the head's pk when `pk` is
        older, else None; whether `pk` is the first version of the key ever seen)."""
        ins = self._insert(key_heads).values(mirror=item.mirror, key=item.key, version_pk=pk,
                                             sequencer=item.sequencer, source_time=item.source_time)
        if conn.execute(ins.on_conflict_do_nothing(index_elements=["mirror", "key"])).rowcount == 1:
            return None, True
        q = select(key_heads).where(key_heads.c.mirror == item.mirror, key_heads.c.key == item.key)
        if not self.sqlite:
            q = q.with_for_update()
        head = conn.execute(q).one()
        if not is_newer(item.sequencer, item.source_time, head.sequencer, head.source_time):
            return head.version_pk, False
        conn.execute(update(key_heads).where(key_heads.c.mirror == item.mirror, key_heads.c.key == item.key)
                     .values(version_pk=pk, sequencer=item.sequencer, source_time=item.source_time))
        return None, False

    # ------------------------------------------------------------ claims
    @_retry_transient
    def claim(self, mirror: str, target: str, owner: str, limit: int, lease: float, *, now: float | None = None) -> list[Job]:
        """Claim up to `limit` due pending replications of one (mirror, target).

        One statement; on PostgreSQL `FOR UPDATE SKIP LOCKED` lets several workers claim
        side by side, and the partial unique index on `lock` keeps one key in flight at once.
        """
        now = time.time() if now is None else now
        due = (select(R.id).where(R.mirror == mirror, R.target == target, R.status == "pending",
                                  R.next_attempt_at <= now).limit(1))
        with self.reader.connect() as conn:  # nothing due: no write transaction at all
            if conn.execute(due).first() is None:
                return []
        x = replications.alias("x")
        busy = select(x.c.id).where(x.c.lock == R.lock, x.c.status == "in_progress").exists()
        pick = (select(R.id).where(R.mirror == mirror, R.target == target, R.status == "pending",
                                   R.next_attempt_at <= now, ~busy)
                .order_by(R.next_attempt_at, R.id).limit(limit))
        if not self.sqlite:
            pick = pick.with_for_update(skip_locked=True)
        stmt = (update(replications).where(R.id.in_(pick.scalar_subquery()))
                .values(status="in_progress", lease_owner=owner, lease_expires_at=now + lease, attempts=R.attempts + 1,
                        started_at=self._db_now())
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
                    last.with_only_columns(done.c.copied_version_id).scalar_subquery().label("last_copied_version"))
             .join(versions, V.id == R.version_pk).where(R.id.in_(ids)).order_by(R.id))
        return [Job(**r._mapping) for r in conn.execute(q)]

    def extend_leases(self, owner: str, ids: Sequence[int], lease: float, *, now: float | None = None) -> int:
        """Push the lease of in-flight jobs forward. Returns how many are still ours."""
        if not ids:
            return 0
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            return conn.execute(update(replications)
                                .where(R.id.in_(list(ids)), R.lease_owner == owner, R.status == "in_progress")
                                .values(lease_expires_at=now + lease)).rowcount

    def owned_by(self, owner: str, ids: Sequence[int]) -> list[int]:
        """Which of these jobs are still in flight under our lease."""
        if not ids:
            return []
        q = select(R.id).where(R.id.in_(list(ids)), R.lease_owner == owner, R.status == "in_progress")
        with self.reader.connect() as conn:
            return [r[0] for r in conn.execute(q)]

    def reclaim_expired(self, *, now: float | None = None) -> int:
        """Put in-flight jobs whose lease ran out (a crashed worker's) back to pending.
        Their upload_id stays so the next attempt aborts the unfinished upload first."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            n = conn.execute(update(replications)
                             .where(R.status == "in_progress", R.lease_expires_at < now)
                             .values(status="pending", lease_owner=None, lease_expires_at=None,
                                     next_attempt_at=now, last_error="lease expired (worker died?)")).rowcount
            if n:  # a version recorded while the dead job was in flight is newer: it wins
                y = replications.alias("y")
                newer = select(y.c.id).where(y.c.lock == R.lock, y.c.status == "pending", y.c.id > R.id).exists()
                conn.execute(update(replications).where(R.status == "pending", newer)
                             .values(status="superseded", detail="superseded by a newer version", completed_at=now,
                                     upload_id=R.upload_id))
            return n

    def release(self, owner: str, ids: Sequence[int]) -> None:
        """Give unstarted claimed jobs back (on shutdown); attempts are not counted."""
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(update(replications).where(R.id.in_(list(ids)), R.lease_owner == owner, R.status == "in_progress")
                         .values(status="pending", lease_owner=None, lease_expires_at=None, attempts=R.attempts - 1))

    # ------------------------------------------------------------ outcomes
    def _finish(self, job_id: int, owner: str, **values) -> bool:
        """End (or reschedule) a job we hold; lease_owner stays as a record of who ran it."""
        with self.engine.begin() as conn:
            return conn.execute(update(replications)
                                .where(R.id == job_id, R.status == "in_progress", R.lease_owner == owner)
                                .values(lease_expires_at=None, **values)).rowcount == 1

    def complete(self, job_id: int, owner: str, *, copied_etag: str | None = None, copied_version_id: str | None = None,
                 target_etag: str | None = None, target_version_id: str | None = None, size: int | None = None,
                 detail: str | None = None, now: float | None = None) -> bool:
        """Mark a job completed. False when the job was no longer ours (lease lost)."""
        return self.complete_many(owner, [dict(id=job_id, copied_etag=copied_etag, copied_version_id=copied_version_id,
                                               target_etag=target_etag, target_version_id=target_version_id,
                                               bytes=size, detail=detail)], now=now) == 1

    def complete_many(self, owner: str, done: Sequence[dict], *, now: float | None = None) -> int:
        """Mark many jobs completed in one transaction. Each dict has `id` and optionally
        copied_etag, copied_version_id, target_etag, target_version_id, bytes, detail.
        Returns how many were still ours (a job whose lease was lost is left alone)."""
        if not done:
            return 0
        fields = ("copied_etag", "copied_version_id", "target_etag", "target_version_id", "bytes", "detail")
        rows = [{"_id": d["id"], **{f: d.get(f) for f in fields}} for d in done]
        stmt = (update(replications)
                .where(R.id == bindparam("_id"), R.status == "in_progress", R.lease_owner == owner)
                .values(status="completed", completed_at=self._db_now() if now is None else now, lease_expires_at=None,
                        upload_id=None, last_error=None,
                        **{f: bindparam(f) for f in fields}))
        with self.engine.begin() as conn:
            return conn.execute(stmt, rows).rowcount

    def finish_other(self, job_id: int, owner: str, status: str, detail: str) -> bool:
        """End a job as superseded or skipped, with the reason."""
        assert status in ("superseded", "skipped")
        return self._finish(job_id, owner, status=status, detail=detail, completed_at=time.time(), upload_id=None)

    def retry_later(self, job_id: int, owner: str, error: str, at: float, *, count_attempt: bool = True) -> bool:
        values = dict(status="pending", last_error=error, next_attempt_at=at)
        if not count_attempt:
            values["attempts"] = R.attempts - 1
        return self._finish(job_id, owner, **values)

    def fail(self, job_id: int, owner: str, error: str) -> bool:
        return self._finish(job_id, owner, status="failed", last_error=error, completed_at=time.time())

    def set_upload_id(self, job_id: int, upload_id: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(replications).where(R.id == job_id).values(upload_id=upload_id))

    # ------------------------------------------------------------ reading
    def status(self, *, now: float | None = None) -> list[dict]:
        """Per (mirror, target): counts by status and the oldest open source write time."""
        now = time.time() if now is None else now
        open_time = case((R.status.in_(("pending", "in_progress")), V.source_time))
        q = (select(R.mirror, R.target,
                    *[func.sum(case((R.status == s, 1), else_=0)).label(s) for s in
                      ("pending", "in_progress", "completed", "failed", "superseded", "skipped")],
                    func.min(open_time).label("oldest_open"))
             .join(versions, V.id == R.version_pk).group_by(R.mirror, R.target).order_by(R.mirror, R.target))
        with self.reader.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        for r in rows:
            for s in ("pending", "in_progress", "completed", "failed", "superseded", "skipped"):
                r[s] = int(r[s] or 0)
            r["rpo_seconds"] = max(0.0, now - r["oldest_open"]) if r["oldest_open"] is not None else 0.0
        return rows

    def backlog(self, mirror: str | None = None) -> int:
        q = select(func.count()).select_from(replications).where(R.status.in_(("pending", "in_progress")))
        if mirror:
            q = q.where(R.mirror == mirror)
        with self.reader.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    def replications_for(self, mirror: str, key: str) -> list[dict]:
        """Every version of a key and its replication on each target (oldest first)."""
        q = (select(V.id.label("version_pk"), V.op, V.version_id, V.etag, V.sequencer, V.source_time, V.duplicates,
                    V.origin, R.target, R.status, R.attempts, R.detail, R.last_error, R.completed_at, R.copied_etag)
             .join(replications, R.version_pk == V.id, isouter=True)
             .where(V.mirror == mirror, V.key == key).order_by(V.id, R.target))
        with self.reader.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def count(self, *, mirror: str | None = None, status: str | None = None, target: str | None = None) -> int:
        q = select(func.count()).select_from(replications)
        for col, value in ((R.mirror, mirror), (R.status, status), (R.target, target)):
            if value is not None:
                q = q.where(col == value)
        with self.reader.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    def dead_letters(self, limit: int = 100) -> list[dict]:
        q = select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit)
        with self.reader.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]
