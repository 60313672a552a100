"""The ledger on SQLite and PostgreSQL: dedup, ordering, supersede, claims, leases, schema."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from cloudmirror.ledger.models import metadata
from cloudmirror.ledger.repo import DeadLetter, Ledger, NewVersion, TargetPlan, is_newer

T1, T2 = "s3://t1", "s3://t2"


def nv(key="k", token="a", t=1.0, seq=None, op="put", targets=(T1, T2), **kw):
    return NewVersion(mirror="m", key=key, token=token, op=op, source_time=t, sequencer=seq,
                      targets=[TargetPlan(x) for x in targets], **kw)


def statuses(led: Ledger, key="k"):
    return [(r["version_pk"], r["target"], r["status"]) for r in led.replications_for("m", key)]


def test_alembic_head_equals_models(ledger):
    with ledger.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_sequencer_comparison_left_pads():
    assert is_newer("0A", None, "9", None)
    assert not is_newer("009", None, "0A", None)
    assert is_newer(None, 2.0, None, 1.0)
    assert not is_newer("AB", 1.0, "AC", 5.0)  # sequencer wins over time
    assert is_newer("AB", 2.0, "AB", 1.0)  # constant sequencer (LocalStack) -> time decides


def test_duplicates_are_recorded_once(ledger):
    out = ledger.record([nv(), nv(), nv()])
    assert (out.new, out.duplicate) == (1, 2)
    assert ledger.count(status="pending") == 2
    assert ledger.replications_for("m", "k")[0]["duplicates"] == 2


def test_newer_version_supersedes_pending_and_older_is_stale(ledger):
    ledger.record([nv(token="v1", t=1.0)])
    ledger.record([nv(token="v3", t=3.0)])
    out = ledger.record([nv(token="v2", t=2.0)])  # arrives late
    assert out.stale == 1
    rows = ledger.replications_for("m", "k")
    by_token = {}
    for r in rows:
        by_token.setdefault(r["version_pk"], set()).add(r["status"])
    assert list(by_token.values()) == [{"superseded"}, {"pending"}, {"superseded"}]


def test_claim_keeps_one_key_in_flight_and_leases_expire(ledger):
    ledger.record([nv(key="a", token="1"), nv(key="b", token="1")], now=100.0)
    jobs = ledger.claim("m", T1, "w1", 10, lease=30, now=100.0)
    assert sorted(j.key for j in jobs) == ["a", "b"]
    assert ledger.claim("m", T1, "w2", 10, lease=30, now=100.0) == []
    # a new version of 'a' while 'a' is in flight waits for it
    ledger.record([nv(key="a", token="2", t=2.0)], now=100.0)
    assert ledger.claim("m", T1, "w2", 10, lease=30, now=100.0) == []
    # the leases expire (worker died): 'a' v1 is superseded by v2, which is claimed with 'b'
    assert ledger.reclaim_expired(now=200.0) == 2
    got = ledger.claim("m", T1, "w2", 10, lease=30, now=200.0)
    assert sorted((j.key, j.attempts) for j in got) == [("a", 1), ("b", 2)]
    assert ledger.complete(got[0].id, "w2", copied_etag="e")
    assert not ledger.complete(got[0].id, "w2")  # already finished


def test_concurrent_claims_never_hand_out_a_job_twice(ledger):
    ledger.record([nv(key=f"k{i}", token="1", targets=(T1,)) for i in range(200)])
    seen: list[int] = []
    lock = threading.Lock()

    def worker(name):
        while True:
            jobs = ledger.claim("m", T1, name, 7, lease=30)
            if not jobs:
                return
            with lock:
                seen.extend(j.id for j in jobs)
            for j in jobs:
                assert ledger.complete(j.id, name, copied_etag="x")

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 200 and len(set(seen)) == 200
    assert ledger.count(status="completed") == 200


def test_dead_letters_and_status(ledger):
    ledger.record([nv(t=50.0)], [DeadLetter(feed="q", body="{oops", reason="not JSON")], now=60.0)
    assert ledger.dead_letters()[0]["reason"] == "not JSON"
    st = {r["target"]: r for r in ledger.status(now=100.0)}
    expected = {"pending": 1, "rpo_seconds": 50.0}  # computed at a fixed `now`: not a timing
    assert {k: st[T1][k] for k in expected} == expected


def test_retry_and_fail(ledger):
    ledger.record([nv(targets=(T1,))], now=10.0)
    [job] = ledger.claim("m", T1, "w", 1, lease=30, now=10.0)
    assert ledger.retry_later(job.id, "w", "boom", at=20.0)
    assert ledger.claim("m", T1, "w", 1, lease=30, now=15.0) == []
    [job] = ledger.claim("m", T1, "w", 1, lease=30, now=21.0)
    assert job.attempts == 2
    assert ledger.fail(job.id, "w", "NoSuchBucket")
    assert ledger.count(status="failed") == 1


def test_a_keeper_never_takes_back_the_jobs_it_holds(ledger):
    """A keeper's reclaim that queued behind another writer for longer than a lease finds
    its own, just renewed, jobs expired: it spares the ones it holds and renews itself, and
    takes back only the others (a dead worker's)."""
    ledger.record([nv(key="mine", token="1"), nv(key="dead", token="1")], now=100.0)
    [mine] = ledger.claim("m", T1, "w1", 1, lease=30, now=100.0)
    [dead] = ledger.claim("m", T1, "w0", 1, lease=30, now=100.0)
    assert ledger.reclaim_expired(now=200.0, spare={mine.id}) == 1
    assert ledger.renew_leases("w1", {mine.id: mine.token}, 30) == {mine.id}  # still ours
    assert [j.key for j in ledger.claim("m", T1, "w2", 10, lease=30, now=200.0)] == [dead.key]
