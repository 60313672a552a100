"""SQL for access control: API keys (stored as a SHA-256 of the token, never the token) and
the audit log. Synchronous (call it through asyncio.to_thread from async code); every
method is one transaction."""

from __future__ import annotations

import time

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from cloudmirror.ledger.db import retry_transient
from cloudmirror.ledger.models import api_keys, audit_log
from cloudmirror.ledger.paging import newest_first, oldest_first, read_rows
from cloudmirror.ledger.repo import Ledger
from cloudmirror.redact import redact

K = api_keys.c
A = audit_log.c
TOUCH_EVERY_S = 60.0  # last_used_at is refreshed at most this often (one write per key per minute)


def _text(value: str | None, size: int) -> str | None:
    """Storable text: NUL (PostgreSQL refuses it) and lone surrogates (no encoding takes
    them) are written as escapes, then cut to the column's size."""
    if value is None:
        return None
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")[:size]


class DuplicateKeyName(ValueError):
    """An active key already has this name."""


class AccessLedger:
    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    # ------------------------------------------------------------ keys
    @retry_transient
    def create_key(self, *, name: str, role: str, prefix: str, token_hash: str, now: float | None = None) -> dict:
        """Insert a key. Raises DuplicateKeyName when an active key has the name."""
        now = time.time() if now is None else now
        try:
            with self.ledger.engine.begin() as conn:
                key_id = conn.execute(insert(api_keys).values(
                    name=name, role=role, prefix=prefix, token_hash=token_hash, created_at=now)
                    .returning(K.id)).scalar_one()
                return dict(conn.execute(select(api_keys).where(K.id == key_id)).one()._mapping)
        except IntegrityError:
            raise DuplicateKeyName(name) from None

    def key_by_hash(self, token_hash: str) -> dict | None:
        with self.ledger.reader.connect() as conn:
            row = conn.execute(select(api_keys).where(K.token_hash == token_hash)).first()
        return dict(row._mapping) if row else None

    def get_key(self, key_id: int) -> dict | None:
        with self.ledger.reader.connect() as conn:
            row = conn.execute(select(api_keys).where(K.id == key_id)).first()
        return dict(row._mapping) if row else None

    @retry_transient
    def touch_key(self, key_id: int, *, now: float | None = None) -> None:
        """Record a use of the key, unless one was recorded within TOUCH_EVERY_S."""
        now = time.time() if now is None else now
        with self.ledger.engine.begin() as conn:
            conn.execute(update(api_keys).where(
                K.id == key_id, or_(K.last_used_at.is_(None), K.last_used_at < now - TOUCH_EVERY_S))
                .values(last_used_at=now))

    def list_keys(self, *, after: int | None = None, limit: int = 100, include_revoked: bool = True) -> list[dict]:
        """Keys by id ascending, after the id `after`; returns up to limit + 1 rows (the
        extra one says there is a next page)."""
        q = select(api_keys) if include_revoked else select(api_keys).where(K.revoked_at.is_(None))
        return read_rows(self.ledger.reader, oldest_first(q, K.id, limit=limit, after=after))

    @retry_transient
    def revoke_key(self, key_id: int, *, now: float | None = None) -> tuple[dict | None, bool]:
        """Revoke a key. Returns (the key or None when unknown, whether this call revoked it;
        False when it was already revoked). Idempotent."""
        now = time.time() if now is None else now
        with self.ledger.engine.begin() as conn:
            n = conn.execute(update(api_keys).where(K.id == key_id, K.revoked_at.is_(None))
                             .values(revoked_at=now)).rowcount
            row = conn.execute(select(api_keys).where(K.id == key_id)).first()
        return (dict(row._mapping) if row else None), n == 1

    # ------------------------------------------------------------ audit
    @retry_transient
    def audit(self, *, actor: str, action: str, status: int, key_id: int | None = None, target: str | None = None,
              detail: str | None = None, client: str | None = None, now: float | None = None) -> int:
        """Append one audit entry; returns its id. Text is cut to the column sizes, and NUL
        characters and lone surrogates are escaped: an entry is never lost to what a caller sent.
        Target and detail are redacted (cloudmirror.redact) before they are cut."""
        now = time.time() if now is None else now
        with self.ledger.engine.begin() as conn:
            return conn.execute(insert(audit_log).values(
                at=now, actor=_text(actor, 160), key_id=key_id, action=_text(action, 300),
                target=_text(redact(target), 4000), status=status, detail=_text(redact(detail), 2000),
                client=_text(client, 64)).returning(A.id)).scalar_one()

    def list_audit(self, *, before: int | None = None, limit: int = 100, actor: str | None = None,
                   action: str | None = None) -> list[dict]:
        """Entries newest first, before the id `before`; up to limit + 1 rows."""
        q = (select(audit_log) if action is None
             else select(audit_log).where(A.action.startswith(action, autoescape=True)))
        return read_rows(self.ledger.reader, newest_first(q, A.id, limit=limit, before=before, where={A.actor: actor}))
