"""Access control shared by the REST API and the CLI: API keys with roles, authentication of a
bearer token, and the audit log.

A key is a random token (`cm_` + 43 URL-safe characters, 256 bits). The ledger keeps only its
SHA-256 (enough for a token of that entropy: no salt or slow hash is needed to resist
guessing) and its first characters for display; the token itself is shown once, at creation.

Roles are ordered: viewer < operator < admin; each includes the rights of the ones before.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import unicodedata
from dataclasses import dataclass
from enum import IntEnum

from cloudmirror.errors import ConflictError, InvalidInput, NotFoundError
from cloudmirror.ledger.access import AccessLedger, DuplicateKeyName
from cloudmirror.ledger.models import ROLES
from cloudmirror.ledger.repo import Ledger
from cloudmirror.paging import DEFAULT_LIMIT, Page, page_of

TOKEN_PREFIX = "cm_"
DISPLAY_PREFIX_LEN = 10  # "cm_" + 7 characters: enough to recognise a key, useless to guess it
MAX_TOKEN_LEN = 256


class Role(IntEnum):
    """The ledger stores the names (models.ROLES, in the same order)."""

    viewer = 1
    operator = 2
    admin = 3



@dataclass(frozen=True)
class Principal:
    """Who is calling: a valid, unrevoked API key."""

    key_id: int
    name: str
    role: Role

    def can(self, role: Role) -> bool:
        return self.role >= role


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def public_key(row: dict) -> dict:
    """A key as callers may see it: never the hash."""
    return {k: row[k] for k in ("id", "name", "role", "prefix", "created_at", "revoked_at", "last_used_at")}


def _check_name(name: str) -> str:
    """1 to 128 characters, not only spaces; no control or format characters, no lone surrogates."""
    name = name.strip()
    if not 1 <= len(name) <= 128 or any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in name):
        raise InvalidInput("name", "a key name is 1 to 128 printable characters")
    return name


def create_key(ledger: Ledger, name: str, role: str) -> tuple[str, dict]:
    """Create a key. Returns (the token -- shown once, never stored --, the key).
    Raises InvalidInput (bad name or role), ConflictError (an active key has the name)."""
    name = _check_name(name)
    if role not in ROLES:
        raise InvalidInput("role", f"must be one of {', '.join(ROLES)}, got {role!r}")
    token = new_token()
    try:
        row = AccessLedger(ledger).create_key(name=name, role=role, prefix=token[:DISPLAY_PREFIX_LEN],
                                              token_hash=hash_token(token))
    except DuplicateKeyName:
        raise ConflictError(f"an active key is already named {name!r}: revoke it or choose another name") from None
    return token, public_key(row)


def list_keys(ledger: Ledger, *, after: int | None = None, limit: int = DEFAULT_LIMIT,
              include_revoked: bool = True) -> Page[dict]:
    rows = AccessLedger(ledger).list_keys(after=after, limit=limit, include_revoked=include_revoked)
    page = page_of(rows, limit)
    page.items = [public_key(r) for r in page.items]
    return page


def revoke_key(ledger: Ledger, key_id: int) -> tuple[dict, bool]:
    """Revoke a key: it stops working at once. Returns (the key, False when it was already
    revoked). Idempotent. Raises NotFoundError."""
    row, changed = AccessLedger(ledger).revoke_key(key_id)
    if row is None:
        raise NotFoundError(f"no API key with id {key_id}")
    return public_key(row), changed


def authenticate(ledger: Ledger, token: str | None) -> Principal | None:
    """The principal a bearer token stands for, or None (missing, malformed, unknown or
    revoked). Records the key's use (at most once a minute)."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_LEN:
        return None
    store = AccessLedger(ledger)
    row = store.key_by_hash(hash_token(token))
    if row is None or row["revoked_at"] is not None or row["role"] not in ROLES:
        return None
    now = time.time()
    if row["last_used_at"] is None or row["last_used_at"] < now - 60:
        store.touch_key(row["id"], now=now)
    return Principal(key_id=row["id"], name=row["name"], role=Role[row["role"]])


def audit(ledger: Ledger, *, actor: str, action: str, status: int, key_id: int | None = None,
          target: str | None = None, detail: str | None = None, client: str | None = None) -> int:
    """Append an audit entry (who, what, on what, the outcome). Returns its id."""
    return AccessLedger(ledger).audit(actor=actor, action=action, status=status, key_id=key_id, target=target,
                                      detail=detail, client=client)


def list_audit(ledger: Ledger, *, before: int | None = None, limit: int = DEFAULT_LIMIT, actor: str | None = None,
               action: str | None = None) -> Page[dict]:
    """Audit entries, newest first."""
    return page_of(AccessLedger(ledger).list_audit(before=before, limit=limit, actor=actor, action=action), limit)
