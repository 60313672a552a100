"""Failed replications: GET /v1/failures (viewer), POST /v1/failures/{id}/retry (operator)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.audit import note
from api.deps import Ctx, FilterStr, Operator, Paging, RowId
from api.errors import responses
from api.schemas import Failure, Page
from cloudmirror.services import failures as replications

router = APIRouter(prefix="/v1/failures", tags=["failures"])


@router.get("", response_model=Page[Failure], summary="Replications that gave up after their retries, newest first")
def list_failures(ctx: Ctx, page: Paging, mirror: FilterStr = None, target: FilterStr = None) -> dict:
    got = replications.list_failures(ctx.ledger, mirror=mirror, target=target, before=page.position("failures"),
                                     limit=page.limit)
    return page.answer(got)


@router.post("/{replication_id}/retry", response_model=Failure, responses=responses(404, 409),
             summary="Retry a failed replication (operator)",
             description="Puts it back to pending with its attempts reset; the workers take it up at their next "
                         "claim. 409 when it is not failed (e.g. retried already).")
def retry(ctx: Ctx, who: Operator, replication_id: RowId, request: Request) -> dict:
    row = replications.retry_failure(ctx.ledger, replication_id)
    note(request, f"{row['mirror']} -> {row['target']}: {row['key']}")
    return row
