"""GET /v1/reports/rpo (viewer): the signed compliance RPO report of a mirror or a consistency
group as JSON, CSV or PDF -- the same file `cloudmirror report` writes (rpo_service.build_report)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from api.deps import NO_NUL, Ctx, CurrentConfig
from api.errors import ApiError, responses
from api.routers.rpo import WHEN, check_group, check_mirror, parse_period
from cloudmirror import rpo_service
from cloudmirror.errors import InvalidInput
from cloudmirror.reports import ReportError, ReportKeyError

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


def filename(scope: str, since: float, until: float, fmt: str) -> str:
    """rpo-report-photos-20261125T000000Z-20261126T000000Z.pdf (safe in any header or file system)."""
    def stamp(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y%m%dT%H%M%SZ")

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", scope).strip("._")[:64] or "scope"
    return f"rpo-report-{safe}-{stamp(since)}-{stamp(until)}.{fmt}"


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
    if mirror and group:
        raise InvalidInput("query.group", "name a mirror or a group, not both")
    if not mirror and not group:
        raise InvalidInput("query.mirror", "name a mirror (or a group with `group`)")
    now = time.time()
    t0, t1 = parse_period(since, until, default_since="24h", now=now)
    if mirror:
        check_mirror(config, mirror)
    else:
        check_group(config, group)
    try:
        blob = rpo_service.build_report(config, ctx.ledger, mirror=mirror, group=group, since=t0, until=t1,
                                        fmt=fmt, now=now)
    except ReportError as e:
        raise ApiError(422, str(e)) from None
    except ReportKeyError as e:
        raise ApiError(503, f"reports cannot be signed: the server's report key is not usable ({e}); "
                            "the operator must fix it") from None
    name = filename(mirror or group, t0, t1, fmt)
    return Response(blob, media_type=rpo_service.REPORT_MEDIA_TYPES[fmt],
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
