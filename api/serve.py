"""The REST API served beside a running Service, in the same process.

The library never imports `api`: the CLI (`cloudmirror run | api`) finds `api_beside` through
the `cloudmirror.api` entry point (pyproject.toml), so the dependency points from the API to
the service, and `cloudmirror run --no-api` needs no API code at all."""

from __future__ import annotations

import asyncio
import socket

from api.app import create_app
from cloudmirror.services.runtime import Service


def api_beside(sock: socket.socket, tls: dict[str, str] | None = None):
    """The REST API as a task beside the service: the app reuses the service's stores and
    ledger and wakes its workers; it stops when the service does. `sock`: bound already;
    `tls`: uvicorn's ssl_certfile / ssl_keyfile, or nothing for plain HTTP."""

    async def serve(svc: Service, stop: asyncio.Event) -> None:
        import uvicorn

        app = create_app(svc.base_config, svc.ledger, service=svc)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **(tls or {})))
        server.install_signal_handlers = lambda: None  # the service owns signals
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        await stop.wait()
        server.should_exit = True
        await serving

    return serve
