"""Admission control: beyond max_pending_requests a worker answers 503 at once; a request whose estimated
wait for the model is over the budget is shed at once, one that waits past it is shed then; probes never."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from apihelpers import RED, RunSpy, encode, solid
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from catsdogs.serve.admission import Admission
from catsdogs.serve.middleware import LogSampler
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
        assert shed.headers["connection"] == "close"  # a client that ignores Retry-After must reconnect
        assert "overloaded" in shed.text
        assert time.monotonic() - start < 10  # at once, not after the held requests
        for probe in ("/health", "/ready", "/metrics"):  # never shed
            assert client.get(probe).status_code == 200, probe
        assert _shed_total(client) == 1
    assert [r.status_code for r in results] == [200, 200]
    assert _post(client).status_code == 200  # the slot is given back


def _pending(client: TestClient) -> int:
    """Requests admitted by the worker's admission control (reading, waiting or running)."""
    return int(client.app.state.service.admission.inside)  # type: ignore[attr-defined]


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
        assert waited.headers["retry-after"] == "1" and waited.headers["connection"] == "close"
        assert _shed_total(client) == 1
    assert [r.status_code for r in results] == [200, 200]


def test_a_free_slot_means_no_wait_and_a_full_queue_is_priced_by_the_service_time() -> None:
    admission = Admission(budget_s=0.3, slots=4, limit=100, service_s=0.1)
    for _ in range(4):
        assert admission.estimated_wait() == 0 and admission.try_enter() is None
    # all four slots busy: the next one starts after the first of four 0.1 s holds, then one per 0.025 s
    assert admission.estimated_wait() == pytest.approx(0.025)
    admission.inside = 10
    assert admission.estimated_wait() == pytest.approx(7 * 0.1 / 4)


def test_requests_are_shed_once_the_estimated_wait_passes_the_budget() -> None:
    admission = Admission(budget_s=0.25, slots=2, limit=100, service_s=0.125)
    admitted = 0
    while admission.try_enter() is None:
        admitted += 1
    # the newest waits (inside - 2 + 1) * 0.0625 s: within 0.25 s for up to 5 inside before it
    assert admitted == 6 == admission.capacity
    assert admission.inside == admitted
    refusal = admission.try_enter()
    assert refusal == "an answer would wait about 0.31 s for the model, over the 0.25 s budget"
    assert admission.inside == admitted  # a refusal leaves no trace
    admission.leave()
    assert admission.try_enter() is None  # a place freed is a place given


def test_the_count_limit_holds_whatever_the_estimate() -> None:
    admission = Admission(budget_s=10.0, slots=2, limit=3, service_s=0.001)
    assert [admission.try_enter() for _ in range(3)] == [None, None, None]
    assert admission.try_enter() == "3 requests are already in this worker"
    assert admission.capacity == 3


def test_the_queue_length_follows_the_measured_service_time_not_a_fixed_count() -> None:
    admission = Admission(budget_s=0.3, slots=2, limit=1000)
    for _ in range(50):  # a fast model: 2 ms per request
        admission.observe(0.002)
    fast = admission.capacity
    for _ in range(50):  # the same worker while its CPUs are taken: 200 ms per request
        admission.observe(0.2)
    slow = admission.capacity
    assert admission.service_s == pytest.approx(0.2, rel=0.01)
    assert fast > 100 and slow == 2 + 3  # 0.3 s of a 0.1 s-per-request queue behind the two slots
    # the decision itself follows: 5 inside are admitted at 200 ms per request, the 6th is shed
    admission.inside = slow - 1
    assert admission.try_enter() is None and admission.try_enter() is not None


def test_one_slow_request_moves_the_estimate_part_of_the_way() -> None:
    admission = Admission(budget_s=0.3, slots=2, limit=100, service_s=0.01)
    admission.observe(1.01)
    assert 0.01 < admission.service_s < 1.01 / 2


def test_retry_after_is_the_wait_in_whole_seconds_and_at_least_one() -> None:
    admission = Admission(budget_s=0.3, slots=2, limit=100, service_s=0.5)
    assert admission.retry_after_s() == 1
    admission.inside = 11  # 10 ahead at 0.25 s each
    assert admission.retry_after_s() == 3


def test_a_request_over_the_budget_is_shed_at_once_without_waiting(make_client: ClientFactory) -> None:
    """Shedding by the estimate, not by a timer: with a 5 s service time measured, a third request
    behind two held ones would wait about 2.5 s, over the 1 s budget; it is refused before any wait."""
    client = make_client(max_queue_wait_s=1.0, inference_threads=64, micro_batch_size=1)
    service = client.app.state.service  # type: ignore[attr-defined]
    assert service.admission.slots == 2
    with two_requests_held_in_the_model(client) as results:
        wait_until(lambda: service.limiter.borrowed_tokens == 2, "both requests in the model", timeout=20)
        service.admission.service_s = 5.0
        shed = _post(client)
        assert shed.status_code == 503 and shed.json()["code"] == "overloaded"
        assert "would wait about 2.50 s for the model, over the 1 s budget" in shed.json()["detail"]
        assert shed.headers["retry-after"] == "3"
        assert service.admission.inside == 2  # the shed request left nothing behind
        assert _shed_total(client) == 1
        service.admission.service_s = 0.001  # a fast model: the same request is admitted (and waits)
        waiting = threading.Thread(target=lambda: results.append(_post(client)))
        waiting.start()
        wait_until(lambda: service.admission.inside == 3, "the third request to be admitted", timeout=20)
    waiting.join(20)
    assert sorted(r.status_code for r in results) == [200, 200, 200]
    assert service.admission.inside == 0
    assert service.admission.service_s > 0.001  # the held requests' time in the model was measured


def test_shed_requests_are_logged_once_a_second_with_the_count_skipped() -> None:
    now = [100.0]
    sampler = LogSampler(period_s=1.0, clock=lambda: now[0])
    assert sampler.take() == 0  # the first one is logged
    assert [sampler.take() for _ in range(500)] == [None] * 500  # a flood within the second: not logged
    now[0] += 1.0
    assert sampler.take() == 500  # the next line says how many were not
    now[0] += 0.5
    assert sampler.take() is None
    now[0] += 0.6
    assert sampler.take() == 1
