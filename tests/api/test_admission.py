"""Admission control: beyond max_pending_requests a worker answers 503 at once; probes are never shed."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from apihelpers import RED, RunSpy, encode, solid
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from support import wait_until

ClientFactory = Callable[..., TestClient]


def _shed_total(client: TestClient) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name == "catsdogs_requests_shed":
            return sum(s.value for s in family.samples if s.name == "catsdogs_requests_shed_total")
    raise AssertionError("catsdogs_requests_shed_total is not exported")


IMAGE = encode(solid(RED), "PNG")


def _post(client: TestClient) -> httpx.Response:
    return client.post("/predict", files={"file": ("a.png", IMAGE, "image/png")})


@contextlib.contextmanager
def two_requests_held_in_the_model(client: TestClient) -> Iterator[list[httpx.Response]]:
    """Two /predict requests that stay inside the model run until the block ends; yields their answers."""
    predictor = client.app.state.service.predictor  # type: ignore[attr-defined]
    gate = threading.Event()
    predictor.session = RunSpy(predictor.session, gate)
    results: list[httpx.Response] = []
    held = [threading.Thread(target=lambda: results.append(_post(client))) for _ in range(2)]
    try:
        for t in held:
            t.start()
        yield results
    finally:
        gate.set()
        for t in held:
            t.join(20)


def test_requests_beyond_the_bound_get_503_with_retry_after(make_client: ClientFactory) -> None:
    client = make_client(max_pending_requests=2, max_queue_wait_s=30)
    with two_requests_held_in_the_model(client) as results:
        # both requests admitted: one in the model, one waiting or running
        wait_until(lambda: _pending(client) == 2, "both held requests to be admitted", timeout=20)
        assert _shed_total(client) == 0
        start = time.monotonic()
        shed = _post(client)
        assert shed.status_code == 503
        assert shed.headers["retry-after"] == "1"
        assert "overloaded" in shed.text
        assert time.monotonic() - start < 10  # at once, not after the held requests
        for probe in ("/health", "/ready", "/metrics"):  # never shed
            assert client.get(probe).status_code == 200, probe
        assert _shed_total(client) == 1
    assert [r.status_code for r in results] == [200, 200]
    assert _post(client).status_code == 200  # the slot is given back


def _pending(client: TestClient) -> int:
    """The admission middleware's count (walks the built middleware stack)."""
    app: Any = client.app.middleware_stack  # type: ignore[attr-defined]
    while app is not None:
        if type(app).__name__ == "AdmissionMiddleware":
            return int(app.pending)
        app = getattr(app, "app", None)
    raise AssertionError("no AdmissionMiddleware in the stack")


def test_a_request_that_waits_too_long_for_the_model_is_shed(make_client: ClientFactory) -> None:
    # 64 threads per run, no micro-batching: the limiter has the minimum of 2 inference slots, whatever the
    # machine (with micro-batching each slot is a batch of micro_batch_size requests).
    client = make_client(max_queue_wait_s=0.3, inference_threads=64, micro_batch_size=1)
    limiter = client.app.state.service.limiter  # type: ignore[attr-defined]
    with two_requests_held_in_the_model(client) as results:
        # both slots taken by requests held in the model
        wait_until(lambda: limiter.borrowed_tokens == 2, "both inference slots to be taken", timeout=20)
        waited = _post(client)
        assert waited.status_code == 503 and "overloaded" in waited.text
        assert waited.headers["retry-after"] == "1"
        assert _shed_total(client) == 1
    assert [r.status_code for r in results] == [200, 200]
