"""Dead letters: GET /v1/dead-letters and /v1/dead-letters/{id} (viewer),
POST /v1/dead-letters/{id}/redrive and /v1/dead-letters/{id}/discard (operator, audited)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from api.audit import note
from api.deps import Ctx, CurrentConfig, FilterStr, Operator, Paging, RowId
from api.errors import responses
from api.schemas import DeadLetter, DeadLetterDetail, DeadLetterRedriven, Page
from cloudmirror.services import dead_letters as service

router = APIRouter(prefix="/v1/dead-letters", tags=["dead letters"])

StatusFilter = Annotated[Literal["pending", "redriven", "discarded", "all"],
                         Query(description="Which ones: pending (default), redriven, discarded or all.")]
FeedFilter = Annotated[FilterStr, Query(description="Only this feed's (its address as listed in `feed`).")]


@router.get("", response_model=Page[DeadLetter], summary="Messages the intake could not use, newest first")
def list_dead_letters(ctx: Ctx, page: Paging, status: StatusFilter = "pending", feed: FeedFilter = None) -> dict:
    got = service.list_dead_letters(ctx.ledger, status=status, feed=feed, before=page.position("dead-letters"),
                                    limit=page.limit)
    return page.answer(got)


@router.get("/{dead_letter_id}", response_model=DeadLetterDetail, responses=responses(404),
            summary="One dead letter with its body")
def get_dead_letter(ctx: Ctx, dead_letter_id: RowId) -> dict:
    return service.get_dead_letter(ctx.ledger, dead_letter_id)


@router.post("/{dead_letter_id}/redrive", response_model=DeadLetterRedriven, responses=responses(404, 409),
             summary="Parse a dead letter again and record its versions (operator)",
             description="Parses the stored body with its feed's parser; when it now announces versions for a "
                         "mirror (e.g. one created for its bucket since), records them as the intake does and "
                         "marks the dead letter redriven. 409 with the reason when it still cannot be parsed, has "
                         "nothing for any mirror, or is not pending; it then stays as it was.")
async def redrive(ctx: Ctx, config: CurrentConfig, who: Operator, dead_letter_id: RowId, request: Request) -> dict:
    row = await asyncio.to_thread(service.redrive, config, ctx.ledger, dead_letter_id, by=who.name)
    note(request, f"dead letter {dead_letter_id} of {row['feed']}: {row['recorded']} version(s) recorded")
    return row


@router.post("/{dead_letter_id}/discard", response_model=DeadLetterDetail, responses=responses(404, 409),
             summary="Discard a dead letter (operator)",
             description="Marks it discarded; it stays listed under ?status=discarded for audit. 409 when it is "
                         "not pending.")
def discard(ctx: Ctx, who: Operator, dead_letter_id: RowId, request: Request) -> dict:
    row = service.discard(ctx.ledger, dead_letter_id, by=who.name)
    note(request, f"dead letter {dead_letter_id} of {row['feed']} discarded")
    return row
