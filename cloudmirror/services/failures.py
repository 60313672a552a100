"""Service functions over replications that the REST API (and later the CLI) share: failed
replications (list, retry) and the history of one key on a mirror."""

from __future__ import annotations

from cloudmirror.config import Config
from cloudmirror.errors import ConflictError, NotFoundError
from cloudmirror.ledger.failures import FailureLedger
from cloudmirror.ledger.repo import Ledger
from cloudmirror.paging import DEFAULT_LIMIT, Page, page_of


def list_failures(ledger: Ledger, *, mirror: str | None = None, target: str | None = None,
                  before: int | None = None, limit: int = DEFAULT_LIMIT) -> Page[dict]:
    """Replications that gave up after their retries, newest first."""
    return page_of(FailureLedger(ledger).failures(mirror=mirror, target=target, before=before, limit=limit), limit)


def retry_failure(ledger: Ledger, replication_id: int) -> dict:
    """Put a failed replication back to pending with its attempts reset; the workers take it
    up at their next claim. Raises NotFoundError (unknown id) and ConflictError (not failed:
    retrying twice is refused, not repeated)."""
    row, changed = FailureLedger(ledger).retry(replication_id)
    if row is None:
        raise NotFoundError(f"no replication with id {replication_id}")
    if not changed:
        raise ConflictError(f"replication {replication_id} is {row['status']}, not failed: "
                            "only failed ones are retried")
    return row


def key_history(config: Config, ledger: Ledger, mirror: str, key: str, *, after: int | None = None,
                limit: int = DEFAULT_LIMIT) -> Page[dict]:
    """Every version of `key` (relative to the mirror's source prefix) that the ledger saw,
    oldest first, each with its replication on every target. Raises NotFoundError for an
    unknown mirror (MirrorNotFound), or a key the ledger never saw."""
    config.mirror(mirror)
    page = page_of(FailureLedger(ledger).key_history(mirror, key, after=after, limit=limit), limit)
    if not page.items and after is None:
        raise NotFoundError(f"mirror {mirror!r} has never seen a version of key {key!r}")
    return page
