"""SQL for dead letters (messages the intake could not use): list them, count them, and mark
one re-driven or discarded. They are written by Ledger.record, in the intake's transaction.
Synchronous (call it through asyncio.to_thread); every method is one transaction."""

from __future__ import annotations

import time

from sqlalchemy import func, select, update
from sqlalchemy.exc import DataError, IntegrityError, StatementError

from cloudmirror.ledger.db import retry_transient
from cloudmirror.ledger.models import dead_letters
from cloudmirror.ledger.paging import newest_first, read_rows
from cloudmirror.ledger.repo import Ledger, NewVersion, RecordOutcome

D = dead_letters.c
DEAD_LETTER_STATUSES = ("pending", "redriven", "discarded")


class VersionsRefused(ValueError):
    """The database refused the values of versions (a size or key it cannot hold)."""
SUMMARY_COLUMNS = (D.id, D.feed, D.message_id, D.reason, D.received_at, D.status, D.resolved_at, D.resolved_by)


class DeadLetters:
    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def list(self, *, status: str | None = "pending", feed: str | None = None, before: int | None = None,
             limit: int = 100, with_body: bool = False) -> list[dict]:
        """Dead letters, newest first, below the id `before` (all statuses when `status` is
        None); up to limit + 1 rows."""
        q = select(*SUMMARY_COLUMNS, *((D.body,) if with_body else ()))
        return read_rows(self.ledger.reader, newest_first(q, D.id, limit=limit, before=before,
                                                          where={D.status: status, D.feed: feed}))

    def get(self, dead_letter_id: int) -> dict | None:
        with self.ledger.reader.connect() as conn:
            row = conn.execute(select(*SUMMARY_COLUMNS, D.body).where(D.id == dead_letter_id)).first()
        return dict(row._mapping) if row else None

    def counts(self) -> dict[tuple[str, str], int]:
        """{(feed, status): how many}."""
        q = select(D.feed, D.status, func.count()).group_by(D.feed, D.status)
        with self.ledger.reader.connect() as conn:
            return {(feed, status): int(n) for feed, status, n in conn.execute(q)}

    def record(self, versions: list[NewVersion]) -> RecordOutcome:
        """Ledger.record of a re-driven dead letter's versions (the intake's own path). Raises
        VersionsRefused when the database refuses their values (not when it is unreachable)."""
        try:
            return self.ledger.record(versions)
        except (DataError, IntegrityError) as e:
            raise VersionsRefused(str(e.orig).splitlines()[0] if e.orig else str(e)) from None
        except StatementError as e:  # the driver refused a parameter before sending it
            if isinstance(e.orig, (ValueError, OverflowError, TypeError)):
                raise VersionsRefused(str(e.orig)) from None
            raise
        except (ValueError, OverflowError) as e:
            raise VersionsRefused(str(e)) from None

    @retry_transient
    def resolve(self, dead_letter_id: int, status: str, by: str, *, now: float | None = None) -> bool:
        """Mark a pending dead letter `status` (redriven | discarded) by `by`. False when it is
        unknown or no longer pending (someone resolved it first)."""
        if status not in DEAD_LETTER_STATUSES[1:]:
            raise ValueError(f"cannot resolve a dead letter as {status!r}")
        now = time.time() if now is None else now
        with self.ledger.engine.begin() as conn:
            n = conn.execute(update(dead_letters).where(D.id == dead_letter_id, D.status == "pending")
                             .values(status=status, resolved_at=now, resolved_by=by[:256])).rowcount
        return n == 1
