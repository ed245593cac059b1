"""Adaptive micro-batching: concurrent /predict requests share model runs, and each gets its own answer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from apihelpers import RunSpy, encode, solid
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from catsdogs.inference.predictor import Predictor
from catsdogs.serve.batching import MicroBatcher
from catsdogs.serve.metrics import Metrics
from support import wait_until

ClientFactory = Callable[..., TestClient]
# The tiny model's answer follows the red channel: reds near ImageNet's mean red give five different answers.
COLORS = [(red, 90, 90) for red in (105, 115, 124, 133, 143)]


def _post(client: TestClient, data: bytes) -> httpx.Response:
    return client.post("/predict", files={"file": ("x.png", data, "image/png")})


def _sample_sum(client: TestClient, name: str, sample: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name == name:
            return sum(s.value for s in family.samples if s.name == sample)
    raise AssertionError(f"{name} is not exported")


def _post_all_while_the_model_is_held(client: TestClient, images: list[bytes]) -> tuple[RunSpy, list[Any]]:
    """Post images[0], hold its model run until the others are queued, then let everything run."""
    service = client.app.state.service  # type: ignore[attr-defined]
    gate = threading.Event()
    spy = service.predictor.session = RunSpy(service.predictor.session, gate)
    answers: list[Any] = [None] * len(images)

    def post(i: int) -> None:
        answers[i] = _post(client, images[i])

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(images))]
    threads[0].start()
    try:
        assert spy.started.wait(20), "the first request never reached the model"
        for t in threads[1:]:
            t.start()
        wait_until(lambda: service.batcher.queued == len(images) - 1, "the other requests to queue", timeout=20)
    finally:
        gate.set()
        for t in threads:
            t.join(20)
    return spy, answers


def test_concurrent_requests_share_one_model_run_and_each_gets_its_own_answer(
    make_client: ClientFactory,
) -> None:
    # 64 threads per run: one model runner whatever the machine, so the others must queue behind it.
    client = make_client(micro_batch_size=4, inference_threads=64)
    images = [encode(solid(c), "PNG") for c in COLORS]
    predictor: Predictor = client.app.state.service.predictor  # type: ignore[attr-defined]
    alone = [p.probabilities for p in predictor.predict_bytes(images)]  # type: ignore[union-attr]
    assert len({round(p["cat"], 4) for p in alone}) == len(images), "the test images must get different answers"

    spy, answers = _post_all_while_the_model_is_held(client, images)

    assert [b.shape[0] for b in spy.batches] == [1, 4]  # the first alone, the four queued ones as one batch
    for answer, expected in zip(answers, alone, strict=True):
        assert answer.status_code == 200, answer.text
        assert answer.json()["probabilities"] == pytest.approx(expected, abs=1e-4)
    assert _sample_sum(client, "catsdogs_micro_batch_size", "catsdogs_micro_batch_size_sum") == 5
    # model latency: one observation per model run, not per request
    assert _sample_sum(client, "prediction_latency_seconds", "prediction_latency_seconds_count") == 2


def test_a_lone_request_runs_at_once_in_a_batch_of_one(make_client: ClientFactory) -> None:
    client = make_client(micro_batch_size=8)
    service = client.app.state.service  # type: ignore[attr-defined]
    spy = service.predictor.session = RunSpy(service.predictor.session)
    for color in COLORS[:3]:
        assert _post(client, encode(solid(color), "PNG")).status_code == 200
    assert [b.shape[0] for b in spy.batches] == [1, 1, 1]


def test_batches_are_capped_at_micro_batch_size(make_client: ClientFactory) -> None:
    client = make_client(micro_batch_size=2, inference_threads=64)  # admits 2 runs' worth: 4 requests
    images = [encode(solid(c), "PNG") for c in COLORS[:4]]
    spy, answers = _post_all_while_the_model_is_held(client, images)
    assert [r.status_code for r in answers] == [200] * 4
    assert [b.shape[0] for b in spy.batches] == [1, 2, 1]  # three queued: a full batch of 2, then the last


def test_a_bad_upload_is_refused_before_it_reaches_a_batch(make_client: ClientFactory) -> None:
    client = make_client(micro_batch_size=4)
    r = client.post("/predict", files={"file": ("x.png", b"not an image at all", "image/png")})
    assert r.status_code == 400 and r.json()["code"] == "not_an_image"
    assert _sample_sum(client, "catsdogs_micro_batch_size", "catsdogs_micro_batch_size_count") == 0


def test_micro_batching_off_runs_every_request_alone(make_client: ClientFactory) -> None:
    client = make_client(micro_batch_size=1)
    assert client.app.state.service.batcher is None  # type: ignore[attr-defined]
    assert _post(client, encode(solid(COLORS[0]), "PNG")).status_code == 200


def test_a_large_batch_request_runs_in_micro_batches_on_the_model_runners(make_client: ClientFactory) -> None:
    # A 16-image run costs more per image than runs of 4 and keeps buffers for its shape: never one big run.
    client = make_client(micro_batch_size=2, max_batch_files=8)
    service = client.app.state.service  # type: ignore[attr-defined]
    images = [encode(solid(c), "PNG") for c in COLORS]
    alone = [p.probabilities for p in service.predictor.predict_bytes(images)]
    spy = service.predictor.session = RunSpy(service.predictor.session)
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    files.insert(2, ("files", ("junk.png", b"not an image", "image/png")))
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["filename"] for x in results] == [f[1][0] for f in files]
    assert results[2]["error"]["code"] == "not_an_image"
    for got, expected in zip([x for x in results if "error" not in x], alone, strict=True):
        assert got["probabilities"] == pytest.approx(expected, abs=1e-4)
    assert [b.shape[0] for b in spy.batches] == [2, 2, 1]  # the 5 photos, at most 2 per run
    assert all(name.startswith("catsdogs-model") for name in spy.threads)  # the runners, not a request thread
    assert _sample_sum(client, "prediction_latency_seconds", "prediction_latency_seconds_count") == 3


def test_the_warm_up_covers_the_runs_the_model_will_make() -> None:
    from catsdogs.serve.settings import Settings
    from catsdogs.serve.state import warmup_sizes

    assert warmup_sizes(Settings(micro_batch_size=4, max_batch_files=16)) == (1, 2, 3, 4)  # no 16-image run
    assert warmup_sizes(Settings(micro_batch_size=1, max_batch_files=16)) == (1, 16)  # off: a batch is one run


# --- the batcher alone, with a fake model -----------------------------------------------------------------
class FakeModel:
    """``predict_array`` answers each image's first value; if ``held``, the first run waits for ``gate``."""

    def __init__(self, held: bool = False, fail: bool = False):
        self.gate, self.fail = threading.Event() if held else None, fail
        self.runs: list[list[float]] = []

    def predict_array(self, batch: np.ndarray) -> list[Any]:
        self.runs.append([float(x[0, 0, 0]) for x in batch])
        if self.gate is not None and len(self.runs) == 1:
            assert self.gate.wait(10)
        if self.fail:
            raise RuntimeError("the model failed")
        return [SimpleNamespace(value=float(x[0, 0, 0]), inference_time_ms=1.0) for x in batch]


def _image(value: float) -> np.ndarray:
    return np.full((3, 2, 2), value, dtype=np.float32)


async def _wait_queued(batcher: MicroBatcher, n: int) -> None:
    for _ in range(1000):
        if batcher.queued == n:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{n} images never queued")


def _one_runner() -> MicroBatcher:
    return MicroBatcher(max_size=8, runners=1, metrics=Metrics())


async def _first_held_then(batcher: MicroBatcher, first: FakeModel, rest: list[Any]) -> Any:
    """Submit one image of ``first`` (its run held until ``first.gate`` is set), then queue ``rest``."""
    held = asyncio.create_task(batcher.predict(first, _image(0)))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    tasks = [asyncio.create_task(batcher.predict(m, _image(v))) for m, v in rest]
    await _wait_queued(batcher, len(rest))
    return held, tasks


def test_a_batch_never_mixes_two_models() -> None:
    """After a reload, requests that started on the old model and the new one run in separate batches."""

    async def scenario() -> None:
        old, new, batcher = FakeModel(held=True), FakeModel(), _one_runner()
        held, tasks = await _first_held_then(batcher, old, [(old, 1), (old, 2), (new, 3), (old, 4)])
        old.gate.set()
        answers = await asyncio.gather(held, *tasks)
        assert [a.value for a in answers] == [0, 1, 2, 3, 4]
        assert old.runs == [[0], [1, 2], [4]] and new.runs == [[3]]

    asyncio.run(scenario())


def test_a_request_that_went_away_is_left_out_of_the_batch() -> None:
    async def scenario() -> None:
        model, batcher = FakeModel(held=True), _one_runner()
        held, tasks = await _first_held_then(batcher, model, [(model, 1), (model, 2), (model, 3)])
        tasks[1].cancel()  # the client of image 2 disconnected while it waited
        await asyncio.sleep(0)
        model.gate.set()
        await held
        assert [a.value for a in await asyncio.gather(tasks[0], tasks[2])] == [1, 3]
        assert model.runs == [[0], [1, 3]]

    asyncio.run(scenario())


def test_a_failed_run_fails_every_request_of_its_batch_and_frees_the_runner() -> None:
    async def scenario() -> None:
        failing, batcher = FakeModel(held=True, fail=True), _one_runner()
        held, tasks = await _first_held_then(batcher, failing, [(failing, 1), (failing, 2)])
        failing.gate.set()
        outcomes = await asyncio.gather(held, *tasks, return_exceptions=True)
        assert all(isinstance(o, RuntimeError) for o in outcomes)
        healthy = FakeModel()
        assert (await batcher.predict(healthy, _image(7))).value == 7  # type: ignore[arg-type]
        assert batcher.free_runners == 1

    asyncio.run(scenario())


def test_one_requests_images_are_answered_in_order_from_several_runs() -> None:
    async def scenario() -> None:
        model = FakeModel(held=True)
        batcher = MicroBatcher(max_size=2, runners=1, metrics=Metrics())
        held = asyncio.create_task(batcher.predict(model, _image(0)))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        many = asyncio.create_task(batcher.predict_many(model, [_image(v) for v in (1, 2, 3)]))  # type: ignore[arg-type]
        await _wait_queued(batcher, 3)
        model.gate.set()
        await held
        assert [a.value for a in await many] == [1, 2, 3]
        assert model.runs == [[0], [1, 2], [3]]

    asyncio.run(scenario())


def test_a_request_that_went_away_takes_all_its_queued_images_with_it() -> None:
    async def scenario() -> None:
        model, batcher = FakeModel(held=True), _one_runner()
        held = asyncio.create_task(batcher.predict(model, _image(0)))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        many = asyncio.create_task(batcher.predict_many(model, [_image(v) for v in (1, 2, 3)]))  # type: ignore[arg-type]
        other = asyncio.create_task(batcher.predict(model, _image(4)))  # type: ignore[arg-type]
        await _wait_queued(batcher, 4)
        many.cancel()  # its client disconnected
        await asyncio.sleep(0)
        model.gate.set()
        await held
        assert (await other).value == 4
        assert model.runs == [[0], [4]]

    asyncio.run(scenario())


def test_close_cancels_what_is_still_queued() -> None:
    async def scenario() -> None:
        model, batcher = FakeModel(held=True), _one_runner()
        held, tasks = await _first_held_then(batcher, model, [(model, 1)])
        closing = asyncio.create_task(batcher.close())
        await asyncio.sleep(0.05)
        model.gate.set()
        await closing
        outcomes = await asyncio.gather(held, *tasks, return_exceptions=True)
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)

    asyncio.run(scenario())
