"""GET /v1/reports/rpo (viewer): the signed compliance RPO report of a mirror or a consistency
group as JSON, CSV or PDF -- the same file `cloudmirror report` writes (rpo_service.build_report);
GET /v1/reports/public-key (viewer): the Ed25519 public key that verifies them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from api.deps import NO_NUL, Ctx, CurrentConfig
from api.errors import responses
from api.routers.rpo import WHEN
from api.schemas.rpo import ReportPublicKey
from cloudmirror.services import rpo as rpo_service

router = APIRouter(prefix="/v1/reports", tags=["reports"])

Scope = Annotated[str | None, Query(min_length=1, max_length=256, pattern=NO_NUL)]
Since = Annotated[str | None, Query(min_length=1, max_length=64, pattern=NO_NUL,
                                    description="Start (default: 24 hours ago, or `api.max_report_period` ago if that "
                                                "is shorter). " + WHEN)]
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
                        "with Ed25519 by the deployment's report key (the same file as `cloudmirror report`; "
                        "verify it with `GET /v1/reports/public-key`). Default period: the last 24 hours (at most "
                        "`api.max_report_period`); a longer period is a 422. 503 when the server has no usable "
                        "report signing key.")
def rpo_report(ctx: Ctx, config: CurrentConfig, mirror: Scope = None, group: Scope = None, since: Since = None,
               until: Until = "now", fmt: Format = "json") -> Response:
    blob, name, media_type = rpo_service.report_file(config, ctx.ledger, mirror=mirror, group=group, since=since,
                                                     until=until, fmt=fmt)
    return Response(blob, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'})


PEM_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/ReportPublicKey"}},
               "application/x-pem-file": {"schema": {"type": "string", "description": "The public key (PEM)."}}}


@router.get("/public-key", response_model=ReportPublicKey,
            responses={200: {"content": PEM_CONTENT, "description": "The public key"}, **responses(422, 503)},
            summary="The public key that verifies the signed reports",
            description="The Ed25519 public key (PEM) and its key id: with it anyone can check a report "
                        "(`cloudmirror report verify FILE --public-key PEM`) and nobody can make one. "
                        "`?format=pem` answers the PEM alone as `application/x-pem-file`. 503 when the server "
                        "has no usable report signing key.")
def public_key(config: CurrentConfig, fmt: Annotated[Literal["json", "pem"], Query(
        alias="format", description="`json` (default) or `pem` (the PEM text alone).")] = "json") -> Response | dict:
    pub = rpo_service.report_public_key(config)
    if fmt == "pem":
        return Response(pub["public_key_pem"], media_type="application/x-pem-file",
                        headers={"Content-Disposition": f'inline; filename="cloudmirror-report-{pub["key_id"]}.pem"'})
    return pub
