"""``POST /admin/reload``: load a model and swap it in atomically (Bearer token; 404 when disabled)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from pydantic import ValidationError

from catsdogs.inference.predictor import ModelLoadError
from catsdogs.serve.dependencies import AdminDep, StateDep
from catsdogs.serve.errors import APIError, responses
from catsdogs.serve.schemas import ReloadRequest, ReloadResponse

log = logging.getLogger("catsdogs.serve")

# The error codes this route answers with (its OpenAPI responses); 413 is the request-body limit of every POST.
RELOAD_ERRORS = {"model_load_failed", "unauthorized", "forbidden", "not_found", "too_large", "unsupported_media_type"}

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])

# The body is parsed by hand, after the token check (FastAPI parses a declared body before the
# dependencies run, so a stranger could probe the parser); it is documented here instead.
_BODY_DOC = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": ReloadRequest.model_json_schema()}},
    }
}


async def _reload_request(request: Request) -> ReloadRequest | None:
    raw = await request.body()
    if not raw.strip():
        return None
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        sent = content_type or "no content type"
        raise APIError(415, "unsupported_media_type", f"send the reload request as application/json, not {sent}")
    try:
        return ReloadRequest.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise APIError(422, "invalid_request", f"invalid reload request: {problems}") from exc


@router.post(
    "/reload",
    response_model=ReloadResponse,
    summary="Reload the model (e.g. after the registry alias moved) without dropping requests",
    responses=responses(400, 401, 403, 404, 413, 415, 422, only=RELOAD_ERRORS),
    openapi_extra=_BODY_DOC,
)
async def reload(state: StateDep, request: Request) -> ReloadResponse:
    """Loads, validates and warms the new model fully, then swaps the reference; requests in flight finish
    on the old one. On failure (400 with the reason) the current model keeps serving."""
    body = await _reload_request(request)
    target = (body.model_path if body else None) or state.settings.model_path
    async with state.reload_lock:
        previous = state.predictor.version if state.predictor else None
        try:
            predictor, ms = await state.load(target)
        except ModelLoadError as exc:
            log.warning("model reload failed: %s", exc)
            raise APIError(400, "model_load_failed", f"cannot load the requested model: {exc}") from exc
    log.info("model reloaded", extra={"model_version": predictor.version, "previous_version": previous})
    return ReloadResponse(
        status="reloaded",
        previous_version=previous,
        model_version=predictor.version,
        backend=predictor.backend,
        source=predictor.source,
        load_time_ms=round(ms, 1),
    )
