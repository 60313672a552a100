"""Worker processes: crash recovery (kill -9) and several workers sharing PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.harness import FAST_WORKERS, Cloud, converged, eventually, snapshot

pytestmark = pytest.mark.timeout(300)


def start_worker(cfg_path: Path, log: Path, *extra: str) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("cloudmirror")
    return subprocess.Popen([str(exe), "worker", "-c", str(cfg_path), *extra], stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, env={**os.environ})


def write_config(path: Path, ledger_url: str, mirrors: list[dict], **workers) -> Path:
    path.write_text(yaml.safe_dump({"ledger": ledger_url, "mirrors": mirrors,
                                    "workers": {**FAST_WORKERS, **workers}}))
    return path


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def test_kill_9_mid_run_then_a_new_worker_converges_everything(moto_endpoint, moto_endpoint_b, sqlite_url,
                                                                     tmp_path):
    from cloudmirror.ledger.repo import Ledger

    a, b = Cloud(moto_endpoint), Cloud(moto_endpoint_b)
    src, dst = a.bucket(), b.bucket("eu-west-1")
    q = a.queue_for(src)
    s3 = a.s3()
    big = os.urandom(11 * 1024 * 1024)
    for i in range(500):
        body = big[i:] if i % 25 == 0 else f"object {i}".encode()  # 20 multipart-sized objects among 500
        s3.put_object(Bucket=src, Key=f"obj-{i:03}", Body=body, Metadata={"n": str(i)})
    # events the killed worker had received but not yet recorded come back after the queue's
    # visibility timeout: the shortest one, not the default minute, so the test waits 5 s for them
    mirror = {"name": "m", "source": a.url(src), "targets": [b.url(dst, "eu-west-1")],
              "events": [{"sqs": q, "region": "us-east-1", "wait_time_s": 1, "visibility_timeout_s": 5}]}
    cfg = write_config(tmp_path / "c.yaml", sqlite_url, [mirror], lease=2, concurrency_per_target=8)
    ledger = Ledger(sqlite_url)
    first = start_worker(cfg, tmp_path / "w1.log")
    try:
        await eventually(lambda: ledger.count(status="completed") >= 150, timeout=120,
                         message="first worker progressed")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        stop(first)
    done_before = ledger.count(status="completed")
    in_flight = ledger.count(status="in_progress")  # the killed worker's copies: the only ones that may run twice
    assert done_before < 500, "the kill came too late to test anything"
    second = start_worker(cfg, tmp_path / "w2.log")
    try:
        await eventually(lambda: ledger.count(status="completed") == 500 and ledger.backlog() == 0, timeout=180,
                         message="all 500 completed after the restart")
    finally:
        stop(second)
    # every object arrived intact: bytes, content headers and metadata
    assert snapshot(a.s3(), src) == snapshot(b.s3("eu-west-1"), dst)
    assert ledger.count(status="failed") == 0
    uploads = b.s3("eu-west-1").list_multipart_uploads(Bucket=dst).get("Uploads", [])
    assert uploads == [], f"incomplete multipart uploads left: {uploads}"
    from sqlalchemy import text

    with ledger.reader.connect() as conn:
        retried = conn.execute(text("select count(*) from replications where attempts > 1")).scalar()
    assert retried <= in_flight <= 8, "only the copies in flight at the kill may run twice"
    ledger.close()


async def test_two_worker_processes_on_postgres_share_the_work_once(moto_endpoint, pg_url, tmp_path):
    from cloudmirror.ledger.repo import Ledger

    cloud = Cloud(moto_endpoint)
    src, dst = cloud.bucket(), cloud.bucket("eu-west-1")
    q = cloud.queue_for(src)
    mirror = {"name": "m", "source": cloud.url(src), "targets": [cloud.url(dst, "eu-west-1")],
              "events": [{"sqs": q, "region": "us-east-1", "wait_time_s": 1}]}
    cfg = write_config(tmp_path / "c.yaml", pg_url, [mirror], concurrency_per_target=8, claim_batch=4)
    ledger = Ledger(pg_url)
    workers = [start_worker(cfg, tmp_path / f"w{i}.log") for i in range(2)]
    try:
        s3 = cloud.s3()
        for i in range(300):
            s3.put_object(Bucket=src, Key=f"k-{i % 60:02}", Body=f"version {i}".encode())  # 5 versions per key
        await eventually(converged(cloud, src, dst), timeout=120, message="target converged")
        await eventually(lambda: ledger.backlog() == 0 and ledger.count() == 300, timeout=60)
    finally:
        for w in workers:
            stop(w)
    rows = [r for k in range(60) for r in ledger.replications_for("m", f"k-{k:02}")]
    assert len(rows) == 300
    assert {r["status"] for r in rows} <= {"completed", "superseded"}
    with ledger.engine.connect() as conn:
        from sqlalchemy import text

        owners = conn.execute(text("select lease_owner, count(*) from replications where status='completed' "
                                   "group by lease_owner")).all()
        attempts = conn.execute(text("select max(attempts) from replications")).scalar()
        overlaps = conn.execute(text(
            "select a.id, a.status, a.started_at, a.completed_at, a.lease_owner, a.detail, "
            "b.id, b.status, b.started_at, b.completed_at, b.lease_owner, b.detail "
            "from replications a join replications b on a.lock = b.lock and a.id < b.id "
            # only completed rows' [started_at, completed_at] are in-flight intervals: a row that
            # went back to pending (e.g. the source changed mid-copy) and was superseded later
            # was merely waiting in between
            "where a.status = 'completed' and b.status = 'completed' "
            "and a.started_at < b.completed_at and b.started_at < a.completed_at")).all()
    assert len(owners) == 2, f"both workers should have copied something: {owners}"
    assert attempts == 1  # no replication was handed out twice
    assert overlaps == [], "per-key order: never two versions of one key in flight at once"
    ledger.close()


async def test_backfill_of_5000_objects_survives_kill_9_half_way(moto_endpoint, sqlite_url, tmp_path):
    """A new mirror on a bucket holding 5,000 objects: the worker is killed at about half
    way; a new one finishes. Every object converges and none was copied twice, apart from
    the copies in flight at the kill."""
    from concurrent.futures import ThreadPoolExecutor

    from cloudmirror.ledger.repo import Ledger
    from cloudmirror.ledger.runs import Runs

    a = Cloud(moto_endpoint)
    src, dst = a.bucket(), a.bucket("eu-west-1")
    s3 = a.s3()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=src, Key=f"k/{i:05}", Body=f"o{i}".encode()), range(5000)))
    mirror = {"name": "m", "source": a.url(src), "targets": [a.url(dst, "eu-west-1")], "events": [],
              "backfill": True}
    concurrency = 8
    cfg = write_config(tmp_path / "c.yaml", sqlite_url, [mirror], lease=2, concurrency_per_target=concurrency)
    ledger = Ledger(sqlite_url)
    first = start_worker(cfg, tmp_path / "w1.log")
    try:
        await eventually(lambda: ledger.count(status="completed") >= 2500, timeout=120, interval=0.02,
                         message="the backfill progressed half way")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        stop(first)
    done_before = ledger.count(status="completed")
    in_flight = ledger.count(status="in_progress")  # the killed worker's copies: the only ones that may run twice
    assert done_before < 5000, "the kill came too late to test anything"
    assert in_flight <= concurrency
    second = start_worker(cfg, tmp_path / "w2.log")
    try:
        await eventually(lambda: ledger.count(status="completed") == 5000 and ledger.backlog() == 0, timeout=180,
                         message="all 5,000 completed after the restart")
    finally:
        stop(second)
    assert {o["Key"] for p in a.s3("eu-west-1").get_paginator("list_objects_v2").paginate(Bucket=dst)
            for o in p.get("Contents", [])} == {f"k/{i:05}" for i in range(5000)}
    runs = Runs(ledger).list("m")
    assert [r["status"] for r in runs] == ["finished"] and runs[0]["kind"] == "backfill"  # resumed, not restarted
    from sqlalchemy import func, select

    from cloudmirror.ledger.models import replications as R

    with ledger.reader.connect() as conn:
        per_key = conn.execute(select(func.count()).select_from(R).where(R.c.status == "completed")
                               .group_by(R.c.key).having(func.count() > 1)).all()
        retried = conn.execute(select(func.count()).select_from(R).where(R.c.attempts > 1)).scalar()
    assert per_key == []  # one completed copy per key
    warnings = [line for log in ("w1.log", "w2.log") for line in (tmp_path / log).read_text().splitlines()
                if "WARNING" in line]
    assert retried <= in_flight, f"only the copies in flight at the kill may run twice; warnings: {warnings[:20]}"
    ledger.close()
