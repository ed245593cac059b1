"""``/metrics`` in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from catsdogs.serve.dependencies import MetricsDep

router = APIRouter(tags=["monitoring"])


# Sync: in multiprocess mode rendering reads every worker's files (blocking I/O), so it runs in the thread pool.
@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics (aggregated over all workers)",
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics(m: MetricsDep) -> Response:
    body, content_type = m.render()
    return Response(body, media_type=content_type)
