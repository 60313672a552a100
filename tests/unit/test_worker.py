"""The worker's decisions per job, on memory stores and a real SQLite ledger: copy, skip
replicas, no-op when the target already holds the version, deletes only of our replicas,
retries with backoff, then `failed`."""

from __future__ import annotations

import pytest

from cloudmirror.ledger.repo import NewVersion, TargetPlan
from cloudmirror.replication.worker import backoff
from cloudmirror.stores.base import REPLICA_MARKER, PutOptions, RetryableError
from cloudmirror.stores.memory import inject_fault
from tests.unit.memory_env import DST, SRC, drain, memory_worker_env


@pytest.fixture
def env(sqlite_url):
    with memory_worker_env(sqlite_url) as e:
        yield e


def record(ledger, key, op="put", token="1", t=1.0, etag=None):
    ledger.record([NewVersion(mirror="m", key=key, token=token, op=op, source_time=t, etag=etag,
                              targets=[TargetPlan(DST)])])


def row(ledger, key):
    [r] = [x for x in ledger.replications_for("m", key) if x["status"] not in ("superseded",)][-1:]
    return r


async def test_copy_carries_the_marker_and_a_second_run_is_a_no_op(env):
    cfg, ledger, endpoint = env
    src, dst = endpoint(SRC).store, endpoint(DST).store
    await src.put("k", b"hello", PutOptions(metadata={"a": "1"}, tags={"t": "x"}, content_type="text/plain"))
    record(ledger, "k")
    await drain(cfg, ledger, endpoint)
    got = await dst.head("k")
    assert got.metadata["a"] == "1" and got.metadata[REPLICA_MARKER] == "m" and got.content_type == "text/plain"
    assert (await dst.get_tags("k")) == {"t": "x"}
    assert row(ledger, "k")["status"] == "completed" and row(ledger, "k")["detail"] is None
    record(ledger, "k", token="2", t=2.0)  # e.g. the same write announced again by reconciliation
    await drain(cfg, ledger, endpoint)
    assert row(ledger, "k")["detail"] == "the target already holds this version"


async def test_replicas_are_never_copied_and_missing_sources_are_superseded(env):
    cfg, ledger, endpoint = env
    await endpoint(SRC).store.put("echo", b"x", PutOptions(metadata={REPLICA_MARKER: "other"}))
    record(ledger, "echo")
    record(ledger, "gone")
    await drain(cfg, ledger, endpoint)
    assert row(ledger, "echo")["status"] == "skipped" and "loop prevention" in row(ledger, "echo")["detail"]
    rows = ledger.replications_for("m", "gone")
    assert rows[0]["status"] == "superseded" and "no longer has the key" in rows[0]["detail"]


async def test_the_source_moved_on_copies_the_current_state(env):
    cfg, ledger, endpoint = env
    await endpoint(SRC).store.put("k", b"newest")
    record(ledger, "k", etag="etag-of-an-older-write")
    await drain(cfg, ledger, endpoint)
    assert (await endpoint(DST).store.head("k")).size == len(b"newest")
    assert row(ledger, "k")["detail"].startswith("source had moved on")


async def test_deletes_remove_only_replicas(env):
    cfg, ledger, endpoint = env
    dst = endpoint(DST).store
    await dst.put("ours", b"x", PutOptions(metadata={REPLICA_MARKER: "m"}))
    await dst.put("theirs", b"y")
    await endpoint(SRC).store.put("back", b"z")
    for k in ("ours", "theirs", "back", "never-there"):
        record(ledger, k, op="delete")
    await drain(cfg, ledger, endpoint)
    assert [m.key async for m in dst.list()] == ["theirs"]
    assert row(ledger, "theirs")["status"] == "skipped"
    assert ledger.replications_for("m", "back")[0]["status"] == "superseded"  # the source has it again
    assert row(ledger, "never-there")["detail"] == "already absent on the target"


async def test_retryable_errors_back_off_then_fail_with_the_reason(env):
    cfg, ledger, endpoint = env
    await endpoint(SRC).store.put("flaky", b"x")
    await endpoint(SRC).store.put("doomed", b"x")
    inject_fault("dst", "copy", RetryableError("SlowDown: please reduce your request rate"), times=1)
    record(ledger, "flaky")
    await drain(cfg, ledger, endpoint)
    assert row(ledger, "flaky")["status"] == "completed" and row(ledger, "flaky")["attempts"] == 2
    inject_fault("dst", "copy", RetryableError("InternalError: we are sorry"), times=5)
    record(ledger, "doomed")
    await drain(cfg, ledger, endpoint)
    r = row(ledger, "doomed")
    assert (r["status"], r["attempts"]) == ("failed", 3)
    assert r["last_error"] == "after 3 attempts: InternalError: we are sorry"


def test_backoff_grows_with_jitter_and_a_cap():
    for attempt, (lo, hi) in {1: (0.5, 1.0), 2: (1.0, 2.0), 3: (2.0, 4.0), 10: (5.0, 10.0)}.items():
        values = [backoff(attempt, 1.0, 10.0) for _ in range(200)]
        assert lo <= min(values) and max(values) <= hi and len(set(values)) > 1
