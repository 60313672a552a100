"""All SQL lives here (claims, leases and outcomes of replications in claims.py, the other
tables in their own modules). The Ledger is synchronous (call it through asyncio.to_thread from
async code); every method is one transaction.

Ordering of versions of one key (invariant 3): by provider sequencer when both versions
have different ones (left-padded hex, as S3 documents), else by source write time, else the
one seen later wins. Event metadata is untrusted input, so ordering only ever decides which
of two copies still to run is kept, never that a write needs no copy (issue 12):

- a version is written off (`superseded`) on a target only while another copy of the same
  operation on that key and target is still `pending`: that copy has not looked at the
  source yet, and takes the source's current state (which includes this write) when it
  runs. A newer version supersedes the older pending copies of its operation; a version
  older than the key's head is superseded when such a copy is pending, else it waits for
  a copy of its own and the source decides (the worker copies what the source holds, or
  nothing when the target already holds it). A bogus head (a forged sequencer) therefore
  never hides a later real write;
- a version whose event time is ahead of the ledger's clock by more than MAX_CLOCK_SKEW is
  recorded with the reason, not used for ordering (it neither becomes the key's head nor
  supersedes anything), and its time is clamped to the clock, so the RPO stays honest.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from cloudmirror.ledger import db
from cloudmirror.ledger.claims import LEASE_EXPIRED, Claims, Job
from cloudmirror.ledger.models import dead_letters, key_heads, replications, versions
from cloudmirror.redact import redact

__all__ = ["LEASE_EXPIRED", "LISTED_ORIGINS", "MAX_CLOCK_SKEW", "ORDERING_FEED", "DeadLetter", "Job", "Ledger",
           "NewVersion", "RecordOutcome", "TargetPlan", "is_newer", "lock_id"]

R = replications.c
LISTED_ORIGINS = ("backfill", "reconcile")  # versions found by comparing listings, not announced
V = versions.c
MAX_CLOCK_SKEW = 900.0  # seconds an event's time may be ahead of the ledger's clock and still order versions


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
    stale: int = 0  # judged older than the key's newest version
    untrusted: int = 0  # event time in the future: recorded, not used for ordering


def _future_time(item: NewVersion, now: float) -> str | None:
    """Why `item`'s event time cannot order it (ahead of the clock by more than the allowed
    skew), or None."""
    if item.source_time <= now + MAX_CLOCK_SKEW:
        return None
    try:
        claimed = datetime.fromtimestamp(item.source_time, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        claimed = repr(item.source_time)
    return (f"event time {claimed} is ahead of the clock by more than {MAX_CLOCK_SKEW:.0f}s: not used for "
            f"ordering; the source decides")


ORDERING_FEED = "ordering"  # the feed name of the dead letters Ledger.record writes for untrusted events


def _flag(item: NewVersion, pk: int, reason: str) -> DeadLetter:
    """A dead letter that shows an operator an event whose metadata was not trusted (its
    version is recorded and copied all the same: nothing to re-drive, only to discard)."""
    body = json.dumps(dict(mirror=item.mirror, key=item.key, op=item.op, token=item.token, etag=item.etag,
                           version_id=item.version_id, sequencer=item.sequencer, event_time=item.source_time,
                           version=pk), default=str)
    return DeadLetter(feed=ORDERING_FEED, body=body, message_id=f"version {pk}",
                      reason=f"{item.mirror}/{item.key[:200]} (version #{pk}, recorded): {reason}")


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
        flagged: list[DeadLetter] = []  # events whose metadata cannot be trusted (recorded all the same)
        with self.engine.begin() as conn:
            for item in ordered:
                untrusted = _future_time(item, now)
                pk = conn.execute(
                    self._insert(versions)
                    .values(mirror=item.mirror, key=item.key, token=item.token, op=item.op, version_id=item.version_id,
                            etag=item.etag, sequencer=item.sequencer, size=item.size,
                            source_time=now if untrusted else item.source_time, seen_at=now, origin=item.origin)
                    .on_conflict_do_nothing(index_elements=["mirror", "key", "token"])
                    .returning(V.id)
                ).scalar()
                if pk is None:
                    conn.execute(update(versions)
                                 .where(V.mirror == item.mirror, V.key == item.key, V.token == item.token)
                                 .values(duplicates=V.duplicates + 1))
                    out.duplicate += 1
                    continue
                if untrusted:
                    stale, first = None, True  # not ordered against anything: neither head nor superseded
                    out.untrusted += 1
                    flagged.append(_flag(item, pk, untrusted))
                else:
                    stale, first = self._advance_head(conn, item, pk)
                if stale is not None:
                    out.stale += 1
                locks = {t.target: lock_id(item.mirror, t.target, item.key) for t in item.targets}
                # a difference found by listing is always worth the (guarded, current-state) copy
                judged = stale is not None and item.origin not in LISTED_ORIGINS
                covers = self._pending_copies(conn, item, pk, list(locks.values())) if judged else {}
                rows = []
                for t in item.targets:
                    status, detail = t.status, t.detail
                    if status == "pending" and untrusted:
                        detail = untrusted
                    elif status == "pending" and judged:
                        cover = covers.get(locks[t.target])
                        if cover is not None:
                            status = "superseded"
                            detail = (f"older than version #{stale} already seen; the pending copy of version "
                                      f"#{cover} takes the source's current state")
                        else:  # the head's copy has run or started: it may never have seen this write
                            detail = f"its event is older than version #{stale}, whose copy started: the source decides"
                    rows.append(dict(version_pk=pk, mirror=item.mirror, target=t.target, key=item.key,
                                     lock=locks[t.target], status=status, detail=detail,
                                     next_attempt_at=now, created_at=now,
                                     completed_at=now if status != "pending" else None))
                if stale is None and not first:  # a newer version makes older pending copies of its kind moot
                    same_op = select(V.id).where(V.mirror == item.mirror, V.key == item.key, V.op == item.op)
                    conn.execute(update(replications)
                                 .where(R.lock.in_(list(locks.values())), R.status == "pending", R.version_pk != pk,
                                        R.version_pk.in_(same_op.scalar_subquery()))
                                 .values(status="superseded", detail=f"superseded by version #{pk}", completed_at=now))
                if rows:
                    conn.execute(insert(replications), rows)
                out.new += 1
            if dead or flagged:
                conn.execute(insert(dead_letters), [dict(feed=d.feed, message_id=d.message_id, body=redact(d.body),
                                                         reason=redact(d.reason), received_at=now)
                                                    for d in (*dead, *flagged)])
        return out

    @staticmethod
    def _pending_copies(conn, item: NewVersion, pk: int, locks: list[str]) -> dict[str, int]:
        """Per lock (target), a version of the key with a copy of the same operation still
        `pending` on it: one that has not looked at the source yet (a copy in progress may
        have looked before `item` was written; a delete's copy never copies a put)."""
        q = (select(R.lock, func.max(R.version_pk))
             .join(versions, V.id == R.version_pk)
             .where(R.lock.in_(locks), R.status == "pending", R.version_pk != pk, V.op == item.op)
             .group_by(R.lock))
        return {lock: vpk for lock, vpk in conn.execute(q)}

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
