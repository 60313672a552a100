"""GET /v1/reports/rpo (viewer): the signed compliance RPO report of a mirror or a consistency
group as JSON, CSV or PDF -- the same file `cloudmirror report` writes (rpo_service.build_report)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from api.deps import NO_NUL, Ctx, CurrentConfig
from api.errors import responses
from api.routers.rpo import WHEN
from cloudmirror.services import rpo as rpo_service

router = APIRouter(prefix="/v1/reports", tags=["reports"])

Scope = Annotated[str | None, Query(min_length=1, max_length=256, pattern=NO_NUL)]
Since = Annotated[str, Query(min_length=1, max_length=64, pattern=NO_NUL, description="Start. " + WHEN)]
Until = Annotated[str, Query(min_length=1, max_length=64, pattern=NO_NUL, description="End. " + WHEN)]
Format = Annotated[Literal["json", "csv", "pdf"], Query(alias="format", description="The file's format.")]

_SIGNED = {"type": "string", "description": "The signed report file (`cloudmirror report verify FILE` checks it)."}
REPORT_CONTENT = {
    "application/json": {"schema": {"type": "object", "description": "The signed envelope: `data` (the report), "
                                                                      "`digest`, `key_id`, `signature`, `format`, "
                                                                      "`schema`."}},
    "text/csv": {"schema": _SIGNED},
    "application/pdf": {"schema": {**_SIGNED, "format": "binary"}},
}


@router.get("/rpo", response_class=Response,
            responses={200: {"content": REPORT_CONTENT, "description": "The report file, as an attachment"},
                       **responses(404, 422, 503)},
            summary="The signed compliance RPO report of a mirror or group",
            description="Name exactly one of `mirror` or `group`. The report states the period, scope and "
                        "objective, the % of versions replicated within it, the worst RPO, every breach with the "
                        "objects affected, failovers and drills, and (PDF) a chart of RPO over time; it is signed "
                        "with the server's report key (the same file as `cloudmirror report`). Default period: "
                        "the last 24 hours. 503 when the server has no usable report key.")
def rpo_report(ctx: Ctx, config: CurrentConfig, mirror: Scope = None, group: Scope = None, since: Since = "24h",
               until: Until = "now", fmt: Format = "json") -> Response:
    blob, name, media_type = rpo_service.report_file(config, ctx.ledger, mirror=mirror, group=group, since=since,
                                                     until=until, fmt=fmt)
    return Response(blob, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'})
