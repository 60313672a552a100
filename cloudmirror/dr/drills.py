"""Failover drills: rehearse a failover without making one. Service functions shared by the
CLI and the REST API.

A drill of a mirror, per target (of the mirror as it runs now):
- a reconcile **dry run** (lists both sides; changes nothing, not even the ledger): missing,
  stale and extra objects. Differences the backlog accounts for are replication lag;
  the rest are *unexplained* (lost events, changes behind cloudmirror's back);
- **checksums on a sample**: `sample` source objects drawn uniformly from the listing
  (reservoir sampling) are read on both sides and their MD5s compared. A replica that
  records the source's current version but holds other bytes is *corrupt*;
- **RPO now** (rpo_service.rpo_live): what a forced failover to this target would lose;
- **RTO now**: `rto_forced_seconds` = the switch itself = the ledger read and the effective
  config build (timed now) + CONTROL_POLL_S (how long running services take to notice) ;
  `rto_seconds` (planned) = that + the time to drain the current backlog at the throughput
  of the last 5 minutes (null when there is a backlog and nothing completed lately).
The drill passes when no target has unexplained differences or corrupt replicas and every
RPO is within the objective. The record (table drills) is included in the RPO reports.
A drill reads only: it never writes to a location, and records nothing but itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time

from cloudmirror.config import Mirror, Target
from cloudmirror.dr.common import load_mirror
from cloudmirror.errors import InvalidInput, NotFoundError
from cloudmirror.ledger.failovers import Failovers
from cloudmirror.ledger.mirrors import MirrorSpecs
from cloudmirror.paging import DEFAULT_LIMIT, Page, page_of
from cloudmirror.replication.reconcile import Reconciler
from cloudmirror.replication.transfer import Endpoint
from cloudmirror.services import mirrors
from cloudmirror.services.rpo import rpo_live
from cloudmirror.services.runtime import CONTROL_POLL_S
from cloudmirror.stores.base import SOURCE_VERSION_KEY, ListOptions, NotFound, ObjectMeta, StoreError

DEFAULT_SAMPLE = 20
MAX_SAMPLE = 1000
THROUGHPUT_WINDOW = "5m"
THROUGHPUT_WINDOW_S = 300.0


async def _reservoir(ep: Endpoint, m: Mirror, n: int, rng: random.Random) -> list[ObjectMeta]:
    out: list[ObjectMeta] = []
    seen = 0
    if n <= 0:
        return out
    prefix = ep.location.prefix
    async for o in ep.store.list(ListOptions(prefix=prefix)):
        if not m.filter.matches(o.key[len(prefix):]):
            continue
        seen += 1
        if len(out) < n:
            out.append(o)
        else:
            j = rng.randrange(seen)
            if j < n:
                out[j] = o
    return out


async def _md5(ep: Endpoint, full_key: str) -> tuple[str | None, ObjectMeta | None]:
    try:
        got = await ep.store.get(full_key)
    except NotFound:
        return None, None
    h = hashlib.md5(usedforsecurity=False)  # a comparison, not security
    async for chunk in got.body:
        h.update(chunk)
    return h.hexdigest(), got.meta


async def sample_checksums(src: Endpoint, dst: Endpoint, m: Mirror, n: int, *, seed: int | None = None) -> dict:
    """Read `n` sampled source objects on both sides: {"sampled", "matched", "missing",
    "lagging", "corrupt", "examples"}. Read-only."""
    picks = await _reservoir(src, m, n, random.Random(seed))
    sem = asyncio.Semaphore(4)
    out = dict(sampled=len(picks), matched=0, missing=0, lagging=0, corrupt=0, examples=[])

    async def one(o: ObjectMeta) -> None:
        rel = o.key[len(src.location.prefix):]
        async with sem:
            (a, sm), (b, tm) = await asyncio.gather(_md5(src, o.key), _md5(dst, dst.location.full_key(rel)))
        if a is None:
            out["sampled"] -= 1  # deleted since the listing
        elif b is None:
            out["missing"] += 1
            out["examples"].append(f"missing: {rel}")
        elif a == b:
            out["matched"] += 1
        elif tm.metadata.get(SOURCE_VERSION_KEY) in {v for v in (sm.version_id, sm.etag) if v}:
            out["corrupt"] += 1
            out["examples"].append(f"corrupt: {rel}")
        else:
            out["lagging"] += 1
            out["examples"].append(f"stale: {rel}")

    await asyncio.gather(*(one(o) for o in picks))
    out["examples"] = sorted(out["examples"])[:20]
    return out


def _switch_seconds(ledger, m: Mirror) -> float:
    """How long the switch itself takes: read the mirrors' revision and build the reversed
    config (timed now, in a no-op way), plus how long services take to notice."""
    t0 = time.perf_counter()
    MirrorSpecs(ledger).revision()
    mirrors.effective_mirror(m, m.targets[0].url)
    return CONTROL_POLL_S + (time.perf_counter() - t0)


def _rto(live: dict, switch_s: float) -> tuple[float | None, float | None]:
    """(planned RTO, recent throughput per second) of one target's live figures."""
    done = (live.get("latency") or {}).get(THROUGHPUT_WINDOW, {}).get("count") or 0
    rate = done / THROUGHPUT_WINDOW_S
    backlog = live["backlog_objects"]
    if backlog == 0:
        return switch_s, rate
    return (switch_s + backlog / rate if rate > 0 else None), rate


async def drill(service, name: str, *, sample: int = DEFAULT_SAMPLE, requested_by: str = "cli",
                seed: int | None = None) -> dict:
    """Run a drill of the mirror and store its record (see the module doc). Returns the
    record. Raises NotFoundError (no such mirror), InvalidInput (sample out of 0..1000).
    A location that cannot be listed or read ends the drill with outcome `error` (the
    record says why): that is a finding, not a bad request."""
    if not 0 <= sample <= MAX_SAMPLE:
        raise InvalidInput("sample", f"must be between 0 and {MAX_SAMPLE}")
    load_mirror(service, name)
    led = service.ledger
    store = Failovers(led)
    config = await asyncio.to_thread(mirrors.current_config, service.base_config, led)
    m = config.mirror(name)
    did = await asyncio.to_thread(store.drill_start, name, requested_by)
    try:
        live = await asyncio.to_thread(rpo_live, config, led, name, None, history=60.0)
        switch_s = await asyncio.to_thread(_switch_seconds, led, m)
        per_target = {r["target"]: r for r in live["targets"]}
        results = [await _target(service, m, t, per_target[t.name], sample, switch_s, seed) for t in m.targets]
    except (StoreError, OSError) as e:
        return await asyncio.to_thread(store.drill_finish, did, outcome="error", results=None, rpo_seconds=None,
                                       rto_seconds=None, error=f"{type(e).__name__}: {e}"[:2000])
    except BaseException as e:
        await asyncio.shield(asyncio.to_thread(store.drill_finish, did, outcome="error", results=None,
                                               rpo_seconds=None, rto_seconds=None,
                                               error=f"{type(e).__name__}: {e}"[:2000]))
        raise
    rtos = [r["rto_seconds"] for r in results]
    return await asyncio.to_thread(
        store.drill_finish, did, outcome="passed" if all(r["outcome"] == "passed" for r in results) else "failed",
        results=results, rpo_seconds=max(r["rpo_seconds"] for r in results),
        rto_seconds=None if None in rtos else max(rtos))


async def _target(service, m: Mirror, t: Target, live: dict, sample: int, switch_s: float, seed: int | None) -> dict:
    prog = await Reconciler(m, t, service.endpoint, service.ledger).run(dry_run=True)
    checks = await sample_checksums(service.endpoint(m.source), service.endpoint(t.url), m, sample, seed=seed)
    rto, rate = _rto(live, switch_s)
    unexplained = max(0, prog.missing + prog.stale - live["backlog_objects"] - live["failed"])
    reasons = []
    if unexplained:
        reasons.append(f"{unexplained} difference(s) the backlog does not explain")
    if checks["corrupt"]:
        reasons.append(f"{checks['corrupt']} replica(s) with other bytes than their source version")
    if not live["objective_met"]:
        reasons.append(f"RPO {live['rpo_seconds']}s over the objective {live['rpo_objective_seconds']}s")
    if live["failed"]:
        reasons.append(f"{live['failed']} failed replication(s)")
    return dict(target=t.name, outcome="failed" if reasons else "passed", reasons=reasons,
                listed=prog.listed, missing=prog.missing, stale=prog.stale, extra=prog.extra,
                unexplained_differences=unexplained, examples=list(prog.examples),
                checksums=checks, rpo_seconds=live["rpo_seconds"], objective_met=live["objective_met"],
                backlog_objects=live["backlog_objects"], backlog_bytes=live["backlog_bytes"],
                failed=live["failed"], throughput_per_s=round(rate, 3),
                rto_seconds=None if rto is None else round(rto, 3), rto_forced_seconds=round(switch_s, 3))


def get_drill(ledger, drill_id: int) -> dict:
    """Raises NotFoundError."""
    got = Failovers(ledger).drill(drill_id)
    if got is None:
        raise NotFoundError(f"no drill with id {drill_id}")
    return got


def list_drills(ledger, *, mirror: str | None = None, before: int | None = None,
                limit: int = DEFAULT_LIMIT) -> Page[dict]:
    """Drills, newest first."""
    return page_of(Failovers(ledger).drill_list(mirror=mirror, before=before, limit=limit), limit)
