"""Dependencies of the routes, as `Annotated` aliases: the app's context (config, ledger, job
runner), the mirrors as they run now (CurrentConfig), the caller's role (Viewer / Operator /
Admin) and pagination (Paging)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError, unauthorized
from api.guard import AUTH_FAILURE
from cloudmirror.config import Config
from cloudmirror.errors import InvalidInput
from cloudmirror.ledger.repo import Ledger
from cloudmirror.paging import DEFAULT_LIMIT, MAX_LIMIT
from cloudmirror.services import access, mirrors
from cloudmirror.services.access import Principal, Role
from cloudmirror.services.jobs import JobRunner


@dataclass
class ApiContext:
    """What the routes work with; built in the app's lifespan. `config` is the config file;
    the mirrors as they run now are in the ledger (use CurrentConfig). `follows_mirrors`: the
    job runner's Service is the app's own and is kept on the current mirrors by CurrentConfig
    (a Service running beside the API, in `run`, follows them itself)."""

    config: Config
    ledger: Ledger
    jobs: JobRunner
    follows_mirrors: bool = False


def get_context(request: Request) -> ApiContext:
    return request.app.state.ctx


Ctx = Annotated[ApiContext, Depends(get_context)]


async def current_config(ctx: Ctx) -> Config:
    """The config file with the ledger's mirrors as they run now (mirrors.serving_config:
    cached per revision, one small query per request; 503 when they no longer fit)."""
    config = await asyncio.to_thread(mirrors.serving_config, ctx.config, ctx.ledger)
    if ctx.follows_mirrors:
        ctx.jobs.service.config = config  # reconciles started now see a mirror created a moment ago
    return config


CurrentConfig = Annotated[Config, Depends(current_config)]

bearer = HTTPBearer(auto_error=False, scheme_name="apiKey", bearerFormat="cm_...",
                    description="An API key: `Authorization: Bearer cm_...`. Create one with "
                                "`cloudmirror keys create --name N --role viewer|operator|admin`.")


def current_principal(request: Request, ctx: Ctx,
                      creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """The caller's API key. 401 when missing, unknown or revoked (api.guard counts and logs
    it, with the reason noted here, and limits the failures a client may make)."""
    if creds is None:
        present = "authorization" in request.headers
        setattr(request.state, AUTH_FAILURE, "malformed" if present else "missing")
        raise unauthorized("missing API key: send `Authorization: Bearer <key>`")
    principal = access.authenticate(ctx.ledger, creds.credentials)
    if principal is None:
        setattr(request.state, AUTH_FAILURE, "invalid")
        raise unauthorized("invalid or revoked API key")
    request.state.principal = principal  # for the audit log
    return principal


def require(role: Role):
    """A dependency that lets through keys of `role` or above (403 otherwise)."""

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.can(role):
            raise ApiError(403, f"this needs the {role.name} role; key {principal.name!r} is a {principal.role.name}")
        return principal

    check.__name__ = f"require_{role.name}"
    check.role = role  # type: ignore[attr-defined] - read by the test that every route is protected
    return check


require_viewer = require(Role.viewer)
require_operator = require(Role.operator)
require_admin = require(Role.admin)
Viewer = Annotated[Principal, Depends(require_viewer)]
Operator = Annotated[Principal, Depends(require_operator)]
Admin = Annotated[Principal, Depends(require_admin)]


# ------------------------------------------------------------------ pagination
def encode_cursor(kind: str, position: Any) -> str | None:
    """An opaque cursor for the position to continue after (None: no next page)."""
    if position is None:
        return None
    return base64.urlsafe_b64encode(json.dumps([kind, position]).encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None, type_: type = int) -> Any:
    """The position a cursor of `kind` stands for. Raises InvalidInput (422) for anything
    this API did not hand out for that list."""
    if cursor is None:
        return None
    try:
        got_kind, position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if got_kind != kind or type(position) is not type_:
            raise ValueError
        return position
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("query.cursor", "not a cursor returned by this list (use next_cursor as given)") from None


@dataclass
class PageParams:
    """`limit` and `cursor` of a list request. A route reads the position to continue after
    with `position(kind)` (422 for a cursor of another list), hands it to the service, and
    answers the service's Page with `answer(page)`."""

    limit: int
    cursor: str | None
    kind: str = ""

    def position(self, kind: str, type_: type = int) -> Any:
        self.kind = kind
        return decode_cursor(kind, self.cursor, type_)

    def answer(self, page: Any, **extra: Any) -> dict:
        """{**extra, "items", "next_cursor"} for a service's Page of this list."""
        return {**extra, "items": page.items, "next_cursor": encode_cursor(self.kind, page.next_after)}


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page (1..{MAX_LIMIT}).")]
Cursor = Annotated[str | None, Query(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_-]+$",
                                     description="`next_cursor` of the previous page (opaque); omit for the first.")]


def page_params(limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> PageParams:
    return PageParams(limit, cursor)


Paging = Annotated[PageParams, Depends(page_params)]


# ------------------------------------------------------------------ path and query parameters
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL: refused as input, never a 500
MirrorName = Annotated[str, Path(min_length=1, max_length=64, description="The mirror's name.",
                                 examples=["photos"])]
ObjectKey = Annotated[str, Path(min_length=1, max_length=4096, pattern=NO_NUL,
                                description="The key, relative to the mirror's source prefix.",
                                examples=["2026/11/a.jpg"])]
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]
FilterStr = Annotated[str | None, Query(min_length=1, max_length=1024, pattern=NO_NUL)]
