"""Reconciliation: dry runs change nothing, targets changed behind cloudmirror's back are
repaired by policy, and a scheduled reconcile repairs exactly the writes whose events were
lost and counts them as missed."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from cloudmirror.ledger.models import reconcile_runs, replications, versions
from tests.integration.harness import Cloud, config, converged, drained, eventually, mirror, name, running


def ledger_rows(ledger) -> tuple[int, int, int]:
    with ledger.reader.connect() as conn:
        return tuple(conn.execute(select(func.count()).select_from(t)).scalar() for t in (versions, replications,
                                                                                       reconcile_runs))


def listing(s3, bucket: str) -> dict[str, str]:
    return {o["Key"]: o["ETag"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in p.get("Contents", [])}


@pytest.fixture
def cloud(moto_endpoint) -> Cloud:
    return Cloud(moto_endpoint)


async def test_dry_run_changes_nothing_and_reports_the_diff(cloud, ledger_url):
    src, dst = cloud.bucket(), cloud.bucket("eu-west-1")
    s3, t3 = cloud.s3(), cloud.s3("eu-west-1")
    for i in range(30):
        s3.put_object(Bucket=src, Key=f"k/{i:02}", Body=f"body {i}".encode())
    for i in range(10):  # 10 in sync, 5 stale, 15 missing, 2 extra
        t3.put_object(Bucket=dst, Key=f"k/{i:02}", Body=f"body {i}".encode())
    for i in range(10, 15):
        t3.put_object(Bucket=dst, Key=f"k/{i:02}", Body=b"old and different")
    t3.put_object(Bucket=dst, Key="k/zz-extra", Body=b"x")
    t3.put_object(Bucket=dst, Key="extra-top", Body=b"y")
    cfg = config(ledger_url, [mirror("m", cloud, src, [dst], None)])
    async with running(cfg, intake=False, workers=False) as r:
        before = (listing(t3, dst), ledger_rows(r.ledger))
        [p] = await r.service.reconcile("m", dry_run=True)
        assert (p.kind, p.listed, p.missing, p.stale, p.extra, p.recorded) == ("dry-run", 30, 15, 5, 2, 0)
        assert (listing(t3, dst), ledger_rows(r.ledger)) == before


@pytest.mark.parametrize("deletes", ["replicate", "replicate_all", "ignore"])
async def test_target_changed_behind_our_back_is_repaired(deletes, cloud, sqlite_url):
    src, dst = cloud.bucket(), cloud.bucket("eu-west-1")
    s3, t3 = cloud.s3(), cloud.s3("eu-west-1")
    q = cloud.queue_for(src)
    cfg = config(sqlite_url, [mirror("m", cloud, src, [dst], q, deletes=deletes)])
    async with running(cfg) as r:
        for i in range(20):
            s3.put_object(Bucket=src, Key=f"obj-{i:02}", Body=f"v{i}".encode(), Metadata={"n": str(i)})
        await eventually(converged(cloud, src, dst), timeout=60)
        t3.put_object(Bucket=dst, Key="obj-03", Body=b"tampered")  # overwritten
        t3.delete_object(Bucket=dst, Key="obj-07")  # deleted
        t3.put_object(Bucket=dst, Key="intruder", Body=b"added")  # extra
        [p] = await r.service.reconcile("m")
        assert (p.kind, p.missing, p.stale, p.extra) == ("backfill", 1, 1, 1)
        await eventually(drained(r.ledger), timeout=30)
        if deletes == "replicate_all":  # 1 delete: within max_deletes (10 % of 20)
            assert (p.deletes, p.foreign, p.deletes_refused) == (1, 0, False)
            await eventually(converged(cloud, src, dst), timeout=30)
        else:  # the extra object is reported, never deleted (replicate: cloudmirror did not write it)
            assert p.extra_kept == 1 and p.foreign == (deletes == "replicate") and p.deletes == 0
            assert "intruder" in listing(t3, dst)
            t3.delete_object(Bucket=dst, Key="intruder")
            await eventually(converged(cloud, src, dst), timeout=30)


async def test_a_mirror_pointed_at_a_non_empty_target_wipes_nothing(cloud, sqlite_url):
    """Acceptance (issue 11): a target holding objects cloudmirror did not write. deletes:
    replicate deletes none of them (and copies the source); replicate_all above max_deletes
    stops before deleting, reports the count and a sample, and deletes only with force."""
    src, dst = cloud.bucket(), cloud.bucket("eu-west-1")
    s3, t3 = cloud.s3(), cloud.s3("eu-west-1")
    for i in range(40):
        t3.put_object(Bucket=dst, Key=f"prod/{i:03}", Body=f"production data {i}".encode())
    for i in range(5):
        s3.put_object(Bucket=src, Key=f"src/{i}", Body=f"source {i}".encode())
    existing = listing(t3, dst)
    cfg = config(sqlite_url, [mirror("m", cloud, src, [dst], None, reconcile_grace=0)])
    async with running(cfg, intake=False) as r:
        [p] = await r.service.reconcile("m")
        assert (p.missing, p.extra, p.foreign, p.deletes, p.deletes_refused) == (5, 40, 40, 0, False)
        await eventually(drained(r.ledger), timeout=30)
        after = listing(t3, dst)
        assert {k: after[k] for k in existing} == existing  # every object that was there, unchanged
        assert set(after) - set(existing) == {f"src/{i}" for i in range(5)}

    cfg = config(sqlite_url, [mirror("m", cloud, src, [dst], None, reconcile_grace=0, deletes="replicate_all")])
    async with running(cfg, intake=False) as r:
        [dry] = await r.service.reconcile("m", dry_run=True)
        [p] = await r.service.reconcile("m")
        for q in (dry, p):  # 10 % of the 45 objects listed on the target, rounded up
            assert (q.extra, q.deletes, q.delete_limit, q.deletes_refused) == (40, 40, 5, True)
            assert q.delete_sample == [f"prod/{i:03}" for i in range(20)]
        await eventually(drained(r.ledger), timeout=30)
        assert set(existing) <= set(listing(t3, dst))  # nothing deleted
        [forced] = await r.service.reconcile("m", force=True)
        assert (forced.deletes, forced.deletes_refused) == (40, False)
        await eventually(converged(cloud, src, dst), timeout=60)


class ShiftedClock:
    """The reconciler's view of the wall clock (its module's `time`), moved forward on demand:
    stands in for waiting out a long `reconcile_grace`."""

    def __init__(self) -> None:
        self.shift = 0.0

    def time(self) -> float:
        return time.time() + self.shift

    def __getattr__(self, name: str):
        return getattr(time, name)


async def test_scheduled_reconcile_repairs_exactly_the_lost_events_and_counts_them(cloud, sqlite_url, monkeypatch):
    from cloudmirror.replication import reconcile as reconcile_module

    clock = ShiftedClock()
    monkeypatch.setattr(reconcile_module, "time", clock)
    src, dst = cloud.bucket(), cloud.bucket("eu-west-1")
    s3 = cloud.s3()
    url, arn = _queue(cloud)
    # notifications only for "kept/": writes under "lost/" have their events dropped (10 %)
    s3.put_bucket_notification_configuration(Bucket=src, NotificationConfiguration={"QueueConfigurations": [
        {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
         "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "kept/"}]}}}]})
    grace = 60.0  # events may be late by tens of seconds on a loaded machine
    cfg = config(sqlite_url, [mirror("m", cloud, src, [dst], url, reconcile_every="1s", backfill=True,
                                 reconcile_grace=f"{grace:.0f}s")])
    async with running(cfg) as r:
        from cloudmirror.ledger.runs import Runs

        runs = Runs(r.ledger)
        await eventually(lambda: runs.has_finished("m", cfg.mirrors[0].targets[0].name), timeout=30,
                         message="the first (backfill) run did not finish")
        for i in range(45):
            s3.put_object(Bucket=src, Key=f"kept/{i:02}", Body=b"k")
        for i in range(5):
            s3.put_object(Bucket=src, Key=f"lost/{i}", Body=b"l")
        # every event that was sent has been recorded (and, within the grace, nothing was
        # reconciled): then, instead of waiting out the grace, the reconciler's clock moves past it
        await eventually(lambda: r.ledger.count(mirror="m") == 45, timeout=90, message="the 45 events recorded")
        clock.shift = grace + 1
        await eventually(converged(cloud, src, dst), timeout=120)
        await eventually(drained(r.ledger), timeout=30)
        missed = Runs(r.ledger).missed_events()
        assert missed == {("m", cfg.mirrors[0].targets[0].name): 5}
        with r.ledger.reader.connect() as conn:
            listed = sorted(k for (k,) in conn.execute(select(versions.c.key).where(versions.c.origin == "reconcile")))
        assert listed == [f"lost/{i}" for i in range(5)]
        from cloudmirror.services.status import status

        assert status(cfg, r.ledger)[0]["missed_events"] == 5


def _queue(cloud: Cloud) -> tuple[str, str]:
    from cloudmirror.local.provision import create_sqs_queue

    return create_sqs_queue(cloud.endpoint, "us-east-1", name("q"))


async def test_consistency_group_recovery_point_is_the_lagging_mirrors_oldest_pending_write(cloud, sqlite_url):
    """Two mirrors in one group; one is paused (lagging): the group's recovery point is the
    source time of that mirror's oldest pending write."""
    import time

    from cloudmirror.config import validate_config
    from cloudmirror.services.status import group_status, status
    from tests.integration.harness import FAST_WORKERS

    a_src, a_dst, b_src, b_dst = cloud.bucket(), cloud.bucket("eu-west-1"), cloud.bucket(), cloud.bucket("eu-west-1")
    qa, qb = cloud.queue_for(a_src), cloud.queue_for(b_src)
    cfg = validate_config({"ledger": sqlite_url, "workers": FAST_WORKERS,
                           "mirrors": [mirror("a", cloud, a_src, [a_dst], qa, rpo_objective="1h"),
                                       mirror("b", cloud, b_src, [b_dst], qb, rpo_objective="10m", paused=True)],
                           "groups": [{"name": "billing-dr", "mirrors": ["a", "b"]}]})
    s3 = cloud.s3()
    async with running(cfg) as r:
        s3.put_object(Bucket=b_src, Key="first", Body=b"1")
        await eventually(lambda: r.ledger.backlog("b") == 1, timeout=30, message="b's write not recorded")
        [first] = r.ledger.replications_for("b", "first")
        s3.put_object(Bucket=b_src, Key="second", Body=b"2")
        for i in range(5):
            s3.put_object(Bucket=a_src, Key=f"a{i}", Body=b"a")
        await eventually(converged(cloud, a_src, a_dst), timeout=60)
        await eventually(lambda: r.ledger.backlog("a") == 0 and r.ledger.backlog("b") == 2, timeout=30)
        now = time.time()
        [g] = group_status(cfg, status(cfg, r.ledger), now=now)
        assert g["group"] == "billing-dr" and g["lagging"].startswith("b -> ")
        assert g["recovery_point"] == pytest.approx(first["source_time"], abs=1e-3)
        assert g["rpo_seconds"] > 0 and not g["lagging"].startswith("a ")
        assert g["pending"] == 2 and g["rpo_objective"] == 600.0
