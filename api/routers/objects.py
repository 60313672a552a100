"""GET /v1/mirrors/{name}/objects/{key}: every version of a key seen on the mirror's source
and its replication on each target."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Ctx, CurrentConfig, MirrorName, ObjectKey, Paging
from api.errors import responses
from api.schemas import ObjectHistory
from cloudmirror.services import failures as replications

router = APIRouter(prefix="/v1/mirrors", tags=["objects"])


@router.get("/{name}/objects/{key:path}", response_model=ObjectHistory, responses=responses(404),
            summary="A key's versions and their status on each target, oldest first")
def object_history(ctx: Ctx, config: CurrentConfig, name: MirrorName, key: ObjectKey, page: Paging) -> dict:
    got = replications.key_history(config, ctx.ledger, name, key, after=page.position("versions"),
                                   limit=page.limit)
    return page.answer(got, mirror=name, key=key)
