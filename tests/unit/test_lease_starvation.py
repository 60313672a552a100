"""Leases under CPU starvation, on memory stores and a real ledger (SQLite and PostgreSQL).

Worker A is frozen past its lease (its copy and its lease keeper both stand still), the
lease is reclaimed and worker B takes the job; then A wakes up. A must not write to the
target after B took over (no concurrent copy), its late outcome must be refused, and a copy
A had already made must not be made again by B. And a worker whose event loop is starved,
but whose process is not, keeps its leases."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import pytest

from cloudmirror.config import validate_config
from cloudmirror.ledger.repo import Ledger, NewVersion, TargetPlan
from cloudmirror.location import parse_location
from cloudmirror.replication.transfer import Endpoint
from cloudmirror.replication.worker import WorkerPool
from cloudmirror.stores import open_store
from cloudmirror.stores.base import GetResult, PutOptions
from cloudmirror.stores.memory import reset_memory_stores

SRC, DST = "memory://src", "memory://dst"
BODY = b"0123456789abcdef" * 4  # streamed in 16 chunks of 4 bytes
LEASE = 0.4


class Probe:
    """A store as one worker sees it: logs (worker, event, after takeover?) for each write,
    and can freeze the worker at one point (`at`: "get", "mid_stream", "after_put") until
    `hold` is set. No server-side copy: every copy streams through the worker."""

    def __init__(self, inner, name: str, log: list, takeover: asyncio.Event, at: str | None = None):
        self.inner, self.name, self.log, self.takeover, self.at = inner, name, log, takeover, at
        self.location = inner.location
        self.reached, self.hold = asyncio.Event(), asyncio.Event()

    def __getattr__(self, attr):
        if attr in ("copy", "can_copy_from"):
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    async def _freeze(self, where: str) -> None:
        if self.at == where:
            self.reached.set()
            await self.hold.wait()

    def _note(self, event: str) -> None:
        self.log.append((self.name, event, self.takeover.is_set()))

    async def get(self, key, opts=None):
        got = await self.inner.get(key, dataclasses.replace(opts, chunk_size=4))
        await self._freeze("get")

        async def body():
            async for chunk in got.body:
                yield chunk
                await self._freeze("mid_stream")

        return GetResult(meta=got.meta, body=body(), release=got.release)

    async def put(self, key, body, opts=None):
        self._note("put-start")

        async def received():
            async for chunk in body:
                self._note("chunk")
                yield chunk

        try:
            result = await self.inner.put(key, received(), opts)
        except BaseException:
            self._note("put-failed")
            raise
        self._note("put-done")
        await self._freeze("after_put")
        return result


def config(url: str, lease: float):
    return validate_config({"ledger": url, "mirrors": [{"name": "m", "source": SRC, "targets": [DST]}],
                            "workers": {"lease": lease, "poll_interval": 0.01, "concurrency_per_target": 1,
                                        "claim_batch": 1, "max_attempts": 3, "retry_base_delay": 0.01,
                                        "retry_max_delay": 0.02}})


def worker(url: str, name: str, log: list, takeover: asyncio.Event, *, lease: float = LEASE,
           at: str | None = None, src_at: str | None = None) -> tuple[WorkerPool, Probe, Probe, Ledger]:
    ledger = Ledger(url)  # its own engines, as another process would have
    src = Probe(open_store(parse_location(SRC)), name, log, takeover, at=src_at)
    dst = Probe(open_store(parse_location(DST)), name, log, takeover, at=at)
    eps = {SRC: Endpoint(parse_location(SRC), src), DST: Endpoint(parse_location(DST), dst)}
    return WorkerPool(config(url, lease), ledger, eps.__getitem__, owner=name), src, dst, ledger


async def until(check, timeout: float = 15.0, message: str = "condition not met"):
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.01)
    return got


@pytest.fixture
def source(ledger):
    reset_memory_stores()

    async def put():
        await open_store(parse_location(SRC)).put("k", BODY, PutOptions(metadata={"a": "1"}, content_type="text/plain"))
    asyncio.run(put())
    ledger.record([NewVersion(mirror="m", key="k", token="1", op="put", source_time=1.0, targets=[TargetPlan(DST)])])
    yield ledger
    reset_memory_stores()


def only_row(ledger: Ledger) -> dict:
    [row] = ledger.replications_for("m", "k")
    with ledger.reader.connect() as conn:
        from sqlalchemy import text

        owner = conn.execute(text("select lease_owner from replications")).scalar()
    return {**row, "owner": owner}


async def starve_then_take_over(url: str, ledger: Ledger, log: list, *, a_frozen: dict) -> None:
    """A claims the job and freezes at `a_frozen`, its keeper idle (it never renews): the
    lease lapses, is reclaimed, and B runs the job to the end; then A wakes up and ends."""
    takeover = asyncio.Event()
    pool_a, src_a, dst_a, led_a = worker(url, "A", log, takeover, **a_frozen)
    pool_a.keeper.every = 3600  # A's whole process is starved: its lease keeper does not run either
    frozen = src_a if "src_at" in a_frozen else dst_a
    task_a = asyncio.create_task(pool_a.run())
    pool_b = led_b = None
    try:
        await until(frozen.reached.is_set, message="A never reached its freeze point")
        assert only_row(ledger)["status"] == "in_progress"
        await until(lambda: ledger.reclaim_expired() == 1, message="A's lease never lapsed")
        takeover.set()
        pool_b, _, _, led_b = worker(url, "B", log, takeover, lease=30)
        task_b = asyncio.create_task(pool_b.run())
        await until(lambda: only_row(ledger)["status"] == "completed", message="B did not complete the job")
        pool_b.stop()
        await task_b
        frozen.hold.set()  # A wakes up
        await until(lambda: pool_a.processed == 1, message="A did not finish its job")
    finally:
        frozen.hold.set()
        pool_a.stop()
        await task_a
        led_a.close()
        if led_b is not None:
            led_b.close()


@pytest.mark.parametrize("a_frozen", [{"src_at": "get"}, {"src_at": "mid_stream"}], ids=["before-write", "mid-copy"])
async def test_a_worker_starved_past_its_lease_writes_nothing_after_the_takeover(source, ledger_url, a_frozen):
    log: list = []
    await starve_then_take_over(ledger_url, source, log, a_frozen=a_frozen)
    a_after = [e for e in log if e[0] == "A" and e[2]]
    assert ("A", "chunk", True) not in a_after, f"A streamed to the target after B took over: {log}"
    assert ("A", "put-done", True) not in a_after and ("A", "put-done", False) not in log
    if a_frozen["src_at"] == "get":
        assert not [e for e in log if e[0] == "A"], "A started a write after it woke up"
    else:
        assert [e[1] for e in log if e[0] == "A"][-1] == "put-failed"  # A's upload was abandoned, not committed
    assert [e[1] for e in log if e[0] == "B" and e[1] == "put-done"] == ["put-done"]
    row = only_row(source)
    assert (row["status"], row["owner"], row["attempts"]) == ("completed", "B", 2)  # A's late outcome refused
    dst = open_store(parse_location(DST))
    got = await dst.get("k")
    assert b"".join([c async for c in got.body]) == BODY


async def test_a_copy_made_before_the_lease_lapsed_is_not_made_again(source, ledger_url):
    """A wrote the target, then froze before recording it: B finds the copy there (one
    HEAD) and records it instead of copying again; A's late completion is refused."""
    log: list = []
    await starve_then_take_over(ledger_url, source, log, a_frozen={"at": "after_put"})
    puts = [(e[0], e[1]) for e in log if e[1].startswith("put-")]
    assert puts == [("A", "put-start"), ("A", "put-done")], f"the copy was made again: {log}"
    row = only_row(source)
    assert (row["status"], row["owner"], row["attempts"]) == ("completed", "B", 2)
    assert row["detail"] == "the target already holds this version (copied before a lease lapsed)"
    with source.reader.connect() as conn:
        from sqlalchemy import text

        target_etag = conn.execute(text("select target_etag from replications")).scalar()
    assert target_etag == (await open_store(parse_location(DST)).head("k")).etag  # recognised as our own write


async def test_a_starved_event_loop_does_not_lose_its_leases(source, ledger_url):
    """The event loop is hogged for 2.5 leases while another worker keeps looking for
    expired leases: the keeper's thread renews them, nothing is reclaimed, the job completes
    on its first attempt."""
    log: list = []
    takeover = asyncio.Event()
    lease = 2 * LEASE  # renewed every lease/4: a renewal may be late by 3/4 of a lease on a loaded machine
    pool, src, _, led = worker(ledger_url, "A", log, takeover, lease=lease, src_at="get")
    task = asyncio.create_task(pool.run())
    reclaimed, stop = [], threading.Event()

    def other_worker():
        while not stop.is_set():
            reclaimed.append(source.reclaim_expired())
            stop.wait(lease / 8)

    other = threading.Thread(target=other_worker)
    try:
        await until(src.reached.is_set, message="the job was not claimed")
        other.start()
        end = time.monotonic() + 2.5 * lease
        while time.monotonic() < end:  # CPU-bound work on the loop: no coroutine runs meanwhile
            pass
        src.hold.set()
        await until(lambda: only_row(source)["status"] == "completed", message="the job did not complete")
    finally:
        stop.set()
        if other.is_alive():
            other.join()
        src.hold.set()
        pool.stop()
        await task
        led.close()
    assert len(reclaimed) > 3 and not any(reclaimed), "a lease lapsed while the event loop was starved"
    row = only_row(source)
    assert (row["status"], row["owner"], row["attempts"]) == ("completed", "A", 1)
