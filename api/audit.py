"""The audit log of the API: every mutating call (POST, PUT, PATCH, DELETE), whatever its
outcome (401, 403, 404, 422 and 500 included), is written before its response starts --
so a client that saw an answer can rely on the entry being there.

Who: the API key's name and id (`anonymous` without a valid key). Action: the method and the
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
        if ledger is None:  # the app is not started (no lifespan): nothing to write to
            return
        route = scope.get("route")
        template = getattr(route, "path_format", None) or getattr(route, "path", None) or scope["path"]
        principal = state.get("principal")
        client = scope.get("client")
        try:
            await asyncio.to_thread(
                access.audit, ledger, actor=principal.name if principal else "anonymous",
                key_id=principal.key_id if principal else None, action=f"{scope['method']} {template}",
                target=scope["path"], status=status,
                detail=state.get("audit_detail"), client=client[0] if client else None)
        except Exception as e:  # noqa: BLE001 - the call already happened; say loudly that it is not recorded
            log.error("could not write the audit entry of %s %s (%s): %s", scope["method"], scope["path"], status, e)
