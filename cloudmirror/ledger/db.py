"""Engine construction and schema migrations (Alembic)."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import NullPool

MIGRATIONS = Path(__file__).with_name("migrations")


class LedgerError(RuntimeError):
    """The ledger database is unreachable or not at the expected schema."""


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain postgresql:// URLs."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, pool_size: int = 8, read_only: bool = False) -> Engine:
    """Build an engine. SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE transactions
    (one writer at a time, no lock-upgrade deadlocks) -- except a `read_only` engine, whose
    plain BEGIN lets readers run beside the writer; PostgreSQL gets a bounded pool."""
    url = normalize_url(url)
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _rec):  # pragma: no cover - exercised by every sqlite test
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):  # pragma: no cover
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    if pool_size <= 0:
        return create_engine(url, poolclass=NullPool)
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database schema to `revision`. Idempotent."""
    from alembic import command

    try:
        command.upgrade(alembic_config(url), revision)
    except Exception as e:  # noqa: BLE001 - report any driver error plainly
        raise LedgerError(f"cannot upgrade ledger {redact(url)}: {describe(e)}") from e


def describe(e: BaseException) -> str:
    """One line saying what went wrong with the database, without driver noise."""
    orig = getattr(e, "orig", None) or e
    text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    if "no such table" in text or ("relation" in text and "does not exist" in text):
        return "the ledger has no schema yet: run `cloudmirror db upgrade`"
    return text


def redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]+@", r"://\1:***@", url)
