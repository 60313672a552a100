"""What every request meets before the app does any work (GuardMiddleware, the outermost
middleware):

- A client address that failed authentication `api.auth_failures_per_minute` times within a
  sliding minute gets 429 `too_many_requests` (with `Retry-After`) for any request but the probes
  (/healthz, /readyz) until the oldest of those failures is a minute old (AuthFailures: in
  memory, per process, bounded).
- A body larger than `api.max_body_bytes` gets 413 `payload_too_large`: at once from its
  Content-Length, and while it streams in (a chunked body) -- before the app parses any of it.
- A 401 (no key, a malformed one, an unknown or revoked key) is counted in /metrics
  (cloudmirror_api_unauthenticated_total{reason}) and logged in one line that never holds the
  key; it is not written to the ledger's audit log (api/audit.py writes calls made with a valid
  key). 429s are counted with reason `rate_limited`; 413s in cloudmirror_api_body_too_large_total.
- Every response gets `X-Content-Type-Options: nosniff`, and `Cache-Control: no-store` unless
  it says otherwise (the dashboard's assets do): API answers are live data and some carry keys.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiError, error_body
from cloudmirror.metrics import API_BODY_TOO_LARGE, API_UNAUTHENTICATED

log = logging.getLogger("cloudmirror.api.guard")

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff"}
DEFAULT_CACHE_CONTROL = "no-store"
PROBES = frozenset({"/healthz", "/readyz"})  # never rate limited: an attacker must not make the service look down
AUTH_FAILURE = "auth_failure"  # request state: why the request is a 401 (set by api.deps.current_principal)


class AuthFailures:
    """Failed authentications per client address in a sliding window (default a minute).

    Memory is bounded: each client keeps at most `limit` timestamps, at most `max_clients`
    clients and `max_entries` timestamps in all are kept (the clients that failed least
    recently are forgotten first), and clients whose failures are all older than the window
    are dropped as new failures come in."""

    def __init__(self, limit: int, *, window: float = 60.0, max_clients: int = 10_000,
                 max_entries: int = 200_000, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self.max_clients, self.max_entries = max_clients, max_entries
        self.clients: OrderedDict[str, deque[float]] = OrderedDict()  # least recent failure first
        self.entries = 0

    def _prune(self, client: str, now: float) -> deque[float] | None:
        times = self.clients.get(client)
        while times and times[0] <= now - self.window:
            times.popleft()
            self.entries -= 1
        if times is not None and not times:
            del self.clients[client]
            return None
        return times

    def blocked_for(self, client: str) -> float | None:
        """Seconds until `client` may try again, or None when it is not blocked."""
        now = self.clock()
        times = self._prune(client, now)
        if times is None or len(times) < self.limit:
            return None
        return max(times[0] + self.window - now, 0.001)

    def failed(self, client: str) -> bool:
        """Record a failed authentication; True when it is the one that blocks the client."""
        now = self.clock()
        times = self._prune(client, now)
        if times is None:
            times = self.clients[client] = deque(maxlen=self.limit)
        self.clients.move_to_end(client)
        before = len(times)
        if before < self.limit:
            self.entries += 1
        times.append(now)  # the oldest falls out when `limit` are kept
        self._forget(now)
        return before == self.limit - 1

    def _forget(self, now: float) -> None:
        while self.clients:
            oldest, times = next(iter(self.clients.items()))
            stale = times[-1] <= now - self.window
            if not (stale or len(self.clients) > self.max_clients or self.entries > self.max_entries):
                return
            del self.clients[oldest]
            self.entries -= len(times)


class BodyTooLarge(ApiError):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than {limit} bytes (api.max_body_bytes)")


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


class GuardMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, auth_failures_per_minute: int,
                 failures: AuthFailures | None = None):
        self.app = app
        self.max_body = max_body_bytes
        self.failures = failures or AuthFailures(auth_failures_per_minute)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = _client(scope)
        started = False

        async def send_guarded(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if "cache-control" not in headers:
                    headers["Cache-Control"] = DEFAULT_CACHE_CONTROL
                if message["status"] == 401:
                    self._unauthenticated(scope, client)
            await send(message)

        async def refuse(status: int, message: str, headers: dict[str, str] | None = None) -> None:
            response = JSONResponse(error_body(ApiError(status, message).code, message), status_code=status,
                                    headers=headers)
            await response(scope, receive, send_guarded)

        if scope["path"] not in PROBES:
            wait = self.failures.blocked_for(client)
            if wait is not None:
                API_UNAUTHENTICATED.labels("rate_limited").inc()
                retry = math.ceil(wait)
                await refuse(429, f"too many failed authentications from {client}; try again in {retry} s",
                             {"Retry-After": str(retry)})
                return
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            API_BODY_TOO_LARGE.inc()
            await refuse(413, BodyTooLarge(self.max_body).detail)
            return

        received, refused = 0, False

        async def receive_capped() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    if not refused:
                        refused = True
                        API_BODY_TOO_LARGE.inc()
                    raise BodyTooLarge(self.max_body)  # FastAPI answers it (an HTTPException) before parsing
            return message

        try:
            await self.app(scope, receive_capped, send_guarded)
        except BodyTooLarge as e:  # read outside the routes' error handling: answer it here
            if started:
                raise
            await refuse(413, e.detail)

    def _unauthenticated(self, scope: Scope, client: str) -> None:
        reason = scope.get("state", {}).get(AUTH_FAILURE, "invalid")
        API_UNAUTHENTICATED.labels(reason).inc()
        route = scope.get("route")
        what = getattr(route, "path_format", None) or scope["path"][:200]
        log.warning("unauthenticated request from %s: %s %r (%s key)", client, scope["method"], what, reason)
        if self.failures.failed(client):
            log.warning("client %s failed authentication %d times within %g s: its requests get 429 until then",
                        client, self.failures.limit, self.failures.window)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def secure_unexpected_errors(app: FastAPI) -> None:
    """The 500 answer of an unexpected error is sent by Starlette's outermost middleware,
    around the guard: give it the same headers."""
    unexpected = app.exception_handlers[Exception]

    async def handler(request: Request, exc: Exception):
        response = await unexpected(request, exc)
        response.headers.update({**SECURITY_HEADERS, "Cache-Control": DEFAULT_CACHE_CONTROL})
        return response

    app.add_exception_handler(Exception, handler)
