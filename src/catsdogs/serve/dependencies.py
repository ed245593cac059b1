"""FastAPI dependencies and their typed aliases (``PredictorDep``, ``SettingsDep``, ...).

All are ``async def``: they never block, and FastAPI would run a plain ``def`` dependency in its
thread pool, a thread hop per dependency per request.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from catsdogs.inference.predictor import Predictor
from catsdogs.serve.errors import APIError
from catsdogs.serve.metrics import Metrics
from catsdogs.serve.settings import Settings
from catsdogs.serve.state import ServiceState


async def get_state(request: Request) -> ServiceState:
    return request.app.state.service


async def get_settings(state: Annotated[ServiceState, Depends(get_state)]) -> Settings:
    return state.settings


async def get_metrics(state: Annotated[ServiceState, Depends(get_state)]) -> Metrics:
    return state.metrics


async def get_predictor(state: Annotated[ServiceState, Depends(get_state)]) -> Predictor:
    """The current predictor, taken once per request (a reload mid-request does not affect it)."""
    predictor = state.predictor
    if not state.ready or predictor is None:
        raise APIError(503, "not_ready", state.reason or "the model is not ready", headers={"Retry-After": "5"})
    return predictor


def request_id(request: Request) -> str:
    """The id the request middleware gave this request (echoed in X-Request-ID)."""
    return request.scope.get("state", {}).get("request_id", "")


_bearer = HTTPBearer(auto_error=False, description="The admin token (CATSDOGS_ADMIN_TOKEN).")


async def require_admin(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if not settings.admin_enabled or settings.admin_token is None:
        raise APIError(404, "not_found", "admin API disabled: set CATSDOGS_ADMIN_TOKEN to enable it")
    if credentials is None:
        raise APIError(
            401,
            "unauthorized",
            "send the admin token as 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    expected = settings.admin_token.get_secret_value().encode()
    if not secrets.compare_digest(credentials.credentials.encode(), expected):
        raise APIError(403, "forbidden", "wrong admin token")


StateDep = Annotated[ServiceState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
AdminDep = Depends(require_admin)
