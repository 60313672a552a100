"""Background jobs: POST /v1/mirrors/{name}/reconcile starts one; GET /v1/jobs[/{id}] report."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from api.audit import note
from api.deps import Ctx, FilterStr, MirrorName, Operator, Paging, RowId, current_config
from api.errors import responses
from api.schemas import Job, JobEnvelope, Page, ReconcileRequest
from cloudmirror.services import jobs

router = APIRouter(prefix="/v1", tags=["jobs"])


@router.post("/mirrors/{name}/reconcile", status_code=202, response_model=JobEnvelope,
             summary="Reconcile a mirror in the background (operator)",
             description="Lists the source and the target(s) and records every difference as work for the "
                         "workers (the same as `cloudmirror reconcile`). Answers at once with the job; follow it "
                         "with GET /v1/jobs/{id}. 409 while another reconcile that changes the ledger covers "
                         "the same target; dry runs never conflict. Deletes remove only objects cloudmirror wrote "
                         "(unless the mirror says deletes: replicate_all); a target that would lose more than the "
                         "mirror's max_deletes loses nothing and the job fails saying how many and which, unless "
                         "the body says `force`.",
             responses=responses(400, 404, 409, 422),
             dependencies=[Depends(current_config)])  # the mirrors as they are now (one created a moment ago)
async def reconcile(ctx: Ctx, who: Operator, name: MirrorName, request: Request, response: Response,
                    body: ReconcileRequest | None = None) -> dict:
    body = body or ReconcileRequest()
    job = await ctx.jobs.start_reconcile(name, target=body.target, dry_run=body.dry_run, checksum=body.checksum,
                                         force=body.force, created_by=who.name)
    note(request, f"job {job['id']} queued ({'dry run, ' if body.dry_run else ''}target={body.target or 'all'}, "
                  f"checksum={body.checksum}{', force' if body.force else ''})")
    response.headers["Location"] = f"/v1/jobs/{job['id']}"
    return {"job": job}


@router.get("/jobs/{job_id}", response_model=JobEnvelope, summary="A job's status, progress and result",
            responses=responses(404))
def get_job(ctx: Ctx, job_id: RowId) -> dict:
    return {"job": jobs.get_job(ctx.ledger, job_id)}


@router.get("/jobs", response_model=Page[Job], summary="Jobs, newest first")
def list_jobs(ctx: Ctx, page: Paging, mirror: FilterStr = None,
              status: Annotated[Literal["queued", "running", "finished", "failed"] | None, Query()] = None) -> dict:
    got = jobs.list_jobs(ctx.ledger, before=page.position("jobs"), limit=page.limit, mirror=mirror, status=status)
    return page.answer(got)
