"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with their JS and CSS served by us, never from a CDN.

FastAPI's default pages load Swagger UI and ReDoc from jsDelivr, so they are blank without internet
(an air-gapped cluster, a laptop on a train). The assets come from the pinned ``fastapi-offline`` package,
which ships them; we use its files only, with FastAPI's own page builders.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from catsdogs.serve.errors import APIError

ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
ASSETS_URL = "/docs/assets"
# ReDoc always shows a "Redocly" logo from its CDN (and hides it when that fails): keep images to this server,
# so the pages make no outside request at all.
NO_OUTSIDE_IMAGES = {"Content-Security-Policy": "img-src 'self' data: blob:"}

router = APIRouter(include_in_schema=False)


def _root(request: Request) -> str:
    # Behind a path-prefixing proxy (root_path), every URL of the page must carry the prefix.
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    page = get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None},  # never ask an online validator about our spec
    )
    page.headers.update(NO_OUTSIDE_IMAGES)
    return page


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    page = get_redoc_html(
        openapi_url=f"{root}/openapi.json",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        with_google_fonts=False,
    )
    page.headers.update(NO_OUTSIDE_IMAGES)
    return page


# Sync: FileResponse stats the file (blocking I/O), so FastAPI runs it in its thread pool.
@router.get(ASSETS_URL + "/{name}")
def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise APIError(404, "not_found", f"no documentation asset named {name!r}")
    # The files change only with the pinned package version: let browsers keep them for a day.
    return FileResponse(ASSETS_DIR / name, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})
