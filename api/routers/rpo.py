"""Live RPO (viewer): GET /v1/rpo, /v1/mirrors/{name}/rpo, /v1/groups/{name}/rpo; and RPO over
time for charts: GET /v1/mirrors/{name}/rpo/history. Computed from the ledger for the mirrors
as they run now (rpo_service)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import NO_NUL, Ctx, CurrentConfig, MirrorName
from api.errors import responses
from api.schemas import RpoHistory, RpoLive
from cloudmirror.services import rpo as rpo_service

router = APIRouter(prefix="/v1", tags=["rpo"])

GroupName = Annotated[str, Path(min_length=1, max_length=256, pattern=NO_NUL, description="The group's name.",
                                examples=["billing-dr"])]
WHEN = ("ISO 8601 (`2026-11-26T10:00Z`; UTC unless it says otherwise), epoch seconds (`1795600800`), a duration "
        "ago (`90m`, `24h`, `7d`), or `now`.")
When = Annotated[str | None, Query(min_length=1, max_length=64, pattern=NO_NUL, description=WHEN)]

LIVE = ("Per target: the RPO now (age of the oldest write not yet copied; a failed replication holds it until "
        "retried), the backlog (objects, bytes), failed replications, writes no event announced, and latency "
        "percentiles (p50/p90/p99/max, source write to copy) over the last 5 minutes, hour and day. Per mirror "
        "and group: the worst target, summed backlog, latency over all their targets, and the last hour "
        "(worst RPO, breaches of the objective, an RPO series).")


@router.get("/rpo", response_model=RpoLive, summary="Live RPO of every mirror and group", description=LIVE)
def rpo_all(ctx: Ctx, config: CurrentConfig) -> dict:
    return rpo_service.rpo_live(config, ctx.ledger)


@router.get("/mirrors/{name}/rpo", response_model=RpoLive, responses=responses(404),
            summary="Live RPO, backlog and latency of a mirror", description=LIVE + " No groups.")
def rpo_mirror(ctx: Ctx, config: CurrentConfig, name: MirrorName) -> dict:
    return rpo_service.rpo_live(config, ctx.ledger, mirror=name)


@router.get("/groups/{name}/rpo", response_model=RpoLive, responses=responses(404),
            summary="Live RPO of a consistency group and its mirrors",
            description=LIVE + " A group's RPO is the worst of its mirrors' targets'; its objective the strictest.")
def rpo_group(ctx: Ctx, config: CurrentConfig, name: GroupName) -> dict:
    return rpo_service.rpo_live(config, ctx.ledger, group=name)


@router.get("/mirrors/{name}/rpo/history", response_model=RpoHistory, responses=responses(404),
            summary="A mirror's RPO over time, for charts",
            description="The RPO over [since, until) as points `{t, rpo_s}` (epoch seconds, seconds): the "
                        "mirror's (the worst of its targets' at each instant), or one `target`'s; with "
                        "`by_target=true` also each target's own curve. The same computation as the compliance "
                        "report's chart. Default period: the last hour.")
def rpo_history(ctx: Ctx, config: CurrentConfig, name: MirrorName, since: When = None, until: When = None,
                points: Annotated[int, Query(ge=2, le=rpo_service.MAX_HISTORY_POINTS,
                                             description="At most this many points.")] = rpo_service.HISTORY_POINTS,
                target: Annotated[str | None, Query(min_length=1, max_length=4096, pattern=NO_NUL,
                                                    description="Only this target (its URL).")] = None,
                by_target: Annotated[bool, Query(description="Also each target's own curve.")] = False) -> dict:
    t0, t1 = rpo_service.parse_period(since, until, default_since="1h", now=time.time())
    return rpo_service.rpo_history(config, ctx.ledger, name, since=t0, until=t1, points=points, target=target,
                                   by_target=by_target)
