"""Event metadata is untrusted input (issue 12): a future-dated event or a forged sequencer
must never make the ledger discard a write the source still holds as its newest. On memory
stores and a real ledger (SQLite and PostgreSQL): the worker copies whatever the source
holds, so the target converges on the newest real write and the backlog says so until then."""

from __future__ import annotations

import time

import pytest

from cloudmirror.ledger.repo import ORDERING_FEED, NewVersion, TargetPlan
from tests.unit.memory_env import DST, SRC, drain, memory_worker_env

YEAR_2999 = 32472144000.0  # 2999-01-01T00:00:00Z
HUGE_SEQUENCER = "F" * 32


@pytest.fixture
def env(ledger_url):
    with memory_worker_env(ledger_url) as e:
        yield e


def event(token: str, etag: str | None, *, t: float | None = None, seq: str | None = None, op: str = "put",
          origin: str = "event") -> NewVersion:
    return NewVersion(mirror="m", key="k", token=token, op=op, source_time=time.time() if t is None else t,
                      etag=etag, sequencer=seq, targets=[TargetPlan(DST)], origin=origin)


async def write(endpoint, body: bytes) -> str:
    return (await endpoint(SRC).store.put("k", body)).etag


@pytest.mark.parametrize("bogus", ["future event time", "forged sequencer"])
async def test_a_bogus_event_never_hides_later_real_writes(env, bogus):
    cfg, ledger, endpoint = env
    e1 = await write(endpoint, b"first")
    ledger.record([event("w1", e1, seq="0001")])
    await drain(cfg, ledger, endpoint)
    # a valid-looking event for k, with the real etag, claiming to be far newer than anything
    if bogus == "future event time":
        ledger.record([event("bogus", e1, t=YEAR_2999, seq=HUGE_SEQUENCER)])
    else:
        ledger.record([event("bogus", e1, seq=HUGE_SEQUENCER)])
    await drain(cfg, ledger, endpoint)
    for n, body in enumerate((b"second", b"third!"), start=2):
        etag = await write(endpoint, body)
        ledger.record([event(f"w{n}", etag, seq=f"000{n}")])
        # the real write is not written off: it waits for a copy, and status says so
        [st] = ledger.status(now=time.time() + 5)
        assert st["pending"] == 1 and st["rpo_seconds"] >= 4, st
        assert ledger.backlog() == 1
        await drain(cfg, ledger, endpoint)
        assert (await endpoint(DST).store.head("k")).size == len(body), (bogus, n)
    rows = ledger.replications_for("m", "k")
    assert [r["status"] for r in rows] == ["completed"] * 4, rows


async def test_a_future_event_time_is_not_used_for_ordering(ledger):
    now = 1_000_000.0
    ledger.record([event("w1", "e1", t=now - 10, seq="0001")], now=now)
    out = ledger.record([event("bogus", "e1", t=now + 3600 * 24 * 365, seq=HUGE_SEQUENCER)], now=now)
    assert out.untrusted == 1 and out.stale == 0
    again = ledger.record([event("bogus", "e1", t=now + 3600 * 24 * 365, seq=HUGE_SEQUENCER)], now=now)
    assert (again.duplicate, again.untrusted) == (1, 0)  # a redelivery is a duplicate, flagged once
    rows = {r["version_pk"]: r for r in ledger.replications_for("m", "k")}
    bogus = rows[max(rows)]
    # recorded with its reason, pending (the source decides), its time clamped for the RPO
    assert bogus["status"] == "pending" and "ahead of the clock" in bogus["detail"]
    assert bogus["source_time"] == now
    # and shown to an operator as a dead letter with the reason (nothing to re-drive)
    [dl] = ledger.dead_letters()
    assert dl["feed"] == ORDERING_FEED and dl["reason"].startswith(f"m/k (version #{bogus['version_pk']}, recorded)")
    assert "1971-01-12T13:46:40+00:00 is ahead of the clock" in dl["reason"] and HUGE_SEQUENCER in dl["body"]
    [st] = ledger.status(now=now + 5)
    assert st["rpo_seconds"] == pytest.approx(10 + 5)
    # the next real write is ordered against the real head, not the bogus one: it supersedes
    # both pending copies (its own copy takes the source's current state)
    out = ledger.record([event("w2", "e2", t=now, seq="0002")], now=now)
    assert out.stale == 0
    assert [r["status"] for r in ledger.replications_for("m", "k")] == ["superseded", "superseded", "pending"]


async def test_an_older_event_is_written_off_only_while_a_newer_copy_is_still_to_run(ledger):
    ledger.record([event("v1", "e1", seq="0001")])
    ledger.record([event("v3", "e3", seq="0003")])
    out = ledger.record([event("v2", "e2", seq="0002")])  # late, and v3's copy has not started
    assert out.stale == 1
    assert [r["status"] for r in ledger.replications_for("m", "k")] == ["superseded", "pending", "superseded"]
    [job] = ledger.claim("m", DST, "w", 10, lease=30)
    assert ledger.complete(job.id, "w", copied_etag="e3")
    # v3's copy ran: a late event may name a write v3's copy never saw (v3 may be bogus); the
    # source decides, so it waits for a copy (a no-op when the target already holds the source)
    ledger.record([event("v2b", "e2b", seq="0002")])
    assert ledger.replications_for("m", "k")[-1]["status"] == "pending"
    assert "the source decides" in ledger.replications_for("m", "k")[-1]["detail"]


async def test_a_delete_never_writes_off_a_pending_put_nor_the_reverse(ledger):
    ledger.record([event("p1", "e1", seq="0001")])
    ledger.record([event("d1", None, seq="FFFF", op="delete")])  # e.g. a forged delete
    ledger.record([event("p2", "e2", seq="0002")])  # judged older, but no pending put covers it
    assert [(r["op"], r["status"]) for r in ledger.replications_for("m", "k")] == [
        ("put", "pending"), ("delete", "pending"), ("put", "superseded")]


async def test_a_reclaimed_copy_is_written_off_only_by_a_pending_copy_of_its_operation(ledger):
    ledger.record([event("p1", "e1", t=100.0, seq="0001")], now=100.0)
    [job] = ledger.claim("m", DST, "w", 10, lease=30, now=100.0)  # then the worker dies
    ledger.record([event("d1", None, t=100.0, seq="FFFF", op="delete")], now=100.0)  # e.g. a forged delete
    assert ledger.reclaim_expired(now=200.0) == 1
    # the put's copy comes back: the pending delete's copy would never copy what the source holds
    assert [(r["op"], r["status"]) for r in ledger.replications_for("m", "k")] == [("put", "pending"),
                                                                                  ("delete", "pending")]
    [job] = ledger.claim("m", DST, "w", 1, lease=30, now=200.0)
    assert job.op == "delete" and ledger.complete(job.id, "w")
    [job] = ledger.claim("m", DST, "w", 1, lease=30, now=200.0)  # the put again; its worker dies too
    ledger.record([event("p2", "e2", t=250.0, seq="0002")], now=250.0)  # older than d1, nothing pending covers it
    assert ledger.replications_for("m", "k")[-1]["status"] == "pending"
    assert ledger.reclaim_expired(now=400.0) == 1
    # a pending put recorded after the reclaimed one takes the source's current state: it wins
    assert [(r["op"], r["status"]) for r in ledger.replications_for("m", "k")] == [
        ("put", "superseded"), ("delete", "completed"), ("put", "pending")]


async def test_a_write_written_off_for_a_pending_copy_arrives_with_that_copy(env):
    cfg, ledger, endpoint = env
    ledger.record([event("w1", await write(endpoint, b"first"), seq="0001")])
    ledger.record([event("bogus", None, seq=HUGE_SEQUENCER)])
    await drain(cfg, ledger, endpoint)
    ledger.record([event("w2", await write(endpoint, b"second"), seq="0002")])  # pending: the source decides
    ledger.record([event("w3", await write(endpoint, b"third!!"), seq="0003")])  # covered by w2's pending copy
    assert [r["status"] for r in ledger.replications_for("m", "k")][-2:] == ["pending", "superseded"]
    await drain(cfg, ledger, endpoint)
    assert (await endpoint(DST).store.head("k")).size == len(b"third!!")
    w2 = ledger.replications_for("m", "k")[-2]
    assert w2["status"] == "completed" and w2["copied_etag"] == (await endpoint(SRC).store.head("k")).etag
