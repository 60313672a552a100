"""Engine construction and schema migrations (Alembic).

SQLite under contention (the API, intake, workers and a CLI command on one file):
- the busy timeout is the first thing set on every connection (the driver's `timeout`,
  then `PRAGMA busy_timeout`), so every later statement waits for a lock instead of failing;
- WAL is set once, when the file is created by `upgrade` (it is a property of the file, kept
  across connections). A connection only checks it, once per engine; switching a file that
  is not in WAL yet is retried, because two connections switching at the same time deadlock
  and SQLite then answers "database is locked" at once, without waiting;
- writers begin with BEGIN IMMEDIATE (one writer at a time, taken up front: no read lock to
  upgrade, so no lock-upgrade deadlock), readers with a plain BEGIN beside them; a BEGIN
  that SQLite still refuses as busy or locked is retried with jittered backoff.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, exc, make_url
from sqlalchemy.pool import NullPool
from tenacity import Retrying, retry, retry_if_exception, stop_after_attempt, stop_after_delay, wait_random_exponential

MIGRATIONS = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_S = 30.0  # how long one statement waits for a lock held by another connection

_wal_files: set[str] = set()  # SQLite files this process has seen in WAL mode (persistent in the file)
_upgrade_lock = threading.Lock()  # Alembic's `context` and `op` are process globals


class LedgerError(RuntimeError):
    """The ledger database is unreachable or not at the expected schema."""


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain postgresql:// URLs."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def is_locked(e: BaseException) -> bool:
    """SQLite said the database is busy or locked (the driver's or SQLAlchemy's exception)."""
    orig = getattr(e, "orig", None) or e
    text = str(orig).lower()
    return isinstance(orig, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def is_transient(e: BaseException) -> bool:
    """PostgreSQL deadlock (40P01) or serialization failure (40001), or SQLite still busy or
    locked after its busy timeout: the transaction rolled back, safe to run again."""
    return isinstance(e, exc.OperationalError) and (getattr(e.orig, "sqlstate", None) in ("40P01", "40001")
                                                    or is_locked(e))


# for one-transaction ledger methods that are safe to run again
retry_transient = retry(retry=retry_if_exception(is_transient), stop=stop_after_attempt(8),
                        wait=wait_random_exponential(multiplier=0.01, max=0.5), reraise=True)


def retrying_locked(attempts: int = 12) -> Retrying:
    """Retries while SQLite says busy/locked: jittered exponential backoff, capped."""
    return Retrying(retry=retry_if_exception(is_locked), stop=stop_after_attempt(attempts) | stop_after_delay(90),
                    wait=wait_random_exponential(multiplier=0.01, max=0.5), reraise=True)


def _sqlite_file(url: str) -> str:
    """The absolute path of a SQLite URL's file ("" for an in-memory database)."""
    database = make_url(url).database or ""
    return "" if database in ("", ":memory:") or database.startswith("file:") else os.path.abspath(database)


def _sqlite_connect(dbapi_conn, path: str) -> None:
    """Per connection: busy timeout first, then WAL (checked once per file), then the rest."""
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _begin_with_retry)
    dbapi_conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    if not path or path not in _wal_files:
        if ensure_wal(dbapi_conn) == "wal" and path:
            _wal_files.add(path)
    dbapi_conn.execute("PRAGMA synchronous=NORMAL")
    dbapi_conn.execute("PRAGMA foreign_keys=ON")


def ensure_wal(dbapi_conn) -> str:
    """Put the file in WAL mode unless it is already; returns the journal mode. Idempotent.
    In-memory databases stay in "memory" mode. Raises sqlite3.OperationalError when the
    file stays locked through every retry."""
    mode = str(dbapi_conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    if mode in ("wal", "memory"):
        return mode
    for attempt in retrying_locked():
        with attempt:
            mode = str(dbapi_conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
    return mode


def _begin_with_retry(conn, statement: str) -> None:
    """Emit BEGIN on the driver connection, retrying busy/locked; errors come out as
    SQLAlchemy's OperationalError like any other statement's."""
    raw = conn.connection.driver_connection
    try:
        for attempt in retrying_locked():
            with attempt:
                raw.execute(statement)
    except sqlite3.OperationalError as e:
        raise exc.OperationalError(statement, None, e) from e


def make_engine(url: str, *, pool_size: int = 8, read_only: bool = False) -> Engine:
    """Build an engine. SQLite gets the busy timeout, WAL and BEGIN IMMEDIATE transactions
    (see the module docstring) -- except a `read_only` engine, whose plain BEGIN lets readers
    run beside the writer; PostgreSQL gets a bounded pool."""
    url = normalize_url(url)
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S})
        path = _sqlite_file(url)
        event.listen(engine, "connect", lambda dbapi_conn, _rec: _sqlite_connect(dbapi_conn, path))
        begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"
        event.listen(engine, "begin", lambda conn: _begin_with_retry(conn, begin))
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
    """Bring the database schema to `revision`. Idempotent; safe to run from several threads
    and processes at once. A new SQLite file is put in WAL mode before anything else
    connects to it, and its whole upgrade is one BEGIN IMMEDIATE transaction (concurrent
    upgrades wait for each other instead of racing). Raises LedgerError."""
    from alembic import command

    cfg = alembic_config(url)
    try:
        with _upgrade_lock:
            if not is_sqlite(normalize_url(url)):
                command.upgrade(cfg, revision)
                return
            engine = _migration_engine(normalize_url(url))
            try:
                with engine.begin() as conn:
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, revision)
            finally:
                engine.dispose()
    except Exception as e:  # noqa: BLE001 - report any driver error plainly
        raise LedgerError(f"cannot upgrade ledger {redact(url)}: {describe(e)}") from e


def _migration_engine(url: str) -> Engine:
    """SQLite for migrations: busy timeout, WAL, BEGIN IMMEDIATE; foreign keys left off
    (a batch migration that rebuilds a table must not cascade its deletes)."""
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _rec):  # pragma: no cover - exercised by every sqlite test
        dbapi_conn.isolation_level = None
        dbapi_conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        if ensure_wal(dbapi_conn) == "wal" and _sqlite_file(url):
            _wal_files.add(_sqlite_file(url))

    event.listen(engine, "begin", lambda conn: _begin_with_retry(conn, "BEGIN IMMEDIATE"))
    return engine


def describe(e: BaseException) -> str:
    """One line saying what went wrong with the database, without driver noise."""
    orig = getattr(e, "orig", None) or e
    text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    if "no such table" in text or ("relation" in text and "does not exist" in text):
        return "the ledger has no schema yet: run `cloudmirror db upgrade`"
    return text


def redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]+@", r"://\1:***@", url)
