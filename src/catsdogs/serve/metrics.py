"""Prometheus metrics of the service (names are a contract: dashboards and alerts use them).

Single process: the app's own registry. Several uvicorn workers: prometheus_client's multiprocess mode,
enabled by ``PROMETHEUS_MULTIPROC_DIR`` (set up by ``catsdogs serve --workers N``) before prometheus_client
is imported; every worker writes its samples to files there and ``/metrics`` aggregates all of them, so
totals are right whichever worker a scrape reaches.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")

INFERENCE_BUCKETS = (0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
REQUEST_BUCKETS = (0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)
CONFIDENCE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def multiprocess_dir() -> Path | None:
    """The directory shared by the workers, when prometheus_client was imported in multiprocess mode."""
    value = os.environ.get(MULTIPROC_ENV)
    # The mode is fixed when prometheus_client is imported: a variable set later changes nothing.
    if not value or values.ValueClass is values.MutexValue:
        return None
    return Path(value)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def reap_dead_workers(path: Path) -> list[int]:
    """Drop the live-gauge files of worker processes that are gone (crashed or restarted by uvicorn)."""
    dead = set()
    for f in path.glob("gauge_live*.db"):
        m = _LIVE_FILE.match(f.name)
        if m and not _pid_alive(int(m.group(1))):
            dead.add(int(m.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(path))
    return sorted(dead)


class Metrics:
    """The service's metrics, in a registry of their own (one app = one set, which keeps tests independent)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.predictions = Counter(
            "predictions_total", "Images classified, by predicted class.", ["predicted_class"], registry=r
        )
        self.prediction_latency = Histogram(
            "prediction_latency_seconds", "Model inference time per model run.", buckets=INFERENCE_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "catsdogs_micro_batch_size",
            "Images per model run of /predict's micro-batching (concurrent requests sharing a run).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.prediction_errors = Counter(
            "prediction_errors_total", "Prediction requests or files refused, by reason.", ["reason"], registry=r
        )
        self.prediction_confidence = Histogram(
            "prediction_confidence", "Probability of the predicted class.", buckets=CONFIDENCE_BUCKETS, registry=r
        )
        self.not_cat_or_dog = Counter(
            "catsdogs_not_cat_or_dog",
            "Uploads answered \"this doesn't look like a cat or a dog\" (pet score under the bundle's threshold).",
            registry=r,
        )
        # looks_like is the coarse kind (animal, person, object, ...), a handful of values: bounded labels.
        self.pet_decisions = Counter(
            "catsdogs_pet_decisions",
            "Answers by the not-a-cat-or-dog decision and, for not_cat_or_dog, the kind of what the "
            "image looks like instead (animal, person, object, food, plant, scene; `pet` for cat_or_dog).",
            ["decision", "looks_like"],
            registry=r,
        )
        self.uncertain = Counter(
            "catsdogs_uncertain_predictions",
            "Predictions whose calibrated confidence is under the bundle's not-sure threshold.",
            registry=r,
        )
        # livemax: one series per (version, backend) across workers, and a dead worker's model drops out.
        self.model_info = Gauge(
            "model_info",
            "The model being served (value 1).",
            ["version", "backend"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._model_labels: tuple[str, str] | None = None
        self._add_http_metrics(r)

    def _add_http_metrics(self, r: CollectorRegistry) -> None:
        """Per request, whatever the route: counts, latency, concurrency, admission control."""
        self.http_requests = Counter(
            "http_requests_total",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.in_progress = Gauge(
            "http_requests_in_progress", "HTTP requests being served.", registry=r, multiprocess_mode="livesum"
        )
        self.requests_shed = Counter(
            "catsdogs_requests_shed",
            "Requests answered 503 by admission control: too many in the worker, or a wait for the model over "
            "the latency budget (CATSDOGS_MAX_QUEUE_WAIT_S).",
            registry=r,
        )
        self.service_time = Gauge(
            "catsdogs_inference_service_seconds",
            "Moving average of one request's time in an inference slot (decode + model run): what admission "
            "control sizes the queue from.",
            registry=r,
            multiprocess_mode="livemax",
        )

    def set_model(self, version: str, backend: str) -> None:
        if self._model_labels is not None and self._model_labels != (version, backend):
            # Multiprocess files keep every label set ever written: zero the old one rather than remove it.
            self.model_info.labels(*self._model_labels).set(0)
            self.model_info.remove(*self._model_labels)
        self.model_info.labels(version, backend).set(1)
        self._model_labels = (version, backend)

    def render(self) -> tuple[bytes, str]:
        """The exposition text, aggregated over every worker in multiprocess mode."""
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        reap_dead_workers(path)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(path))
        return generate_latest(registry), CONTENT_TYPE_LATEST

    @staticmethod
    def mark_this_worker_dead() -> None:
        path = multiprocess_dir()
        if path is not None:
            multiprocess.mark_process_dead(os.getpid(), str(path))
