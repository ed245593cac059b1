"""Inference on an exported model bundle: the one class behind the API and `catsdogs predict`.

``Predictor.load`` finds, reads and checks the bundle (``catsdogs.inference.bundle``: a directory or
an MLflow registry URI such as ``models:/catsdogs@champion``) and runs it with ONNX Runtime or OpenVINO
(``catsdogs.inference.backends``).

Threading: one session per predictor. ``session.run`` releases the GIL and is thread-safe,
so callers may use a predictor from several threads; the intra-op pool is sized from the cgroup CPU
quota (not the host's core count, which a container does not own).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from catsdogs.core.cpus import available_cpus, cgroup_cpu_limit
from catsdogs.core.transforms import (
    DEFAULT_MAX_PIXELS,
    InvalidImageError,
    PreprocessConfig,
    create_transform,
    load_image,
)
from catsdogs.inference.backends import BACKEND_FILES, BackendUnavailable, Session, latency_ms, open_session
from catsdogs.inference.bundle import (
    ModelLoadError,
    choose_backend,
    read_bundle_meta,
    resolve_model_uri,
    validate_bundle,
)

log = logging.getLogger(__name__)

Backend = Literal["auto", "onnx", "onnx-int8", "openvino", "openvino-bf16"]
BACKENDS: tuple[str, ...] = ("auto", *BACKEND_FILES)
PET_OUTPUT = "pet_score"  # the bundle's optional second output: "is this a cat or a dog at all"


@dataclass(frozen=True, slots=True)
class Prediction:
    """One classified image. ``inference_time_ms`` is the model run that produced it (shared by a batch).

    ``confidence`` is calibrated (temperature scaling fitted on val). ``is_cat_or_dog`` is false when
    the pet score is under the bundle's threshold; ``uncertain`` when confidence is under its
    "not sure" threshold. ``reason`` says why in a sentence.
    """

    label: str
    confidence: float
    probabilities: dict[str, float]
    inference_time_ms: float
    is_cat_or_dog: bool = True
    pet_score: float | None = None
    uncertain: bool = False
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "prediction": self.label,
            "probability": self.confidence,
            "confidence": self.confidence,
            "probabilities": self.probabilities,
            "inference_time_ms": self.inference_time_ms,
            "is_cat_or_dog": self.is_cat_or_dog,
            "pet_score": self.pet_score,
            "uncertain": self.uncertain,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class PredictionError:
    """An input that could not be classified. ``reason`` is a short code (also the metric label)."""

    reason: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.reason, "message": self.message}}


PredictionResult = Prediction | PredictionError


@dataclass
class Predictor:
    """A loaded, ready-to-run model bundle. Build it with ``Predictor.load``."""

    bundle_dir: Path
    meta: dict[str, Any]
    backend: str
    threads: int
    session: Session
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    source: str = ""
    loaded_at: float = field(default_factory=time.time)
    warmed: bool = False

    def __post_init__(self) -> None:
        self.cfg = PreprocessConfig.from_dict(self.meta["preprocess"])
        self.transform = create_transform(self.cfg)
        self.class_names: tuple[str, ...] = self.cfg.class_names
        self.image_size = self.cfg.image_size
        self._input_name = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self._output_names = outputs[:2] if PET_OUTPUT in outputs else outputs[:1]
        thresholds = self.meta.get("thresholds") or {}
        self.pet_threshold: float | None = thresholds.get("pet_score") if PET_OUTPUT in outputs else None
        self.unsure_below: float = float(thresholds.get("unsure_below") or 0.0)

    @classmethod
    def load(
        cls,
        model: str | Path,
        *,
        backend: str = "auto",
        threads: int = 0,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> Predictor:
        """Load a bundle directory or registry URI. Raises ``ModelLoadError`` naming the problem."""
        if backend not in BACKENDS:
            raise ModelLoadError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        bundle_dir = resolve_model_uri(model)
        meta = read_bundle_meta(bundle_dir)
        chosen = choose_backend(meta, backend)
        filename = meta["files"].get(BACKEND_FILES[chosen][1])
        if not filename:
            raise ModelLoadError(f"backend {chosen} requested but the bundle {bundle_dir} has no such model file")
        model_file = bundle_dir / filename
        if not model_file.is_file():
            raise ModelLoadError(f"{model_file} is missing from the bundle")
        n_threads = threads if threads > 0 else available_cpus()
        try:
            session = open_session(chosen, model_file, n_threads)
        except BackendUnavailable as exc:
            raise ModelLoadError(str(exc)) from exc
        except Exception as exc:  # each runtime raises its own Fail/InvalidGraph/... types
            raise ModelLoadError(f"{BACKEND_FILES[chosen][0]} cannot load {model_file}: {exc}") from exc
        validate_bundle(meta, session, model_file)
        log.info("loaded %s (%s, version %s, %d threads)", model_file, chosen, meta.get("version"), n_threads)
        return cls(
            bundle_dir=bundle_dir,
            meta=meta,
            backend=chosen,
            threads=n_threads,
            session=session,
            max_image_pixels=max_image_pixels,
            source=str(model) if str(model).startswith("models:/") else str(bundle_dir),
        )

    # --- properties -------------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        return str(self.meta.get("version", "unknown"))

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "catsdogs"))

    def info(self) -> dict[str, Any]:
        """Everything a client may want to know about the loaded model (the /model endpoint)."""
        keep = (
            "name",
            "version",
            "architecture",
            "parameters",
            "metrics",
            "default_backend",
            "trained_at",
            "git_commit",
            "mlflow_run_id",
            "registered_version",
        )
        out: dict[str, Any] = {k: self.meta.get(k) for k in keep}
        out.update(
            backend=self.backend,
            class_names=list(self.class_names),
            preprocess=self.cfg.to_dict(),
            # A registry URI as given; a local bundle by its directory name only (no internal paths in /model).
            source=self.source if self.source.startswith("models:/") else self.bundle_dir.name,
            threads=self.threads,
            loaded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
        )
        return out

    # --- inference ----------------------------------------------------------------------------------------
    def preprocess(self, data: bytes) -> np.ndarray:
        """Raw file bytes -> float32 (3, S, S) model input. Raises ``InvalidImageError``."""
        img = load_image(data, target_size=self.image_size, max_pixels=self.max_image_pixels)
        return self.transform(img)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """float32 (N, 3, S, S) -> (softmax probabilities (N, C), model time in ms)."""
        probs, _, elapsed_ms = self.run_scores(batch)
        return probs, elapsed_ms

    def run_scores(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float]:
        """float32 (N, 3, S, S) -> (calibrated probabilities (N, C), pet scores (N,) or None, model ms)."""
        start = time.perf_counter()
        outputs = self.session.run(self._output_names, {self._input_name: batch})
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        logits = outputs[0].astype(np.float64, copy=False)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        pet = outputs[1].astype(np.float64, copy=False) if len(outputs) > 1 else None
        return exp / exp.sum(axis=1, keepdims=True), pet, elapsed_ms

    def _prediction(self, row: np.ndarray, pet: float | None, elapsed_ms: float) -> Prediction:
        best = int(row.argmax())
        confidence = round(float(row[best]), 6)
        is_pet = self.pet_threshold is None or pet is None or pet >= self.pet_threshold
        uncertain = confidence < self.unsure_below
        reason = None
        if not is_pet:
            reason = "this doesn't look like a cat or a dog"
        elif uncertain:
            reason = f"not sure: confidence {confidence:.0%} is below {self.unsure_below:.0%}"
        return Prediction(
            label=self.class_names[best],
            confidence=confidence,
            probabilities={c: round(float(p), 6) for c, p in zip(self.class_names, row, strict=True)},
            inference_time_ms=round(elapsed_ms, 3),
            is_cat_or_dog=is_pet,
            pet_score=None if pet is None else round(float(pet), 6),
            uncertain=uncertain,
            reason=reason,
        )

    def predict_bytes(self, images: Sequence[bytes]) -> list[PredictionResult]:
        """Classify encoded images with ONE model run for all the valid ones; bad ones get their own error."""
        results: list[PredictionResult | None] = [None] * len(images)
        arrays: list[np.ndarray] = []
        index: list[int] = []
        for i, data in enumerate(images):
            try:
                arrays.append(self.preprocess(data))
                index.append(i)
            except InvalidImageError as exc:
                results[i] = PredictionError(exc.reason, exc.message)
        if arrays:
            # One image: a view, no copy.
            batch = arrays[0][np.newaxis] if len(arrays) == 1 else np.stack(arrays)
            for i, prediction in zip(index, self.predict_array(batch), strict=True):
                results[i] = prediction
        return [r for r in results if r is not None]

    def predict_array(self, batch: np.ndarray) -> list[Prediction]:
        """float32 (N, 3, S, S) model inputs -> the answers a client gets, in ONE model run."""
        probs, pets, elapsed_ms = self.run_scores(batch)
        return [
            self._prediction(row, None if pets is None else float(pets[k]), elapsed_ms) for k, row in enumerate(probs)
        ]

    def latency_ms(self, x: np.ndarray | None = None, *, runs: int = 100, warmup: int = 5) -> dict[str, float]:
        """Model-only latency of ``x`` (default: one random image), p50/p95 in ms: a measurement, never a test."""
        if x is None:
            s = self.image_size
            x = np.random.default_rng(0).standard_normal((1, 3, s, s)).astype(np.float32)
        return latency_ms(self.session, x, runs=runs, warmup=warmup)

    def warmup(self, batch_sizes: Sequence[int] = (1,)) -> float:
        """Run the model once per batch size so the first real request does not pay for allocations."""
        start = time.perf_counter()
        s = self.image_size
        for n in batch_sizes:
            self.run(np.zeros((n, 3, s, s), dtype=np.float32))
        self.warmed = True
        return (time.perf_counter() - start) * 1000.0


__all__ = [
    "BACKENDS",
    "ModelLoadError",
    "Prediction",
    "PredictionError",
    "PredictionResult",
    "Predictor",
    "available_cpus",
    "cgroup_cpu_limit",
    "read_bundle_meta",
    "resolve_model_uri",
    "validate_bundle",
]
