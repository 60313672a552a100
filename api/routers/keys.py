"""API keys (admin): GET /v1/keys, POST /v1/keys (the token is in the answer, once),
DELETE /v1/keys/{id} (revoke; idempotent)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.audit import note
from api.deps import Admin, Ctx, Paging, RowId
from api.errors import responses
from api.schemas import ApiKey, ApiKeyCreate, ApiKeyCreated, Page
from cloudmirror.services import access

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.get("", response_model=Page[ApiKey], summary="API keys, revoked ones included (admin)")
def list_keys(ctx: Ctx, who: Admin, page: Paging) -> dict:
    got = access.list_keys(ctx.ledger, after=page.position("keys"), limit=page.limit)
    return page.answer(got)


@router.post("", status_code=201, response_model=ApiKeyCreated, responses=responses(400, 409, 422),
             summary="Create an API key (admin)",
             description="The token is returned once; only its SHA-256 is stored. 409 when an active key has "
                         "the name.")
def create_key(ctx: Ctx, who: Admin, body: ApiKeyCreate, request: Request) -> dict:
    token, key = access.create_key(ctx.ledger, body.name, body.role)
    note(request, f"key {key['id']} ({key['name']}) role={key['role']}")
    return {"key": key, "token": token}


@router.delete("/{key_id}", response_model=ApiKey, responses=responses(404),
               summary="Revoke an API key (admin)", description="It stops working at once. Idempotent.")
def revoke_key(ctx: Ctx, who: Admin, key_id: RowId, request: Request) -> dict:
    key, changed = access.revoke_key(ctx.ledger, key_id)
    note(request, f"key {key_id} ({key['name']}) " + ("revoked" if changed else "was already revoked"))
    return key
