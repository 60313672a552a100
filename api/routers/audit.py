"""GET /v1/audit (operator): who changed what, when, and how it went."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Ctx, FilterStr, Operator, Paging
from api.schemas import AuditEntry, Page
from cloudmirror.services import access

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=Page[AuditEntry], summary="The audit log, newest first (operator)",
            description="Every mutating API call (failed ones included) and every key created or revoked with "
                        "the CLI. `actor` filters by key name (`cli`, `anonymous`); `action` by prefix "
                        "(`POST /v1/failures`).")
def list_audit(ctx: Ctx, who: Operator, page: Paging, actor: FilterStr = None, action: FilterStr = None) -> dict:
    got = access.list_audit(ctx.ledger, before=page.position("audit"), limit=page.limit, actor=actor, action=action)
    return page.answer(got)
