"""Liveness (``/health``) and readiness (``/ready``) probes.

The bodies carry the original API's fields (``model_loaded``, ``timestamp``, ``version``; ``ready``,
``device``) beside ours, so clients and dashboards written for it keep working.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from catsdogs import __version__
from catsdogs.serve.dependencies import StateDep
from catsdogs.serve.schemas import HealthResponse, NotReadyResponse, ReadyResponse, UnhealthyResponse
from catsdogs.serve.state import ServiceState

router = APIRouter(tags=["health"])
DEVICE = "cpu"  # onnxruntime's CPU execution provider is the only one the service uses


def _liveness(state: ServiceState) -> dict[str, Any]:
    return {
        "model_loaded": state.predictor is not None,
        "timestamp": datetime.now(UTC).isoformat(),
        "version": __version__,
    }


def _not_ready(reason: str, code: str = "not_ready") -> dict[str, Any]:
    return {"status": "not ready", "ready": False, "device": DEVICE, "reason": reason, "detail": reason, "code": code}


@router.get(
    "/health",
    response_model=HealthResponse,
    summary="Liveness: the process serves requests",
    responses={503: {"model": UnhealthyResponse, "description": "The model failed to load: restart the process."}},
)
async def health(state: StateDep) -> HealthResponse | JSONResponse:
    # Loading is healthy (readiness gates traffic); a failed load is not, so an orchestrator restarts us.
    if state.status == "failed":
        body = {"status": "unhealthy", **_liveness(state), "reason": state.reason}
        return JSONResponse({**body, "detail": state.reason, "code": "model_load_failed"}, status_code=503)
    return HealthResponse(status="healthy", **_liveness(state))


@router.get(
    "/ready",
    response_model=ReadyResponse,
    response_model_exclude_none=True,
    summary="Readiness: the model is loaded and warmed up",
    responses={
        503: {
            "model": NotReadyResponse,
            "description": "Not ready, with the reason.",
            "content": {"application/json": {"example": _not_ready("the model is loading")}},
        }
    },
)
async def ready(state: StateDep) -> ReadyResponse | JSONResponse:
    predictor = state.predictor
    if state.draining:  # first step of a graceful shutdown: the load balancer stops sending traffic
        return JSONResponse({"status": "not ready", "reason": "the server is shutting down"}, status_code=503)
    if not state.ready or predictor is None:
        return JSONResponse(_not_ready(state.reason), status_code=503)
    return ReadyResponse(
        status="ready",
        ready=True,
        device=DEVICE,
        model=f"{predictor.name}:{predictor.version}",
        model_version=predictor.version,
        backend=predictor.backend,
    )
