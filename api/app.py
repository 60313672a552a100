"""The REST API (FastAPI): thin routes over the service functions, one router per resource
(api/routers), `Annotated` dependencies (api/deps.py), pydantic bodies (api/schemas.py).

Access: bearer API keys with roles viewer < operator < admin on every route but /healthz,
/readyz and the API's own documentation (/docs, /redoc, /openapi.json). Errors: JSON
`{"error": {"code", "message"}}` (api/errors.py). Mutating calls with a valid key are audited
(api/audit.py). Before any of it (api/guard.py): the body cap (413), the limit on failed
authentications per client (429), the count and log of 401s, the security headers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi

from api.audit import AuditMiddleware
from api.deps import ApiContext, require_viewer
from api.errors import install_error_handlers, responses
from api.guard import GuardMiddleware, secure_unexpected_errors
from api.routers import OPEN, PROTECTED
from api.routers import failover as failover_routes
from cloudmirror.config import Config
from cloudmirror.ledger.repo import Ledger
from cloudmirror.services import mirrors
from cloudmirror.services.jobs import JobRunner
from cloudmirror.services.metrics import install_metrics
from cloudmirror.services.runtime import ApiService, Service

DESCRIPTION = """Near-real-time mirrors of object storage across regions and providers.

**Auth**: send an API key as `Authorization: Bearer cm_...` (create one with
`cloudmirror keys create --name N --role viewer|operator|admin`). Roles: `viewer` reads,
`operator` also retries, reconciles and fails over, `admin` also manages keys and config.
Only `/healthz`, `/readyz` and these docs are open.

**Errors**: `{"error": {"code": "...", "message": "..."}}` with 401 `unauthorized`,
403 `forbidden`, 404 `not_found`, 409 `conflict`, 413 `payload_too_large` (a body over
`api.max_body_bytes`), 422 `validation_error` (with `fields`), 429 `too_many_requests`
(too many failed authentications from the client: see `Retry-After`).

**Lists**: `?limit=1..1000&cursor=...`; answers `{"items": [...], "next_cursor": ...}`
(null on the last page).

**Audit**: every POST/PUT/PATCH/DELETE made with a valid key, failed ones included, is in
`GET /v1/audit`; requests without a valid key are counted in `/metrics` and logged.
"""


def create_app(config: Config, ledger: Ledger | None = None, *, service: Service | None = None) -> FastAPI:
    """The API over `ledger` (default: one opened on config.ledger for the app's lifetime).
    `service` is the process's Service when the API runs beside the workers (its stores are
    reused and reconciles wake its workers; it has seeded the mirrors); by default the app
    builds its own and seeds the ledger's mirrors from `config` at startup (idempotent: the
    file wins only where it changed, see mirrors.seed). The routes see the mirrors as they
    are in the ledger now (api.deps.CurrentConfig)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_ledger = ledger is None
        led = Ledger(config.ledger) if own_ledger else ledger
        svc = service if service is not None else ApiService(config, ledger=led)
        runner = JobRunner(svc)
        try:
            if service is None:
                await asyncio.to_thread(mirrors.seed, config, led)
            await runner.open()
            install_metrics(config, led)  # the ledger's RPO, backlog and failures on /metrics, current mirrors
            app.state.ctx = ApiContext(config=config, ledger=led, jobs=runner, follows_mirrors=service is None)
            yield
        finally:
            await runner.close()
            if service is None:
                await svc.close()
            if own_ledger:
                led.close()

    app = FastAPI(title="cloudmirror", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    install_error_handlers(app)
    secure_unexpected_errors(app)
    app.add_middleware(AuditMiddleware, ledger=lambda: getattr(getattr(app.state, "ctx", None), "ledger", None))
    app.add_middleware(GuardMiddleware, max_body_bytes=config.api.max_body_bytes,  # outermost: added last
                       auth_failures_per_minute=config.api.auth_failures_per_minute)
    for router in OPEN:
        app.include_router(router)
    for router in [*PROTECTED, failover_routes.router]:
        app.include_router(router, dependencies=[Depends(require_viewer)], responses=responses(401, 403))
    app.openapi = lambda: _openapi(app)
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document, with its own 422 body (HTTPValidationError) replaced by ours."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        ours = responses(422)[422]
        for path in schema.get("paths", {}).values():
            for op in path.values():
                got = op.get("responses", {}).get("422")
                if got and "HTTPValidationError" in str(got):
                    op["responses"]["422"] = {"description": ours["description"], "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/ErrorResponse"},
                        "example": ours["content"]["application/json"]["example"]}}}
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema
