"""The service's runtime state: the current predictor (swapped atomically on reload), readiness, limiter."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Literal

import anyio
import numpy as np

from catsdogs.core.cpus import available_cpus
from catsdogs.core.transforms import InvalidImageError
from catsdogs.inference.predictor import ModelLoadError, Prediction, PredictionError, PredictionResult, Predictor
from catsdogs.serve.admission import Admission, inference_slots
from catsdogs.serve.batching import MicroBatcher
from catsdogs.serve.decode import DecodeBudget, MiB, screen
from catsdogs.serve.errors import APIError
from catsdogs.serve.metrics import Metrics
from catsdogs.serve.settings import Settings

log = logging.getLogger("catsdogs.serve")

Status = Literal["loading", "warming", "ready", "failed"]
# Absolute filesystem paths (and file URIs): never shown to unauthenticated clients.
_PATH = re.compile(r"(?:file://)?(?<![\w.])/(?:[^\s:'\"/]+/)*[^\s:'\",;)]*")


def public_message(text: str) -> str:
    """``text`` with internal filesystem paths replaced by ``<path>`` (for /ready, /health and 4xx bodies)."""
    return _PATH.sub("<path>", text)


def warmup_sizes(s: Settings) -> tuple[int, ...]:
    """The batch sizes the model will run (a new input shape costs OpenVINO a slow first run): every micro-batch
    size, or with micro-batching off, one image and a full ``/predict/batch``."""
    if s.micro_batch_size > 1:
        return tuple(range(1, s.micro_batch_size + 1))
    return (1, s.max_batch_files)


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    predictor: Predictor | None = None
    status: Status = "loading"
    reason: str = "the model is loading"
    limiter: anyio.CapacityLimiter | None = None
    admission: Admission = field(init=False)  # the limiter (set by the lifespan) has admission.slots slots
    batcher: MicroBatcher | None = None  # set by the lifespan when micro_batch_size > 1
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # replaced in the lifespan's event loop
    decode_budget: DecodeBudget = field(init=False)
    draining: bool = False  # SIGTERM received: /ready says 503 while requests are still served

    def begin_drain(self) -> None:
        self.draining = True

    def __post_init__(self) -> None:
        s = self.settings
        self.decode_budget = DecodeBudget(s.decode_memory_mb * MiB)
        slots = inference_slots(s.inference_threads or available_cpus(), s.micro_batch_size)
        self.admission = Admission(budget_s=s.max_queue_wait_s, slots=slots, limit=s.max_pending_requests)

    @property
    def ready(self) -> bool:
        return self.status == "ready" and self.predictor is not None

    def _load(self, model_path: str) -> Predictor:
        """Blocking: load and warm a predictor (runs in a worker thread)."""
        s = self.settings
        predictor = Predictor.load(
            model_path,
            backend=s.backend,
            threads=s.inference_threads,
            max_image_pixels=s.max_image_pixels,
            pet_threshold=s.pet_threshold,
        )
        if self.predictor is None:  # first load: /ready tells the loading and warming phases apart
            self.status, self.reason = "warming", "the model is warming up"
        try:
            predictor.warmup(batch_sizes=warmup_sizes(s))
        except Exception as exc:  # onnxruntime's own errors: a bundle that fails warm-up is a bad bundle
            raise ModelLoadError(f"the model failed its warm-up run: {exc}") from exc
        return predictor

    def _load_failed(self, exc: ModelLoadError) -> None:
        if self.predictor is None:  # nothing to fall back on
            self.status, self.reason = "failed", f"the model failed to load: {public_message(str(exc))}"

    async def load(self, model_path: str | None = None) -> tuple[Predictor, float]:
        """Load + warm a predictor off the event loop, then swap it in. Requests in flight keep the old one."""
        start = time.perf_counter()
        try:
            predictor = await anyio.to_thread.run_sync(self._load, model_path or self.settings.model_path)
        except ModelLoadError as exc:
            self._load_failed(exc)
            raise
        except Exception as exc:  # e.g. a model.json field of the wrong type: still a bad bundle, not a 500
            error = ModelLoadError(f"the model cannot be loaded: {exc!r}")
            self._load_failed(error)
            raise error from exc
        # The swap is a single reference assignment: a request holds whichever predictor it started with.
        self.predictor = predictor
        self.status, self.reason = "ready", ""
        self.metrics.set_model(predictor.version, predictor.backend)
        return predictor, (time.perf_counter() - start) * 1000.0

    async def load_initial(self, retry_every_s: float = 2.0) -> None:
        while True:
            try:
                predictor, ms = await self.load()
                break
            except ModelLoadError as exc:  # surfaces in /ready and /health; must not kill the event loop
                if not self.settings.wait_for_model:
                    log.error("model load failed: %s", exc)
                    return
                # Waiting for a model that is still being copied: loading, not failed (liveness stays 200).
                if not self.reason.startswith("waiting"):  # log the first miss, not every retry
                    log.info("waiting for the model: %s", exc)
                self.status, self.reason = "loading", f"waiting for the model: {public_message(str(exc))}"
                await asyncio.sleep(retry_every_s)
        log.info(
            "model ready",
            extra={"model_version": predictor.version, "backend": predictor.backend, "load_time_ms": round(ms, 1)},
        )

    async def infer(self, predictor: Predictor, images: list[bytes]) -> list[PredictionResult]:
        """Decode + model run off the event loop, in an inference slot (the limiter bounds them).

        The request was admitted on an estimate of its wait (``AdmissionMiddleware``); one that still
        waits longer than ``max_queue_wait_s`` for a slot is shed (503), so that none answers late. Each
        slot hold feeds the service time that the next admissions are estimated from.
        """
        limiter = self.limiter
        if limiter is None:  # not started by the lifespan (direct use): no queue to bound
            return await self._run(predictor, images)
        budget = self.settings.max_queue_wait_s
        acquired = False
        with anyio.move_on_after(budget):
            await limiter.acquire()
            acquired = True  # no await in between: a timeout cannot strike after the slot was taken
        if not acquired:
            self.metrics.requests_shed.inc()
            raise APIError(
                503,
                "overloaded",
                f"the server is at capacity: no inference slot within the {budget:g} s budget; retry shortly",
                headers={"Retry-After": str(self.admission.retry_after_s()), "Connection": "close"},
            )
        start = time.perf_counter()
        try:
            return await self._run(predictor, images)
        finally:
            limiter.release()
            self.admission.observe(time.perf_counter() - start)
            self.metrics.service_time.set(self.admission.service_s)

    async def _run(self, predictor: Predictor, images: list[bytes]) -> list[PredictionResult]:
        """Decode in a worker thread, then run on the micro-batcher's runners (batches of at most
        ``micro_batch_size``); with micro-batching off, all the images decode and run as one model run."""
        if self.batcher is None:
            return await anyio.to_thread.run_sync(self._infer, predictor, images)
        decoded = await anyio.to_thread.run_sync(self._decode_all, predictor, images)
        arrays = [d for d in decoded if not isinstance(d, PredictionError)]
        ran = iter(await self.batcher.predict_many(predictor, arrays))  # none valid: no run, []
        return [d if isinstance(d, PredictionError) else next(ran) for d in decoded]

    def _infer(self, predictor: Predictor, images: list[bytes]) -> list[PredictionResult]:
        """Blocking: refuse what costs too much to decode, wait for decode memory, then predict."""
        s = self.settings
        cost, refused = screen(images, predictor.image_size, s.max_lossless_pixels, s.max_image_pixels)
        to_run = [data for i, data in enumerate(images) if i not in refused]
        with self.decode_budget.hold(cost):
            ran = predictor.predict_bytes(to_run) if to_run else []
        for ms in {r.inference_time_ms for r in ran if isinstance(r, Prediction)}:  # one per model run
            self.metrics.prediction_latency.observe(ms / 1000.0)
        it = iter(ran)
        return [refused[i] if i in refused else next(it) for i in range(len(images))]

    def _decode_all(self, predictor: Predictor, images: list[bytes]) -> list[np.ndarray | PredictionError]:
        """Blocking: each upload -> its model input, or the reason it has none."""
        return [self._decode_one(predictor, data) for data in images]

    def _decode_one(self, predictor: Predictor, data: bytes) -> np.ndarray | PredictionError:
        """Blocking: one upload -> its model input, under the same decode limits as ``_infer``."""
        s = self.settings
        cost, refused = screen([data], predictor.image_size, s.max_lossless_pixels, s.max_image_pixels)
        if refused:
            return refused[0]
        with self.decode_budget.hold(cost):
            try:
                return predictor.preprocess(data)
            except InvalidImageError as exc:
                return PredictionError(exc.reason, exc.message)
