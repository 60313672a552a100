"""cloudmirror under test: a `cloudmirror run` subprocess on a bench config, its ledger read
read-only (SQLite URI mode=ro), its Prometheus metrics scraped from the API."""

from __future__ import annotations

import re
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from bench.procs import BenchError, Child, http_get, poll
from cloudmirror.local.procs import free_port

MIRROR = "bench"


def cloudmirror_bin() -> str:
    exe = Path(sys.executable).with_name("cloudmirror")
    if not exe.exists():
        raise BenchError(f"{exe} not found: pip install -e . in the venv first")
    return str(exe)


def config_dict(*, ledger: str, listen: str, source: str, target: str, queue_url: str | None,
                wait_time_s: int = 1, poll_interval: str = "50ms") -> dict:
    """The bench config: SQLite ledger, the sqs feed (region us-east-1, 1 s long polls; no
    feed when queue_url is None), default workers except poll_interval."""
    return {
        "ledger": f"sqlite:///{ledger}",
        "api": {"listen": listen},
        "workers": {"poll_interval": poll_interval},
        "mirrors": [{"name": MIRROR, "source": source, "targets": [target],
                     "events": [{"sqs": queue_url, "region": "us-east-1", "wait_time_s": wait_time_s}]
                     if queue_url else []}],
    }


def write_config(path: Path, *, ledger: Path, port: int, source: str, target: str, queue_url: str | None) -> dict:
    cfg = config_dict(ledger=str(ledger), listen=f"127.0.0.1:{port}", source=source, target=target,
                      queue_url=queue_url)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


class Ledger:
    """Read-only view of the ledger the child writes (WAL mode lets us read while it writes)."""

    def __init__(self, path: Path):
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _q(self, sql: str, args=()) -> list[tuple]:
        if self._conn is None:
            if not self.path.exists():
                raise sqlite3.OperationalError("no ledger yet")
            self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5, check_same_thread=False)
        return self._conn.execute(sql, args).fetchall()

    def counts(self) -> dict[str, int]:
        try:
            return dict(self._q("SELECT status, count(*) FROM replications GROUP BY status"))
        except sqlite3.OperationalError:  # not created yet, or the schema is being migrated
            return {}

    def timings(self) -> dict:
        """First claim, last completion (epoch) and the completed rows' count."""
        (first_start, last_done, n), = self._q(
            "SELECT min(started_at), max(completed_at), count(*) FROM replications WHERE status = 'completed'")
        return {"first_started": first_start, "last_completed": last_done, "completed": n}

    def completed(self) -> list[tuple[str, float, float]]:
        """(key, source_time, completed_at) of every completed replication."""
        return self._q("SELECT r.key, v.source_time, r.completed_at FROM replications r "
                       "JOIN versions v ON v.id = r.version_pk WHERE r.status = 'completed'")

    def stages(self) -> list[tuple[float, float, float, float, int]]:
        """(source_time, seen_at, started_at, completed_at, attempts) of every completed replication."""
        return self._q("SELECT v.source_time, v.seen_at, r.started_at, r.completed_at, r.attempts FROM replications r "
                       "JOIN versions v ON v.id = r.version_pk WHERE r.status = 'completed' ORDER BY v.source_time")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def viewer_key(config_path: Path) -> str:
    """Create the ledger of a config and a viewer API key in it (for /metrics); returns the token."""
    from cloudmirror.config import load_config
    from cloudmirror.ledger.db import upgrade
    from cloudmirror.ledger.repo import Ledger as LedgerDB
    from cloudmirror.services import access

    url = load_config(config_path).ledger
    upgrade(url)
    ledger = LedgerDB(url, pool_size=0)
    try:
        return access.create_key(ledger, "bench", "viewer")[0]
    finally:
        ledger.close()


class CloudmirrorProcess:
    """`cloudmirror run -c CFG` as a child, with its API on a free port."""

    def __init__(self, workdir: Path, *, source: str, target: str, queue_url: str | None, env: dict[str, str],
                 tag: str, before_start: Callable[["CloudmirrorProcess"], None] | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.ledger = Ledger(workdir / f"{tag}.db")
        if self.ledger.path.exists():
            raise BenchError(f"{self.ledger.path} exists: every cloudmirror run needs a fresh ledger (unique tag)")
        self.config_path = workdir / f"{tag}.yaml"
        self.config = write_config(self.config_path, ledger=self.ledger.path, port=self.port, source=source,
                                   target=target, queue_url=queue_url)
        self.env = env
        self.token = viewer_key(self.config_path)
        if before_start:
            before_start(self)
        argv = [cloudmirror_bin(), "run", "-c", str(self.config_path)]
        self.command = f"cloudmirror run -c {self.config_path.name}"
        self.child = Child(f"cloudmirror ({tag})", argv, workdir / f"{tag}.log", env=env)

    @property
    def pid(self) -> int:
        return self.child.pid

    def cpu(self) -> float:
        return self.child.cpu()

    def wait_ready(self, timeout: float = 60) -> None:
        poll(lambda: http_get(f"http://127.0.0.1:{self.port}/healthz", timeout=1), timeout=timeout,
             what="cloudmirror /healthz", alive=[self.child])

    def wait_done(self, expected: int, timeout: float) -> dict[str, int]:
        """Poll the ledger until `expected` replications are finished (any final status)."""
        def done():
            c = self.ledger.counts()
            finished = sum(v for k, v in c.items() if k not in ("pending", "in_progress"))
            return c if finished >= expected else None
        return poll(done, timeout=timeout, interval=0.02, what=f"{expected} replications in the ledger",
                    alive=[self.child])

    def metrics(self) -> str:
        text = http_get(f"http://127.0.0.1:{self.port}/metrics", timeout=10, token=self.token)
        if text is None:
            raise BenchError("could not scrape cloudmirror /metrics")
        return text

    def stop(self, timeout: float = 60):
        """SIGTERM (stops intake, drains workers); returns the child's Rusage (wall, cpu)."""
        try:
            return self.child.stop(timeout)
        finally:
            self.ledger.close()


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text exposition -> (name, labels, value) samples."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            out.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out


def counter_by(samples, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for n, labels, v in samples:
        if n == name:
            out[labels.get(label, "")] = out.get(labels.get(label, ""), 0.0) + v
    return out


def histogram_share_under(samples, name: str, le: float) -> float | None:
    """Share of observations <= `le` (a bucket boundary) in a histogram, summed over labels."""
    below = total = 0.0
    for n, labels, v in samples:
        if n == f"{name}_bucket":
            if labels.get("le") == "+Inf":
                total += v
            elif float(labels.get("le", "nan")) == le:
                below += v
    return below / total if total else None
