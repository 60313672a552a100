"""Probes, open to all: /healthz (the process answers) and /readyz (the ledger answers)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from api.deps import Ctx
from api.errors import ApiError, responses
from api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive", response_model=Health)
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="The ledger is reachable", response_model=Health, responses=responses(503))
async def readyz(ctx: Ctx) -> dict:
    try:
        await asyncio.to_thread(ctx.ledger.backlog)
    except Exception as e:  # noqa: BLE001 - any failure means not ready; say which
        raise ApiError(503, f"ledger unreachable: {type(e).__name__}") from None
    return {"status": "ready"}
