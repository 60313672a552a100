"""One SQLite ledger file shared, as in `cloudmirror run` beside a CLI command, by threads
and processes that record versions, claim and complete replications, read the RPO, and
connect (and upgrade) anew over and over, while a CPU hog loads the machine: no "database
is locked" from connect, begin or commit, and every row is accounted for.

SQLite files in tmp_path only; no emulator."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import closing

import pytest

from cloudmirror.ledger import db
from cloudmirror.ledger.repo import Ledger, NewVersion, TargetPlan

T = "s3://target"
PROCESSES, THREADS, ROUNDS, BATCH = 3, 3, 12, 8

pytestmark = pytest.mark.timeout(120)


def hammer(url: str, name: str, rounds: int = ROUNDS) -> dict:
    """What one role does to the ledger: record a batch, claim and complete what is due,
    read status and RPO figures; every third round it connects anew after an `upgrade`,
    as a CLI command does. Returns how many versions it recorded and jobs it completed."""
    from cloudmirror.ledger import rpo

    led = Ledger(url)
    recorded = completed = 0
    try:
        for r in range(rounds):
            if r % 3 == 2:
                led.close()
                db.upgrade(url)
                led = Ledger(url)
            now = time.time()
            out = led.record([NewVersion(mirror="m", key=f"{name}/{r}/{i}", token="v1", op="put", source_time=now,
                                         targets=[TargetPlan(T)]) for i in range(BATCH)])
            assert out.new == BATCH
            recorded += BATCH
            jobs = led.claim("m", T, name, BATCH, lease=600)
            half = len(jobs) // 2  # one at a time and in a batch, as the worker does both
            completed += sum(led.complete(j.id, name, copied_etag="e") for j in jobs[:half])
            completed += led.complete_many(name, [dict(id=j.id, copied_etag="e") for j in jobs[half:]])
            led.status()
            rpo.period_rows(led, ["m"], now - 60, now + 60)
    finally:
        led.close()
    return {"recorded": recorded, "completed": completed}


def connect_only(url: str, rounds: int = 3 * ROUNDS) -> int:
    """A CLI command's footprint, many times: a fresh engine, one read, close."""
    for _ in range(rounds):
        led = Ledger(url)
        led.backlog()
        led.close()
    return rounds


def test_one_sqlite_ledger_under_threads_processes_and_a_cpu_hog(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    db.upgrade(url)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with ProcessPoolExecutor(PROCESSES + 1, mp_context=multiprocessing.get_context("spawn")) as procs, \
                ThreadPoolExecutor(THREADS + 1) as threads:
            futures = [procs.submit(hammer, url, f"p{i}") for i in range(PROCESSES)]
            futures += [threads.submit(hammer, url, f"t{i}") for i in range(THREADS)]
            connects = [procs.submit(connect_only, url), threads.submit(connect_only, url)]
            results = [f.result(timeout=90) for f in futures]  # re-raises any error, e.g. "database is locked"
            assert [c.result(timeout=90) for c in connects] == [3 * ROUNDS] * 2
    finally:
        hog.kill()
        hog.wait()

    total = (PROCESSES + THREADS) * ROUNDS * BATCH
    assert sum(r["recorded"] for r in results) == total
    led = Ledger(url)
    try:
        rest = led.claim("m", T, "drain", total, lease=600)
        assert led.complete_many("drain", [dict(id=j.id) for j in rest]) == len(rest)
        assert sum(r["completed"] for r in results) + len(rest) == total  # every job completed once
        assert led.count(status="completed") == total and led.backlog() == 0
        with led.reader.connect() as conn:
            from sqlalchemy import text

            assert conn.execute(text("select max(attempts) from replications")).scalar() == 1  # none claimed twice
            assert conn.execute(text("pragma journal_mode")).scalar() == "wal"
    finally:
        led.close()


def _open_at_once(url: str, n: int) -> list[str]:
    """n threads open their own Ledger on `url` at the same instant, write and read once.
    Returns the errors."""
    barrier, errors = threading.Barrier(n), []

    def one(i: int) -> None:
        try:
            led = Ledger(url)
            barrier.wait(timeout=30)
            led.record([NewVersion(mirror="m", key=f"k{i}", token="1", op="put", source_time=1.0,
                                   targets=[TargetPlan(T)])])
            led.backlog()
            led.close()
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


def test_many_first_connections_at_once_on_new_and_legacy_files(tmp_path):
    """`db upgrade` leaves a new file in WAL mode, so the first connections of `run` (API,
    intake, workers) never switch it at the same time; a file still in rollback-journal mode
    (from an older release) is switched once, despite the collision SQLite reports at once."""
    template = tmp_path / "template.db"
    db.upgrade(f"sqlite:///{template}")
    with closing(sqlite3.connect(template)) as conn:
        assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"  # set at creation
    with closing(sqlite3.connect(template)) as conn:
        conn.execute("pragma journal_mode=delete")
    for i in range(6):
        fresh = f"sqlite:///{tmp_path / f'new{i}.db'}"
        db.upgrade(fresh)
        assert _open_at_once(fresh, 8) == []
    for i in range(10):
        copy = tmp_path / f"legacy{i}.db"  # never opened by this process before
        shutil.copy(template, copy)
        assert _open_at_once(f"sqlite:///{copy}", 8) == []
        with closing(sqlite3.connect(copy)) as conn:
            assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"


def test_a_legacy_file_is_switched_to_wal_while_another_connection_writes(tmp_path):
    """Switching a rollback-journal file to WAL while another connection holds the write lock
    fails at once ("database is locked", the busy timeout is not consulted): the first
    connection retries until the writer commits instead of failing."""
    template, legacy = tmp_path / "template.db", tmp_path / "legacy.db"
    db.upgrade(f"sqlite:///{template}")
    with closing(sqlite3.connect(template)) as conn:
        conn.execute("pragma journal_mode=delete")
    shutil.copy(template, legacy)
    writer = sqlite3.connect(legacy, isolation_level=None, check_same_thread=False)
    writer.execute("begin immediate")
    writer.execute("insert into dead_letters (feed, body, reason, received_at) values ('q', '{', 'test', 1)")
    commit = threading.Timer(0.3, lambda: writer.execute("commit"))
    commit.start()
    led = Ledger(f"sqlite:///{legacy}")
    try:
        assert [d["feed"] for d in led.dead_letters()] == ["q"]  # waited for the writer, saw its row
    finally:
        led.close()
        commit.join()
        writer.close()
    with closing(sqlite3.connect(legacy)) as conn:
        assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
