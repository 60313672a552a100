"""The dashboard: an HTML page at `/` with its script and style (api/static; no build step,
nothing fetched from elsewhere).

Open like /docs: the page shell holds no data. It asks for an API key (kept in the tab's
sessionStorage, or taken from `#key=...` in the URL fragment, which browsers never send) and
calls the /v1 routes with `Authorization: Bearer`, so every figure it shows needs a viewer key.

The routes are plain Starlette routes, outside the OpenAPI document (they are not API
operations)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse

STATIC = Path(__file__).resolve().parent.parent / "static"
# only what the page needs: nothing here reads a path from the request
ASSETS = {
    "/": ("dashboard.html", "text/html; charset=utf-8"),
    "/ui/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/ui/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
HEADERS = {
    # the page runs its own script and talks to this origin only
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag): a new version shows up at the next load
}

router = APIRouter(tags=["dashboard"])


def _serve(filename: str, media_type: str):
    async def serve(request: Request) -> FileResponse:
        return FileResponse(STATIC / filename, media_type=media_type, headers=HEADERS)

    serve.__name__ = f"dashboard_{filename.replace('.', '_')}"
    return serve


for _path, (_file, _type) in ASSETS.items():
    router.add_route(_path, _serve(_file, _type), methods=["GET", "HEAD"], include_in_schema=False)
