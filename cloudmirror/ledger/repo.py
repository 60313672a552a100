"""All SQL lives here (claims, leases and outcomes of replications in claims.py, the other
tables in their own modules). The Ledger is synchronous (call it through asyncio.to_thread from
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

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from cloudmirror.ledger import db
from cloudmirror.ledger.claims import LEASE_EXPIRED, Claims, Job
from cloudmirror.ledger.models import dead_letters, key_heads, replications, versions
from cloudmirror.redact import redact

__all__ = ["LEASE_EXPIRED", "LISTED_ORIGINS", "DeadLetter", "Job", "Ledger", "NewVersion", "RecordOutcome",
           "TargetPlan", "is_newer", "lock_id"]

R = replications.c
LISTED_ORIGINS = ("backfill", "reconcile")  # versions found by comparing listings, not announced
V = versions.c


_retry_transient = db.retry_transient  # (kept for the ledger modules that import it from here)


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


class Ledger(Claims):
    """The SQL ledger. Thread-safe (one connection per call from the pool). Claims, leases and
    outcomes of replications are in ledger/claims.py."""

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

    def _insert(self, table):
        return (sqlite if self.sqlite else postgresql).insert(table)

    # ------------------------------------------------------------ intake
    @_retry_transient
    def record(self, items: Sequence[NewVersion], dead: Sequence[DeadLetter] = (), *,
               now: float | None = None) -> RecordOutcome:
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
                    conn.execute(update(versions)
                                 .where(V.mirror == item.mirror, V.key == item.key, V.token == item.token)
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
                conn.execute(insert(dead_letters), [dict(feed=d.feed, message_id=d.message_id, body=redact(d.body),
                                                         reason=redact(d.reason), received_at=now)
                                                    for d in dead])
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

    def written(self, mirror: str, target: str, keys: Sequence[str]) -> dict[str, set[str]]:
        """Per key (relative), the target etags and version ids of every copy of it that
        `mirror` completed to `target`: what cloudmirror wrote there, by the target's own
        identity of each write. A key absent from the answer was never written there by this
        mirror. One indexed query (by the per-key lock id)."""
        out: dict[str, set[str]] = {}
        locks = {lock_id(mirror, target, k): k for k in keys}
        if not locks:
            return out
        q = select(R.key, R.target_etag, R.target_version_id).where(
            R.lock.in_(list(locks)), R.status == "completed",
            (R.target_etag.is_not(None)) | (R.target_version_id.is_not(None)))
        with self.reader.connect() as conn:
            for key, etag, vid in conn.execute(q):
                out.setdefault(key, set()).update(x for x in (etag, vid) if x)
        return out

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
