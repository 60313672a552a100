"""SQL for the mirrors the services run (table mirror_specs). Specs arrive validated (the
caller validates them exactly like the config file); this module only stores them.
Synchronous: call it through asyncio.to_thread from async code. Every method is one
transaction."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, text, update

from cloudmirror.ledger.models import mirror_specs
from cloudmirror.ledger.repo import Ledger, _retry_transient

M = mirror_specs.c


class SpecMissing(LookupError):
    """No live mirror has this name."""


class SpecExists(ValueError):
    """A live mirror already has this name."""


class RevisionMismatch(ValueError):
    """The mirror changed since the revision the caller read."""


@dataclass(frozen=True)
class SpecRow:
    name: str
    spec: dict[str, Any]
    origin: str
    active: str | None
    revision: int
    created_at: float
    updated_at: float


def _row(r) -> SpecRow:
    return SpecRow(name=r.name, spec=r.spec, origin=r.origin, active=r.active, revision=r.revision,
                   created_at=r.created_at, updated_at=r.updated_at)


class MirrorSpecs:
    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    @_retry_transient
    def seed(self, specs: dict[str, dict], *, now: float | None = None) -> list[str]:
        """Bring the config file's mirrors in. A mirror the ledger lacks is created; one whose
        file spec changed since the last seed takes the file's spec (the file was edited: it
        wins over API changes); one the file seeded before and no longer lists is deleted.
        A mirror whose file spec is unchanged keeps what the API made of it. Returns the
        names changed. Idempotent."""
        now = time.time() if now is None else now
        changed = []
        with self.ledger.engine.begin() as conn:
            if not self.ledger.sqlite:  # one seed at a time (two starts on an empty table would both insert);
                # SQLite's BEGIN IMMEDIATE already serializes writers. Readers are not blocked.
                conn.execute(text("LOCK TABLE mirror_specs IN SHARE ROW EXCLUSIVE MODE"))
            rows = {r.name: r for r in conn.execute(select(mirror_specs))}
            for name, spec in specs.items():
                r = rows.get(name)
                if r is None:
                    conn.execute(insert(mirror_specs).values(name=name, spec=spec, seeded_spec=spec, origin="file",
                                                             revision=1, created_at=now, updated_at=now))
                elif r.seeded_spec != spec:
                    conn.execute(update(mirror_specs).where(M.name == name).values(
                        spec=spec, seeded_spec=spec, origin="file", deleted_at=None, revision=M.revision + 1,
                        updated_at=now))
                else:
                    continue
                changed.append(name)
            for name, r in rows.items():
                if name not in specs and r.origin == "file" and r.deleted_at is None:
                    conn.execute(update(mirror_specs).where(M.name == name).values(
                        deleted_at=now, seeded_spec=None, revision=M.revision + 1, updated_at=now))
                    changed.append(name)
        return changed

    def all(self) -> list[SpecRow]:
        """The live mirrors, by name."""
        with self.ledger.reader.connect() as conn:
            return [_row(r) for r in conn.execute(select(mirror_specs).where(M.deleted_at.is_(None)).order_by(M.name))]

    def get(self, name: str) -> SpecRow:
        """Raises SpecMissing."""
        with self.ledger.reader.connect() as conn:
            r = conn.execute(select(mirror_specs).where(M.name == name, M.deleted_at.is_(None))).first()
        if r is None:
            raise SpecMissing(name)
        return _row(r)

    def revision(self) -> tuple[int, int]:
        """Changes whenever any mirror does (every change adds one to a row's revision)."""
        with self.ledger.reader.connect() as conn:
            total, rows = conn.execute(select(func.coalesce(func.sum(M.revision), 0), func.count())).one()
        return int(total), int(rows)

    @_retry_transient
    def create(self, name: str, spec: dict, *, now: float | None = None) -> SpecRow:
        """Raises SpecExists. A deleted mirror's name can be given again."""
        now = time.time() if now is None else now
        with self.ledger.engine.begin() as conn:
            r = conn.execute(select(mirror_specs).where(M.name == name)).first()
            if r is not None and r.deleted_at is None:
                raise SpecExists(name)
            if r is None:
                conn.execute(insert(mirror_specs).values(name=name, spec=spec, origin="api", revision=1,
                                                         created_at=now, updated_at=now))
            else:
                conn.execute(update(mirror_specs).where(M.name == name).values(
                    spec=spec, origin="api", active=None, deleted_at=None, revision=M.revision + 1,
                    created_at=now, updated_at=now))
        return self.get(name)

    @_retry_transient
    def update(self, name: str, spec: dict | None = None, *, active: str | None = None, clear_active: bool = False,
               expect_revision: int | None = None, now: float | None = None) -> SpecRow:
        """Change a mirror's spec and/or its active location. Raises SpecMissing, and
        RevisionMismatch when `expect_revision` is given and the mirror moved on."""
        now = time.time() if now is None else now
        values: dict[str, Any] = dict(revision=M.revision + 1, updated_at=now)
        if spec is not None:
            values["spec"] = spec
        if active is not None or clear_active:
            values["active"] = active
        cond = [M.name == name, M.deleted_at.is_(None)]
        with self.ledger.engine.begin() as conn:
            current = conn.execute(select(M.revision).where(*cond)).scalar()
            if current is None:
                raise SpecMissing(name)
            if expect_revision is not None and current != expect_revision:
                raise RevisionMismatch(f"{name} is at revision {current}, not {expect_revision}")
            if conn.execute(update(mirror_specs).where(*cond, M.revision == current).values(**values)).rowcount == 0:
                raise RevisionMismatch(f"{name} changed while it was being updated")
        return self.get(name)

    @_retry_transient
    def delete(self, name: str, *, now: float | None = None) -> None:
        """Tombstone a mirror (its ledger history stays). Raises SpecMissing."""
        now = time.time() if now is None else now
        with self.ledger.engine.begin() as conn:
            n = conn.execute(update(mirror_specs).where(M.name == name, M.deleted_at.is_(None)).values(
                deleted_at=now, revision=M.revision + 1, updated_at=now)).rowcount
        if n == 0:
            raise SpecMissing(name)
