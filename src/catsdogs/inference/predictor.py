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
from typing import Any, Literal, NamedTuple

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
from catsdogs.inference.looks_like import ImageNetClass
from catsdogs.inference.looks_like import looks_like as looks_like_class

log = logging.getLogger(__name__)

Backend = Literal["auto", "onnx", "onnx-int8", "openvino", "openvino-bf16"]
BACKENDS: tuple[str, ...] = ("auto", *BACKEND_FILES)
PET_OUTPUT = "pet_score"  # the bundle's optional second output: "is a cat or a dog in this photo at all"
LOOKS_OUTPUT = "looks_like"  # its optional third: the ImageNet index of the best class that is not a pet


class Scores(NamedTuple):
    """One model run: calibrated probabilities (N, C); pet scores and looks_like indices (N,) or None."""

    probs: np.ndarray
    pet: np.ndarray | None
    looks_like: np.ndarray | None
    elapsed_ms: float


def imagenet_class(index: int) -> ImageNetClass | None:
    """The ImageNet class (plain word, kind) at an index, or None when the bundle's index is out of range."""
    try:
        return looks_like_class(index)
    except IndexError:
        return None


def article(word: str) -> str:
    """ "a horse", "an ant", "a person" (nouns that read oddly with an article are rare among these words)."""
    return f"{'an' if word[0].lower() in 'aeiou' else 'a'} {word}"


@dataclass(frozen=True, slots=True)
class Prediction:
    """One classified image. ``inference_time_ms`` is the model run that produced it (shared by a batch).

    ``confidence`` is calibrated (temperature scaling fitted on val). ``is_cat_or_dog`` is false when
    the pet score is under the bundle's threshold (or the operator's); ``looks_like`` then names what
    the photo looks like instead ("horse"). ``uncertain`` when confidence is under the bundle's "not
    sure" threshold. ``reason`` says why in a sentence.
    """

    label: str
    confidence: float
    probabilities: dict[str, float]
    inference_time_ms: float
    is_cat_or_dog: bool = True
    pet_score: float | None = None
    uncertain: bool = False
    reason: str | None = None
    looks_like: str | None = None  # what it looks like instead, when not a cat or a dog ("horse")
    looks_like_kind: str | None = None  # the ImageNet head's kind for it (``catsdogs.inference.looks_like.KINDS``)

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
            "looks_like": self.looks_like,
            "looks_like_kind": self.looks_like_kind,
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
    pet_threshold_override: float | None = None  # the operator's threshold instead of the bundle's

    def __post_init__(self) -> None:
        self.cfg = PreprocessConfig.from_dict(self.meta["preprocess"])
        self.transform = create_transform(self.cfg)
        self.class_names: tuple[str, ...] = self.cfg.class_names
        self.image_size = self.cfg.image_size
        self._input_name = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self._output_names = [outputs[0]] + [name for name in (PET_OUTPUT, LOOKS_OUTPUT) if name in outputs]
        thresholds = self.meta.get("thresholds") or {}
        bundle_threshold = thresholds.get("pet_score")
        if self.pet_threshold_override is not None:
            bundle_threshold = self.pet_threshold_override
        self.pet_threshold: float | None = bundle_threshold if PET_OUTPUT in outputs else None
        self.unsure_below: float = float(thresholds.get("unsure_below") or 0.0)

    @classmethod
    def load(
        cls,
        model: str | Path,
        *,
        backend: str = "auto",
        threads: int = 0,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        pet_threshold: float | None = None,
    ) -> Predictor:
        """Load a bundle directory or registry URI. Raises ``ModelLoadError`` naming the problem.

        ``pet_threshold`` replaces the bundle's "not a cat or a dog" threshold (its model card's default).
        """
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
            pet_threshold_override=pet_threshold,
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
        scores = self.run_scores(batch)
        return scores.probs, scores.elapsed_ms

    def run_scores(self, batch: np.ndarray) -> Scores:
        """float32 (N, 3, S, S) -> calibrated probabilities (N, C), pet scores and looks_like (N,) or None."""
        start = time.perf_counter()
        outputs = self.session.run(self._output_names, {self._input_name: batch})
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        logits = outputs[0].astype(np.float64, copy=False)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        pet = outputs[1].astype(np.float64, copy=False) if len(outputs) > 1 else None
        looks = outputs[2].astype(np.int64, copy=False) if len(outputs) > 2 else None
        return Scores(exp / exp.sum(axis=1, keepdims=True), pet, looks, elapsed_ms)

    def _prediction(self, row: np.ndarray, pet: float | None, looks: int | None, elapsed_ms: float) -> Prediction:
        best = int(row.argmax())
        confidence = round(float(row[best]), 6)
        is_pet = self.pet_threshold is None or pet is None or pet >= self.pet_threshold
        uncertain = confidence < self.unsure_below
        reason = looks_like = None
        seen = imagenet_class(looks) if looks is not None else None
        if not is_pet:
            looks_like = seen.word if seen else None
            reason = (
                f"this looks like {article(looks_like)}, not a cat or a dog"
                if looks_like
                else ("this doesn't look like a cat or a dog")
            )
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
            looks_like=looks_like,
            looks_like_kind=seen.kind if seen and not is_pet else None,
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
        s = self.run_scores(batch)
        return [
            self._prediction(
                row,
                None if s.pet is None else float(s.pet[k]),
                None if s.looks_like is None else int(s.looks_like[k]),
                s.elapsed_ms,
            )
            for k, row in enumerate(s.probs)
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
