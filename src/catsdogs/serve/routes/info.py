"""``/`` (API info, or the web page for browsers), ``/ui`` (the web page) and ``/model``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from catsdogs import __version__
from catsdogs.serve.dependencies import PredictorDep, StateDep
from catsdogs.serve.errors import APIError, responses
from catsdogs.serve.schemas import InfoResponse, ModelInfoResponse

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
INDEX_HTML = STATIC_DIR / "index.html"

router = APIRouter(tags=["info"])

LINKS = {
    "ui": "/ui",
    "docs": "/docs",
    "openapi": "/openapi.json",
    "health": "/health",
    "ready": "/ready",
    "model": "/model",
    "predict": "/predict",
    "predict_batch": "/predict/batch",
    "metrics": "/metrics",
}


def _page() -> FileResponse:
    if not INDEX_HTML.is_file():
        raise APIError(503, "ui_not_available", f"the web page is not installed ({INDEX_HTML} is missing)")
    # no-cache: the page is tiny and must change with the deployed version.
    return FileResponse(INDEX_HTML, media_type="text/html", headers={"Cache-Control": "no-cache"})


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept


# Sync routes: the file check is blocking I/O, so FastAPI runs them in its thread pool.
@router.get(
    "/",
    response_model=InfoResponse,
    summary="API information (browsers get the web page)",
    responses={
        200: {"content": {"text/html": {}}, "description": "JSON info, or the web page for Accept: text/html"},
        **responses(503, only={"ui_not_available"}),
    },
)
def root(request: Request, state: StateDep) -> Any:
    if _wants_html(request):
        return _page()
    return {
        "message": "Cats vs Dogs Classification API",  # the original API's greeting: its clients read it
        "name": "Cats vs Dogs API",
        "version": __version__,
        "model_version": state.predictor.version if state.predictor else None,
        "docs": LINKS["docs"],
        "health": LINKS["health"],
        "predict": LINKS["predict"],
        "links": LINKS,
    }


@router.get(
    "/ui",
    response_class=FileResponse,
    summary="The web page",
    responses={200: {"content": {"text/html": {}}}, **responses(503, only={"ui_not_available"})},
)
def ui() -> FileResponse:
    return _page()


@router.get(
    "/model",
    response_model=ModelInfoResponse,
    summary="The loaded model's metadata",
    responses=responses(503, only={"not_ready"}),
)
async def model_info(predictor: PredictorDep) -> dict[str, Any]:
    return predictor.info()
