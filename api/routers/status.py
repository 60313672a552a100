"""GET /v1/status: per mirror and target, counts by status and the RPO; per group, its RPO;
the dead letters by status."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Ctx, CurrentConfig
from api.schemas import StatusOut
from cloudmirror.services import dead_letters
from cloudmirror.services import status as service

router = APIRouter(prefix="/v1", tags=["status"])


@router.get("/status", response_model=StatusOut, summary="Replication status and RPO of every target")
def status(ctx: Ctx, config: CurrentConfig) -> dict:
    rows = service.status(config, ctx.ledger)
    return {"targets": rows, "groups": service.group_status(config, rows),
            "dead_letters": dead_letters.counts(ctx.ledger)}
