"""``POST /admin/reload``: load a model and swap it in atomically (Bearer token; 404 when disabled)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Body

from catsdogs.predictor import ModelLoadError
from catsdogs.serve.dependencies import AdminDep, StateDep
from catsdogs.serve.errors import APIError, responses
from catsdogs.serve.schemas import ReloadRequest, ReloadResponse

log = logging.getLogger("catsdogs.serve")

# The error codes this route answers with (its OpenAPI responses); 413 is the request-body limit of every POST.
RELOAD_ERRORS = {"model_load_failed", "unauthorized", "forbidden", "not_found", "too_large", "unsupported_media_type"}

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])


@router.post(
    "/reload",
    response_model=ReloadResponse,
    summary="Reload the model (e.g. after the registry alias moved) without dropping requests",
    responses=responses(400, 401, 403, 404, 413, 415, 422, only=RELOAD_ERRORS),
)
async def reload(state: StateDep, body: Annotated[ReloadRequest | None, Body()] = None) -> ReloadResponse:
    """Loads and warms the new model fully, then swaps the reference; requests in flight finish on the old one.
    On failure the current model keeps serving."""
    target = (body.model_path if body else None) or state.settings.model_path
    async with state.reload_lock:
        previous = state.predictor.version if state.predictor else None
        try:
            predictor, ms = await state.load(target)
        except ModelLoadError as exc:
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
