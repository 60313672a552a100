"""The audit log of the API: every mutating call (POST, PUT, PATCH, DELETE) made with a valid
API key, whatever its outcome (403, 404, 422 and 500 included), is written before its response
starts -- so a client that saw an answer can rely on the entry being there.

Calls without a valid key (401, and the 413s and 429s answered before authentication) are not
written: anyone can send them, and each entry is a write transaction competing with
replication. They are counted in /metrics and logged instead (api/guard.py).

Who: the API key's name and id. Action: the method and the
route template (`POST /v1/mirrors/{name}/reconcile`; the path itself when no route matched).
Target: the concrete path (`/v1/mirrors/photos/reconcile`). Detail: the error's code and
message, or what the route said with `note(request, ...)` (e.g. the job it started).
A failure to write the entry is logged and does not change the answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudmirror.ledger.repo import Ledger
from cloudmirror.services import access

log = logging.getLogger("cloudmirror.api.audit")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def note(request: Request, detail: str) -> None:
    """What a route adds to its audit entry (e.g. `job 7 queued`)."""
    request.state.audit_detail = detail


class AuditMiddleware:
    def __init__(self, app: ASGIApp, ledger: Callable[[], Ledger | None]):
        self.app = app
        self.ledger = ledger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        written = False

        async def record(status: int) -> None:
            nonlocal written
            if written:
                return
            written = True
            await self._write(scope, state, status)

        async def send_audited(message: Message) -> None:
            if message["type"] == "http.response.start":
                await record(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_audited)
        except Exception as e:
            state.setdefault("audit_detail", f"internal: {type(e).__name__}")
            await record(500)
            raise

    async def _write(self, scope: Scope, state: dict, status: int) -> None:
        ledger = self.ledger()
        principal = state.get("principal")
        if ledger is None or principal is None:  # not started (no lifespan), or no valid key: not audited
            return
        route = scope.get("route")
        template = getattr(route, "path_format", None) or getattr(route, "path", None) or scope["path"]
        client = scope.get("client")
        try:
            await asyncio.to_thread(
                access.audit, ledger, actor=principal.name, key_id=principal.key_id,
                action=f"{scope['method']} {template}",
                target=scope["path"], status=status,
                detail=state.get("audit_detail"), client=client[0] if client else None)
        except Exception as e:  # noqa: BLE001 - the call already happened; say loudly that it is not recorded
            log.error("could not write the audit entry of %s %s (%s): %s", scope["method"], scope["path"], status, e)
