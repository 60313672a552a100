"""Mirrors as they run now (kept in the ledger, seeded from the config file): GET
/v1/mirrors[/{name}] (viewer); POST /v1/mirrors, PATCH and DELETE /v1/mirrors/{name}
(admin); POST /v1/mirrors/{name}/pause|resume (operator). Every change is validated exactly
like the config file (cloudmirror.services.mirrors) and picked up by the running services without a
restart (they follow the ledger's revision)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.audit import note
from api.deps import Admin, Ctx, MirrorName, Operator, Paging
from api.errors import responses
from api.schemas import MirrorCreate, MirrorOut, MirrorUpdate, Page
from cloudmirror.services import mirrors

router = APIRouter(prefix="/v1/mirrors", tags=["mirrors"])

CHANGES = ("Running services pick the change up within a second or so (in-flight copies drain first); the "
           "config file stays as it is, and an edit of a mirror in it wins over API changes at the next start.")


@router.get("", response_model=Page[MirrorOut], summary="The mirrors, by name")
def list_mirrors(ctx: Ctx, page: Paging) -> dict:
    got = mirrors.mirrors_page(ctx.ledger, after=page.position("mirrors", str), limit=page.limit)
    return page.answer(got)


@router.get("/{name}", response_model=MirrorOut, summary="One mirror", responses=responses(404))
def get_mirror(ctx: Ctx, name: MirrorName) -> dict:
    return mirrors.get_mirror(ctx.ledger, name)


@router.post("", status_code=201, response_model=MirrorOut, responses=responses(400, 409, 422),
             summary="Create a mirror (admin)",
             description="The body is a mirror entry of the config file, validated the same way (422 names the "
                         "bad field). 409 when a mirror has the name. Answers the mirror, with `Location`. "
                         + CHANGES)
def create_mirror(ctx: Ctx, who: Admin, body: MirrorCreate, request: Request, response: Response) -> dict:
    m = mirrors.create_mirror(ctx.config, ctx.ledger, body.spec())
    note(request, f"mirror {m['name']} created (revision {m['revision']})")
    response.headers["Location"] = f"/v1/mirrors/{m['name']}"
    return m


@router.patch("/{name}", response_model=MirrorOut, responses=responses(400, 404, 409, 422),
              summary="Change a mirror (admin)",
              description="Each top-level field given replaces the old value whole (send the full `targets` "
                          "list to add one); the others stay. The result is validated like the config file. "
                          "Send the `revision` you read as `expect_revision` to have the change refused with 409 "
                          "when someone changed the mirror since. A mirror cannot be renamed. " + CHANGES)
def update_mirror(ctx: Ctx, who: Admin, name: MirrorName, body: MirrorUpdate, request: Request) -> dict:
    changes = body.changes()
    m = mirrors.update_mirror(ctx.config, ctx.ledger, name, changes, expect_revision=body.expect_revision)
    note(request, f"mirror {name} changed: {', '.join(sorted(changes))} (revision {m['revision']})")
    return m


@router.delete("/{name}", status_code=204, response_class=Response, responses=responses(404, 409),
               summary="Delete a mirror (admin)",
               description="Replication stops (in-flight copies drain); what was copied stays on the targets and "
                           "the mirror's history stays in the ledger. 409 when a consistency group of the config "
                           "file names it. A mirror of the config file comes back at the next start unless it is "
                           "removed from the file too.")
def delete_mirror(ctx: Ctx, who: Admin, name: MirrorName, request: Request) -> Response:
    mirrors.delete_mirror(ctx.config, ctx.ledger, name)
    note(request, f"mirror {name} deleted")
    return Response(status_code=204)


def _set_paused(ctx: Ctx, name: str, paused: bool, request: Request) -> dict:
    before = mirrors.get_mirror(ctx.ledger, name)
    m = mirrors.set_paused(ctx.config, ctx.ledger, name, paused)
    word = "paused" if paused else "resumed"
    note(request, f"mirror {name} {word}" if m["revision"] != before["revision"]
         else f"mirror {name} was already {'paused' if paused else 'running'}")
    return m


@router.post("/{name}/pause", response_model=MirrorOut, responses=responses(404),
             summary="Pause a mirror (operator)",
             description="No new copies start (in-flight ones finish); source writes are still recorded, so "
                         "nothing is lost and the RPO grows until it is resumed. Idempotent.")
def pause(ctx: Ctx, who: Operator, name: MirrorName, request: Request) -> dict:
    return _set_paused(ctx, name, True, request)


@router.post("/{name}/resume", response_model=MirrorOut, responses=responses(404),
             summary="Resume a paused mirror (operator)",
             description="Copies start again, oldest writes first. Idempotent.")
def resume(ctx: Ctx, who: Operator, name: MirrorName, request: Request) -> dict:
    return _set_paused(ctx, name, False, request)
