"""Failover and failback of a mirror: service functions shared by the CLI and the REST API.

- `failover(service, name, to=TARGET, mode=planned|forced)`. planned: fence the source when
  asked (see below), wait until every version the ledger knows of has reached TARGET (at
  most `drain_timeout_s`; a backlog that does not drain, e.g. failed copies, aborts the
  failover and changes nothing), then switch -- in a transaction that refuses to switch
  while anything is at risk, so a planned failover records RPO 0 or does not happen
  (writes still in the queue, not yet in the ledger, are not known to it). forced: switch at once. The switch is one
  ledger transaction (ledger.failovers.switch_over): it lists every version not yet on
  TARGET as *data at risk* (key, op, size, source time), records the RPO of the moment (0
  when nothing was at risk) and moves the mirror's `active` location, which running
  services pick up within a second: TARGET becomes the source, the old primary the first
  target (only when nothing was left at risk; otherwise it receives nothing until the
  failback, so that its unreplicated writes survive to be judged), the other targets stay.
- `failback(service, name, policy=...)`: compare the current primary P with the old one O
  key by key, settle what was written on both sides by the policy, copy what O alone still
  has (its unreplicated writes) to P, copy P's writes to O, until a comparison finds no
  difference; then switch back (ledger.failovers.switch_back) and make one last pass for
  writes that reached P meanwhile. Conflicts and restored keys are recorded on the record.
- Fencing (`fence`, planned only): before the final drain the source store is fenced when
  it can be (the stores.base.Fencer capability; S3: a bucket-policy statement denying
  object writes and deletes to every identity but cloudmirror's own), and the record's
  detail["fence"] says what was done; other providers (GCS, Azure, file, memory) record it
  as an intent with the reason "not supported by PROVIDER: writes are not blocked".
  `fenced_at` is the time the fence was requested. A failover that aborts or fails before
  its switch unfences again; a completed one leaves the old primary fenced until the
  failback, which unfences it at its start (cloudmirror.dr.failback). Applications are still
  expected to read `active` (GET /v1/mirrors/{name}) to learn where to write.

Both run synchronously within their timeouts; their record is written as they go (status
`running`, heartbeat), so GET /v1/failovers shows progress. A record whose process died is
marked failed when the next failover of the mirror starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from cloudmirror.config import EventFeed, Mirror
from cloudmirror.dr.common import load_mirror
from cloudmirror.dr.failback import POLICIES, Failback
from cloudmirror.errors import ConflictError, Forbidden, InvalidInput, NotFoundError
from cloudmirror.ledger.failovers import Busy, Failovers, NotDrained, SwitchRefused
from cloudmirror.paging import DEFAULT_LIMIT, Page, page_of
from cloudmirror.replication.worker import WorkerPool
from cloudmirror.reports.data import failover_summary
from cloudmirror.services import mirrors
from cloudmirror.stores.base import Fencer, StoreError

log = logging.getLogger("cloudmirror.dr.failover")

MODES = ("planned", "forced")
MAX_TIMEOUT_S = 3600.0
DRAIN_CHECK_S = 0.2
HEARTBEAT_S = 2.0


def _timeout(field: str, value: float) -> float:
    if not 0 <= value <= MAX_TIMEOUT_S:
        raise InvalidInput(field, f"must be between 0 and {MAX_TIMEOUT_S:g} seconds")
    return float(value)


def _events(service, events: list | None, may_configure: bool) -> list | None:
    """The feeds announcing writes to the new primary, validated and checked against the
    security policy. A queue feed is a configuration change: without `may_configure` (the
    admin role) only feeds already named by a mirror of the config, or polls, are taken.
    Raises InvalidInput, PolicyRefused, Forbidden."""
    if not events:
        return None
    named = {f.address for m in service.config.mirrors for f in m.events}
    out = []
    for i, e in enumerate(events):
        try:
            feed = EventFeed.model_validate(e)
        except ValidationError as ex:
            raise InvalidInput(f"events[{i}]", ex.errors()[0]["msg"].removeprefix("Value error, ")) from None
        if not may_configure and feed.kind != "poll" and feed.address not in named:
            raise Forbidden(f"events[{i}]: a feed that no mirror names yet is a configuration change and needs the "
                            "admin role (an operator may name feeds of the config, or poll)")
        service.policy.check_feed(feed, f"events[{i}]")
        out.append(feed.model_dump(mode="json", exclude_defaults=True))
    return out


async def _begin(service, **kw) -> dict:
    try:
        return await asyncio.to_thread(Failovers(service.ledger).start, **kw)
    except Busy as e:
        busy = e.args[0] or {}
        raise ConflictError(f"{busy.get('kind', 'a failover')} #{busy.get('id')} of mirror {kw['mirror']!r} is "
                            "running: wait for it to finish") from None


@contextlib.asynccontextmanager
async def helper_workers(service, name: str, config):
    """Workers for this one mirror while the call waits for copies, unless the service
    runs its own (a CLI call may be the only process up). Safe beside other processes'
    workers: claims are leased and one key is never in flight twice."""
    if getattr(service, "pool", None) is not None:
        yield
        return
    pool = WorkerPool(config, service.ledger, service.endpoint, owner=f"{service.owner}-failover",
                      paused=lambda n: n != name)
    task = asyncio.create_task(pool.run(), name=f"failover workers {name}")
    try:
        yield
    finally:
        pool.stop()
        await asyncio.gather(task, return_exceptions=True)


async def _drain(service, fo: dict, m: Mirror, to: str, timeout: float,
                 on_progress: Callable[[dict], None]) -> dict:
    """Wait until nothing is left to replicate to `to`, or the timeout. Returns the last backlog."""
    ledger = Failovers(service.ledger)
    deadline = time.monotonic() + timeout
    beat = 0.0
    config = await asyncio.to_thread(mirrors.current_config, service.base_config, service.ledger)
    async with helper_workers(service, m.name, config):
        while True:
            backlog = await asyncio.to_thread(ledger.backlog_to, m.name, to)
            on_progress(backlog)
            if backlog["objects"] == 0 or time.monotonic() >= deadline:
                return backlog
            if time.monotonic() - beat >= HEARTBEAT_S:
                beat = time.monotonic()
                await asyncio.to_thread(ledger.beat, fo["id"], {**(fo.get("detail") or {}), "backlog": {
                    k: backlog[k] for k in ("objects", "bytes", "failed")}})
            await asyncio.sleep(DRAIN_CHECK_S)


PROVIDERS = {"s3": "s3", "gs": "gcs", "az": "azure"}


async def _fence(service, fo: dict, source: str) -> None:
    """Fence the source when its store can (recorded in fo["detail"]["fence"], also written
    to the ledger). Raises ConflictError (the record failed) when the fence could not be set."""
    ep = service.endpoint(source)
    store = ep.store
    if isinstance(store, Fencer):
        try:
            what = await store.fence(f"planned failover #{fo['id']} of mirror {fo['mirror']!r}")
        except StoreError as e:
            why = f"could not fence {source}: {e}"
            await asyncio.to_thread(Failovers(service.ledger).finish, fo["id"], "failed", error=why[:2000])
            raise ConflictError(f"failover #{fo['id']} failed: {why}; nothing was switched") from None
        fence = {"applied": True, "what": what}
    else:
        provider = PROVIDERS.get(ep.location.scheme, ep.location.scheme)
        fence = {"applied": False, "reason": f"not supported by {provider}: writes are not blocked"}
    fo["detail"] = {**(fo.get("detail") or {}), "fence": fence}
    await asyncio.to_thread(Failovers(service.ledger).beat, fo["id"], fo["detail"])


async def _unfence(service, fo: dict, source: str) -> dict:
    """Undo _fence after an abort or a failure (never raises: the outcome is recorded).
    Returns the record's detail to write."""
    fence = dict((fo.get("detail") or {}).get("fence") or {})
    if fence.get("applied"):
        try:
            fence["removed"] = await service.endpoint(source).store.unfence()
        except StoreError as e:
            log.error("failover #%s: could not unfence %s: %s", fo["id"], source, e)
            fence["unfence_error"] = str(e)[:1000]
    return {**(fo.get("detail") or {}), "fence": fence}


async def failover(service, name: str, *, to: str, mode: str = "planned", drain_timeout_s: float = 300.0,
                   fence: bool = False, events: list | None = None, requested_by: str = "cli",
                   may_configure: bool = True, on_progress: Callable[[dict], None] = lambda b: None) -> dict:
    """Fail the mirror over to its target `to` (see the module doc). Returns the record.
    Raises NotFoundError (no such mirror), InvalidInput (`to` is not a target, bad mode,
    timeout or events; PolicyRefused for feeds the security policy refuses), Forbidden (a
    new queue feed without `may_configure`, the admin role), ConflictError (already failed
    over, another failover running, or a planned failover whose backlog did not drain: the
    record says `aborted` and nothing changed). Not idempotent: a second call is refused
    while the mirror is failed over."""
    if mode not in MODES:
        raise InvalidInput("mode", f"must be planned or forced, not {mode!r}")
    drain_timeout_s = _timeout("drain_timeout_s", drain_timeout_s)
    row, m = load_mirror(service, name)
    targets = [t.url for t in m.targets]
    if to not in targets:
        raise InvalidInput("to", f"{to!r} is not a target of mirror {name!r} (its targets: {', '.join(targets)})")
    if row.active and row.active != m.source:
        raise ConflictError(f"mirror {name!r} is already failed over to {row.active}: fail back first")
    events = _events(service, events, may_configure)
    store = Failovers(service.ledger)
    fo = await _begin(service, mirror=name, kind=mode, from_location=m.source, to_location=to,
                      requested_by=requested_by, fence=fence and mode == "planned",
                      drain_timeout_s=drain_timeout_s if mode == "planned" else None, reverse_events=events)
    switched = False
    try:
        drained = None
        if fo["fence"]:
            await _fence(service, fo, m.source)
        deadline = time.monotonic() + drain_timeout_s
        while True:
            if mode == "planned":
                backlog = await _drain(service, fo, m, to, max(0.0, deadline - time.monotonic()), on_progress)
                drained = backlog["objects"] == 0
                if not drained:
                    why = (f"the backlog to {to} did not drain within {drain_timeout_s:g}s: {backlog['objects']} "
                           f"version(s) not replicated ({backlog['failed']} failed); nothing was switched. Retry "
                           "the failed copies, wait longer, or fail over with mode forced")
                    detail = await _unfence(service, fo, m.source) if fo["fence"] else fo.get("detail")
                    await asyncio.to_thread(store.finish, fo["id"], "aborted", drained=False, error=why,
                                            detail=detail)
                    raise ConflictError(f"failover #{fo['id']} aborted: {why}")
            try:
                await asyncio.to_thread(store.switch_over, fo["id"], name, to, drained=mode == "planned")
                switched = True
                break
            except NotDrained:
                continue  # writes were recorded between the drain and the switch: drain them too
            except SwitchRefused as e:
                detail = await _unfence(service, fo, m.source) if fo["fence"] else fo.get("detail")
                await asyncio.to_thread(store.finish, fo["id"], "failed", error=str(e), detail=detail)
                raise ConflictError(str(e)) from None
        done = await asyncio.to_thread(store.finish, fo["id"], "completed", drained=drained)
        log.warning("mirror %s failed over (%s) to %s: %d object(s) at risk, RPO %.3fs", name, mode, to,
                    done["at_risk_objects"], done["rpo_seconds"] or 0.0)
        return done
    except BaseException as e:
        current = await asyncio.shield(asyncio.to_thread(store.get, fo["id"]))
        if current and current["status"] == "running":
            values: dict[str, Any] = {"error": f"{type(e).__name__}: {e}"[:2000]}
            if fo["fence"] and not switched:
                values["detail"] = await asyncio.shield(_unfence(service, fo, m.source))
            await asyncio.shield(asyncio.to_thread(store.finish, fo["id"], "failed", **values))
        raise


async def failback(service, name: str, *, policy: str = "newest_wins", timeout_s: float = 600.0,
                   requested_by: str = "cli", force: bool = False) -> dict:
    """Bring the mirror back to its source (see the module doc and cloudmirror.dr.failback).
    Returns the record. Raises NotFoundError, InvalidInput (bad policy or timeout),
    ConflictError (not failed over, another failover running, the locations did not
    converge within `timeout_s`, or -- unless `force` -- a location would lose more objects
    than the mirror's max_deletes: then nothing was switched, and the record says failed)."""
    if policy not in POLICIES:
        raise InvalidInput("policy", f"must be one of {', '.join(POLICIES)}, not {policy!r}")
    timeout_s = _timeout("timeout_s", timeout_s)
    row, m = load_mirror(service, name)
    if not row.active or row.active == m.source:
        raise ConflictError(f"mirror {name!r} is not failed over (it is active at its source {m.source})")
    store = Failovers(service.ledger)
    switch = await asyncio.to_thread(store.latest_switch, name)
    fb = await _begin(service, mirror=name, kind="failback", from_location=row.active, to_location=m.source,
                      requested_by=requested_by, policy=policy, of_failover=switch["id"] if switch else None)
    try:
        return await Failback(service, m, row.active, fb, switch, policy, timeout_s, force=force).run()
    except BaseException as e:
        current = await asyncio.shield(asyncio.to_thread(store.get, fb["id"]))
        if current and current["status"] == "running":
            await asyncio.shield(asyncio.to_thread(store.finish, fb["id"], "failed",
                                                   error=f"{type(e).__name__}: {e}"[:2000]))
        raise


# ---------------------------------------------------------------- reads
def get_failover(ledger, failover_id: int) -> dict:
    """Raises NotFoundError."""
    got = Failovers(ledger).get(failover_id)
    if got is None:
        raise NotFoundError(f"no failover with id {failover_id}")
    return got


def list_failovers(ledger, *, mirror: str | None = None, kind: str | None = None, before: int | None = None,
                   limit: int = DEFAULT_LIMIT) -> Page[dict]:
    """Failovers and failbacks, newest first."""
    return page_of(Failovers(ledger).list(mirror=mirror, kind=kind, before=before, limit=limit), limit)


def failover_objects(ledger, failover_id: int, *, kind: str | None = None, after: int | None = None,
                     limit: int = DEFAULT_LIMIT) -> Page[dict]:
    """A record's objects (at_risk, conflict, restored) in order. Raises NotFoundError."""
    get_failover(ledger, failover_id)
    return page_of(Failovers(ledger).objects(failover_id, kind=kind, after=after, limit=limit), limit)


summary = failover_summary  # one line for the CLI and the audit log
