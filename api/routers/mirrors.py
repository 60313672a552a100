"""Mirrors as configured (read-only for now: GET /v1/mirrors, GET /v1/mirrors/{name})."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Ctx, MirrorName, Paging, encode_cursor
from api.errors import responses
from api.schemas import Page
from cloudmirror.config import Mirror
from cloudmirror.errors import NotFoundError
from cloudmirror.paging import page_of

router = APIRouter(prefix="/v1/mirrors", tags=["mirrors"])


@router.get("", response_model=Page[Mirror], summary="The mirrors, by name")
def list_mirrors(ctx: Ctx, page: Paging) -> dict:
    after = page.position("mirrors", str)
    rows = sorted((m for m in ctx.config.mirrors if after is None or m.name > after), key=lambda m: m.name)
    got = page_of(rows, page.limit, lambda m: m.name)
    return {"items": got.items, "next_cursor": encode_cursor("mirrors", got.next_after)}


@router.get("/{name}", response_model=Mirror, summary="One mirror", responses=responses(404))
def get_mirror(ctx: Ctx, name: MirrorName) -> Mirror:
    try:
        return ctx.config.mirror(name)
    except KeyError:
        raise NotFoundError(f"no mirror named {name!r}") from None
