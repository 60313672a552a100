"""GET /v1/status: per mirror and target, counts by status and the RPO; per group, its RPO."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Ctx
from api.schemas import StatusOut
from cloudmirror import service

router = APIRouter(prefix="/v1", tags=["status"])


@router.get("/status", response_model=StatusOut, summary="Replication status and RPO of every target")
def status(ctx: Ctx) -> dict:
    rows = service.status(ctx.config, ctx.ledger)
    return {"targets": rows, "groups": service.group_status(ctx.config, rows)}
