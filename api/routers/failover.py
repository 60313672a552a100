"""Failover, failback and drills: POST /v1/mirrors/{name}/failover|failback|drills (operator),
GET /v1/failovers[/{id}[/objects]] and GET /v1/drills[/{id}] (viewer).

The three POSTs run synchronously within their bounded timeouts (a planned failover's
`drain_timeout_s`, a failback's `timeout_s`, at most an hour) and answer with the record;
meanwhile GET /v1/failovers shows it `running` with its progress. Set the client's timeout
above the one asked for. Where applications write now is the mirror's `active`
(GET /v1/mirrors/{name})."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api.audit import note
from api.deps import Ctx, FilterStr, MirrorName, Operator, Paging, RowId
from api.errors import responses
from api.schemas import Out, Page, Timestamp
from cloudmirror.dr import drills, failover
from cloudmirror.services.access import Role

router = APIRouter(prefix="/v1", tags=["failover"])
MAX_S = failover.MAX_TIMEOUT_S


# ------------------------------------------------------------------ bodies
class FailoverRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"to": "s3://photos-euw1?region=eu-west-1", "mode": "planned", "drain_timeout_s": 300, "fence": True}]})

    to: str = Field(min_length=1, max_length=1024, description="The target to become the primary (its URL as "
                                                                 "in the mirror's targets).")
    mode: Literal["planned", "forced"] = Field("planned", description="planned: drain first (RPO 0) or abort; "
                                                                      "forced: switch now, recording the data at risk.")
    drain_timeout_s: float = Field(300.0, ge=0, le=MAX_S, description="planned: how long to wait for the backlog.")
    fence: bool = Field(False, description="planned: fence the old primary before the final drain (S3: a bucket "
                                           "policy statement denies other identities' writes; other providers: "
                                           "a recorded intent). detail.fence says what was done.")
    events: list[dict[str, Any]] | None = Field(None, max_length=16, description="Feeds announcing writes to the new "
                                                "primary (as a mirror's `events`); default: it is polled every 60s. "
                                                "A queue feed that no mirror names yet needs the admin role (403 "
                                                "otherwise) and the security policy (422).")


class FailbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"policy": "newest_wins"}]})

    policy: Literal["newest_wins", "primary_wins", "keep_both"] = Field(
        "newest_wins", description="How a key written on both sides since the failover is settled.")
    timeout_s: float = Field(600.0, ge=0, le=MAX_S, description="How long the two locations may take to converge.")
    force: bool = Field(False, description="Make the deletes even when a location would lose more objects than the "
                                           "mirror's max_deletes (without it such a failback stops before deleting, "
                                           "409 naming how many and which; nothing switched).")


class DrillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"sample": 20}]})

    sample: int = Field(20, ge=0, le=1000, description="Objects per target whose bytes are compared (MD5).")


# ------------------------------------------------------------------ answers
class Failover(Out):
    id: int
    mirror: str
    kind: Literal["planned", "forced", "failback"]
    status: Literal["running", "completed", "aborted", "failed"]
    from_location: str
    to_location: str
    requested_by: str
    started_at: Timestamp
    switched_at: Timestamp | None
    finished_at: Timestamp | None
    fence: bool
    fenced_at: Timestamp | None
    drain_timeout_s: float | None
    drained: bool | None
    policy: str | None
    of_failover: int | None = Field(description="failback: the failover it ends")
    old_is_target: bool | None = Field(description="While failed over: whether the old primary receives the new "
                                                   "one's writes (not when data was left at risk on it).")
    rpo_seconds: float | None = Field(description="Age of the oldest write not carried over at the switch (0: none).")
    at_risk_objects: int
    at_risk_bytes: int
    conflicts: int
    restored: int = Field(description="failback: keys copied from the old primary (its unreplicated writes).")
    copied: int
    deleted: int
    detail: dict[str, Any] | None
    error: str | None


class FailoverEnvelope(Out):
    failover: Failover


class FailoverObject(Out):
    id: int
    kind: Literal["at_risk", "conflict", "restored"]
    key: str
    op: str | None
    size: int | None
    source_time: Timestamp | None = Field(description="at_risk: the source write; conflict: the old primary's write.")
    target: str | None
    other_time: Timestamp | None = Field(description="conflict: the current primary's write (or delete).")
    resolution: str | None = Field(description="conflict: primary | old_primary | kept_both")
    detail: str | None


class Drill(Out):
    id: int
    mirror: str
    requested_by: str
    started_at: Timestamp
    finished_at: Timestamp | None
    outcome: Literal["running", "passed", "failed", "error"]
    rpo_seconds: float | None = Field(description="Worst target: what a forced failover would lose now.")
    rto_seconds: float | None = Field(description="Worst target: how long a planned failover would take now.")
    results: list[dict[str, Any]] | None = Field(description="Per target findings.")
    error: str | None


class DrillEnvelope(Out):
    drill: Drill


# ------------------------------------------------------------------ routes
@router.post("/mirrors/{name}/failover", response_model=FailoverEnvelope,
             responses=responses(400, 403, 404, 409, 422),
             summary="Fail a mirror over to one of its targets (operator)",
             description="planned: drain the backlog to the target (at most `drain_timeout_s`), then switch with "
                         "nothing at risk (RPO 0), or abort (409) and change nothing. forced: switch now; the record "
                         "lists every version not yet replicated (GET /v1/failovers/{id}/objects?kind=at_risk). "
                         "409 when the mirror is already failed over or another failover of it is running.")
async def fail_over(ctx: Ctx, who: Operator, name: MirrorName, body: FailoverRequest, request: Request) -> dict:
    rec = await failover.failover(ctx.jobs.service, name, to=body.to, mode=body.mode,
                                  drain_timeout_s=body.drain_timeout_s, fence=body.fence, events=body.events,
                                  requested_by=who.name, may_configure=who.can(Role.admin))
    note(request, f"failover #{rec['id']} ({body.mode}) to {body.to}: {failover.summary(rec)}")
    return {"failover": rec}


@router.post("/mirrors/{name}/failback", response_model=FailoverEnvelope, responses=responses(400, 404, 409, 422),
             summary="Bring a failed-over mirror back to its source (operator)",
             description="Compares the current primary with the old one, settles keys written on both sides by "
                         "`policy`, restores the old primary's unreplicated writes, copies the new primary's "
                         "writes back, then switches back. 409 when the mirror is not failed over, the locations "
                         "did not converge within `timeout_s`, or (without `force`) a location would lose more "
                         "objects than the mirror's max_deletes (nothing switched).")
async def fail_back(ctx: Ctx, who: Operator, name: MirrorName, request: Request,
                    body: FailbackRequest | None = None) -> dict:
    body = body or FailbackRequest()
    rec = await failover.failback(ctx.jobs.service, name, policy=body.policy, timeout_s=body.timeout_s,
                                  requested_by=who.name, force=body.force)
    note(request, f"failback #{rec['id']} ({body.policy}{', force' if body.force else ''}): {failover.summary(rec)}")
    return {"failover": rec}


@router.post("/mirrors/{name}/drills", status_code=201, response_model=DrillEnvelope,
             responses=responses(400, 404, 422), summary="Run a failover drill (operator; changes nothing)",
             description="Per target: a reconcile dry run, MD5 of a sample of objects on both sides, the RPO and "
                         "the RTO a failover would have now. The record is kept and listed in the RPO reports.")
async def run_drill(ctx: Ctx, who: Operator, name: MirrorName, request: Request,
                    body: DrillRequest | None = None) -> dict:
    body = body or DrillRequest()
    rec = await drills.drill(ctx.jobs.service, name, sample=body.sample, requested_by=who.name)
    note(request, f"drill #{rec['id']}: {rec['outcome']}")
    return {"drill": rec}


Kind = Annotated[Literal["planned", "forced", "failback"] | None, Query()]
ObjectKind = Annotated[Literal["at_risk", "conflict", "restored"] | None, Query()]


@router.get("/failovers", response_model=Page[Failover], summary="Failovers and failbacks, newest first")
def list_failovers(ctx: Ctx, page: Paging, mirror: FilterStr = None, kind: Kind = None) -> dict:
    got = failover.list_failovers(ctx.ledger, mirror=mirror, kind=kind, before=page.position("failovers"),
                                  limit=page.limit)
    return page.answer(got)


@router.get("/failovers/{failover_id}", response_model=FailoverEnvelope, responses=responses(404),
            summary="One failover or failback")
def get_failover(ctx: Ctx, failover_id: RowId) -> dict:
    return {"failover": failover.get_failover(ctx.ledger, failover_id)}


@router.get("/failovers/{failover_id}/objects", response_model=Page[FailoverObject], responses=responses(404),
            summary="A record's objects: data at risk, conflicts, restored keys (in order)")
def failover_objects(ctx: Ctx, failover_id: RowId, page: Paging, kind: ObjectKind = None) -> dict:
    got = failover.failover_objects(ctx.ledger, failover_id, kind=kind, after=page.position("failover-objects"),
                                    limit=page.limit)
    return page.answer(got)


@router.get("/drills", response_model=Page[Drill], summary="Drills, newest first")
def list_drills(ctx: Ctx, page: Paging, mirror: FilterStr = None) -> dict:
    got = drills.list_drills(ctx.ledger, mirror=mirror, before=page.position("drills"), limit=page.limit)
    return page.answer(got)


@router.get("/drills/{drill_id}", response_model=DrillEnvelope, responses=responses(404), summary="One drill")
def get_drill(ctx: Ctx, drill_id: RowId) -> dict:
    return {"drill": drills.get_drill(ctx.ledger, drill_id)}
