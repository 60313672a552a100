"""FastAPI app: thin routes over the service functions. (The full /v1 API is issue 5.)"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloudmirror import service
from cloudmirror.config import Config
from cloudmirror.ledger.repo import Ledger


def create_app(config: Config, ledger: Ledger) -> FastAPI:
    app = FastAPI(title="cloudmirror", version="0.1.0")

    @app.exception_handler(HTTPException)
    async def _errors(_req: Request, exc: HTTPException):
        return JSONResponse({"error": {"code": str(exc.status_code), "message": exc.detail}}, status_code=exc.status_code)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        try:
            ledger.backlog()
        except Exception as e:  # noqa: BLE001
            raise HTTPException(503, f"ledger unreachable: {e}") from None
        return {"status": "ready"}

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/status")
    def status():
        return {"targets": service.status(config, ledger)}

    return app
