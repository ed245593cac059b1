"""Liveness (``/health``) and readiness (``/ready``) probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from catsdogs.serve.dependencies import StateDep
from catsdogs.serve.schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=HealthResponse,
    summary="Liveness: the process serves requests",
    responses={503: {"model": ReadyResponse, "description": "The model failed to load: restart the process."}},
)
async def health(state: StateDep) -> HealthResponse | JSONResponse:
    # Loading is healthy (readiness gates traffic); a failed load is not, so an orchestrator restarts us.
    if state.status == "failed":
        return JSONResponse({"status": "unhealthy", "reason": state.reason}, status_code=503)
    return HealthResponse(status="healthy")


@router.get(
    "/ready",
    response_model=ReadyResponse,
    response_model_exclude_none=True,
    summary="Readiness: the model is loaded and warmed up",
    responses={
        503: {
            "model": ReadyResponse,
            "description": "Not ready, with the reason.",
            "content": {"application/json": {"example": {"status": "not ready", "reason": "the model is loading"}}},
        }
    },
)
async def ready(state: StateDep) -> ReadyResponse | JSONResponse:
    predictor = state.predictor
    if state.draining:  # first step of a graceful shutdown: the load balancer stops sending traffic
        return JSONResponse({"status": "not ready", "reason": "the server is shutting down"}, status_code=503)
    if not state.ready or predictor is None:
        return JSONResponse({"status": "not ready", "reason": state.reason}, status_code=503)
    return ReadyResponse(status="ready", model_version=predictor.version, backend=predictor.backend)
