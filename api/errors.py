"""Every error the API answers is JSON `{"error": {"code": "...", "message": "..."}}` with the
right status: 401 unauthorized, 403 forbidden, 404 not_found, 409 conflict, 422
validation_error (request validation included, naming the field), 503 unavailable (the server
cannot serve it now), never a 500 for bad input.
Service errors (cloudmirror.errors) are mapped here, so routes just call the service."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import ErrorResponse
from cloudmirror.errors import ConflictError, Forbidden, InvalidInput, NotFoundError, RequestError, Unavailable
from cloudmirror.policy import PolicyRefused
from cloudmirror.redact import redact, redact_obj

log = logging.getLogger("cloudmirror.api")

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         406: "not_acceptable", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
         422: "validation_error", 429: "too_many_requests", 500: "internal", 503: "unavailable"}
# service errors (cloudmirror.errors) by their code; anything else a service refuses is a 400
STATUS = {NotFoundError.code: 404, ConflictError.code: 409, InvalidInput.code: 422, Unavailable.code: 503,
          Forbidden.code: 403, PolicyRefused.code: 422}


class ApiError(StarletteHTTPException):
    """An HTTP error with a machine-readable code (default: from the status)."""

    def __init__(self, status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(status, message, headers=headers)
        self.code = code or CODES.get(status, "error")


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": "Bearer"})


def error_body(code: str, message: str, **extra: Any) -> dict:
    return {"error": {"code": code, "message": message, **extra}}


def _respond(request: Request, status: int, code: str, message: str, headers: dict | None = None,
             **extra: Any) -> JSONResponse:
    # no secret leaves in an answer (a message may quote a location, a header or the input)
    message, extra = redact(message), redact_obj(extra)
    request.state.audit_detail = f"{code}: {message}"[:500]  # the audit log says why it failed
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


def field_name(loc: tuple | list) -> str:
    """('body', 'target') -> 'body.target'; ('query', 'limit') -> 'query.limit'."""
    return ".".join(str(p) for p in loc) or "request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = getattr(exc, "code", None) or CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        return _respond(request, exc.status_code, code, message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        fields = []
        for e in exc.errors():
            msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            fields.append({"field": field_name(e.get("loc", ())), "message": msg})
        first = fields[0] if fields else {"field": "request", "message": "invalid"}
        more = f" (and {len(fields) - 1} more)" if len(fields) > 1 else ""
        return _respond(request, 422, "validation_error", f"{first['field']}: {first['message']}{more}",
                        fields=fields)

    @app.exception_handler(RequestError)
    async def _service(request: Request, exc: RequestError):
        status = STATUS.get(exc.code, 400)
        extra = {"fields": [{"field": exc.field, "message": exc.reason}]} if isinstance(exc, InvalidInput) else {}
        return _respond(request, status, exc.code, exc.message, **extra)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return _respond(request, 500, "internal", f"internal error ({type(exc).__name__}); see the server log")


def responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI documentation of error responses, for `responses=` of a route or router."""
    about = {400: "Bad request", 401: "Missing, unknown or revoked API key (`WWW-Authenticate: Bearer`)",
             403: "The key's role does not allow this", 404: "Not found", 409: "Conflict with the current state",
             422: "Invalid input; `fields` names each bad field", 503: "Not ready"}
    out: dict[int | str, dict] = {}
    for s in statuses:
        code = CODES[s]
        out[s] = {"model": ErrorResponse, "description": about.get(s, code),
                  "content": {"application/json": {"example": error_body(code, about.get(s, code))}}}
    return out
