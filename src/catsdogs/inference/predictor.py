"""Inference on an exported model bundle: the one class behind the API and `catsdogs predict`.

A bundle is a directory with ``model.json`` (metadata + preprocessing), ``model.onnx`` and optionally
``model.int8.onnx``, run by ONNX Runtime or OpenVINO (``catsdogs.inference.backends``).
``Predictor.load`` also accepts an MLflow registry URI (``models:/catsdogs@champion``);
mlflow is imported only then, because the serving image does not ship it.

Threading: one session per predictor. ``session.run`` releases the GIL and is thread-safe,
so callers may use a predictor from several threads; the intra-op pool is sized from the cgroup CPU
quota (not the host's core count, which a container does not own).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
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
from catsdogs.inference.backends import BACKEND_FILES, BackendUnavailable, Session, available, latency_ms, open_session

log = logging.getLogger(__name__)

Backend = Literal["auto", "onnx", "onnx-int8", "openvino", "openvino-bf16"]
BACKENDS: tuple[str, ...] = ("auto", *BACKEND_FILES)
PET_OUTPUT = "pet_score"  # the bundle's optional second output: "is this a cat or a dog at all"


class ModelLoadError(RuntimeError):
    """The model (bundle directory or registry URI) cannot be loaded; the message says why."""


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


# --- bundle loading -----------------------------------------------------------------------------------------
def read_bundle_meta(bundle_dir: Path) -> dict[str, Any]:
    meta_path = bundle_dir / "model.json"
    if not bundle_dir.is_dir():
        raise ModelLoadError(f"model bundle {bundle_dir} does not exist (expected a directory with model.json)")
    if not meta_path.is_file():
        raise ModelLoadError(f"{meta_path} is missing: {bundle_dir} is not a model bundle (run `catsdogs export`)")
    try:
        meta = json.loads(meta_path.read_text())
        meta["files"]["onnx"]
        preprocess = meta["preprocess"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{meta_path} is not a valid bundle description: {exc!r}") from exc
    _parse_preprocess(preprocess)
    return meta


def bundle_digest(bundle_dir: Path, meta: dict[str, Any]) -> str:
    """sha256 over the bundle's served model files (name + content): its identity in any registry."""
    h = hashlib.sha256()
    for key in sorted({key for _, key in BACKEND_FILES.values()}):
        name = meta["files"].get(key)
        if name:
            h.update(name.encode() + b"\0" + hashlib.sha256((bundle_dir / name).read_bytes()).digest())
    return h.hexdigest()


def _parse_preprocess(d: Any) -> PreprocessConfig:
    """``PreprocessConfig.from_dict`` with an error that names the field at fault."""
    if not isinstance(d, dict):
        raise ModelLoadError(f"model.json preprocess must be an object, got {type(d).__name__}")
    for key in ("image_size", "mean", "std", "class_names"):
        if key not in d:
            raise ModelLoadError(f"model.json preprocess.{key} is missing")
    for key in ("mean", "std", "class_names"):
        if not isinstance(d[key], list):
            raise ModelLoadError(f"model.json preprocess.{key} must be a list, got {d[key]!r}")
    if isinstance(d["image_size"], bool) or not isinstance(d["image_size"], int):
        raise ModelLoadError(f"model.json preprocess.image_size must be an integer, got {d['image_size']!r}")
    try:
        return PreprocessConfig.from_dict(d)
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"model.json preprocess has a value of the wrong type: {exc}") from exc


def resolve_model_uri(model: str | Path) -> Path:
    """A bundle directory for ``model``: a local path, or ``models:/name@alias`` / ``models:/name/version``."""
    text = str(model)
    if not text.startswith("models:/"):
        try:
            path = Path(text).expanduser().resolve()
            path.is_dir()  # raises for a name too long, which is_dir() does not swallow
        except (OSError, RuntimeError, ValueError) as exc:  # "~nouser", a NUL byte, a name too long
            raise ModelLoadError(f"{text[:200]!r} is not a usable model path: {exc}") from exc
        return path
    try:
        import mlflow
    except ImportError as exc:
        raise ModelLoadError(
            f"{text} is an MLflow registry URI but mlflow is not installed in this environment "
            "(the serving image has no mlflow): pass a bundle directory instead, or install the train extra"
        ) from exc
    from catsdogs.training.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    ref = text.removeprefix("models:/")
    try:
        client = mlflow.MlflowClient()
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, _, number = ref.partition("/")
            version = client.get_model_version(name, number)
        path = mlflow.artifacts.download_artifacts(artifact_uri=version.source)
        if not (Path(path) / "model.json").is_file() and version.run_id:
            # A version registered by training holds the PyTorch model; its run holds the bundle.
            path = mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="bundle")
    except Exception as exc:  # mlflow raises many types (MlflowException, OSError, sqlalchemy errors)
        raise ModelLoadError(f"cannot resolve {text} in the MLflow registry: {exc}") from exc
    log.info("resolved %s to run %s (version %s)", text, version.run_id, version.version)
    return Path(path)


def choose_backend(meta: dict[str, Any], backend: str) -> str:
    """``backend``, or for ``auto`` the bundle's ``default_backend`` when its file and runtime are here,
    else the fp32 file on an installed runtime."""
    if backend != "auto":
        return backend
    chosen = str(meta.get("default_backend") or "onnx")
    if chosen not in BACKEND_FILES:
        raise ModelLoadError(f"model.json default_backend {chosen!r} is not one of {', '.join(BACKEND_FILES)}")
    if meta["files"].get(BACKEND_FILES[chosen][1]) and available(chosen):
        return chosen
    # The fp32 file runs on either runtime: whichever is installed (the serving image ships one).
    fallback = next((b for b in ("onnx", "openvino") if available(b)), "onnx")
    log.warning("bundle default backend %s has no model file or runtime here; using %s (fp32)", chosen, fallback)
    return fallback


# --- bundle validation ------------------------------------------------------------------------------------
# Opsets the exporter may write and this onnxruntime runs (ORT itself refuses newer ones at load time).
MIN_OPSET = 13
_RESAMPLING = frozenset({"bilinear", "bicubic"})
_MAX_IMAGE_SIZE = 2048


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def onnx_opset(model_file: Path) -> int | None:
    """The default-domain opset of an ONNX file, read from its protobuf header (no ``onnx`` package needed).

    ModelProto field 8 is ``opset_import`` (OperatorSetIdProto: 1 = domain, 2 = version); the graph (field 7)
    is skipped by length, so this reads the file but parses only a few bytes.
    """
    buf = model_file.read_bytes()
    pos, found = 0, None
    try:
        while pos < len(buf):
            key, pos = _varint(buf, pos)
            field_no, wire = key >> 3, key & 7
            if wire == 0:
                _, pos = _varint(buf, pos)
                continue
            if wire != 2:  # ModelProto has no fixed-width fields: this is not an ONNX file
                return None
            length, pos = _varint(buf, pos)
            if field_no == 8:
                domain, version, sub = "", None, pos
                while sub < pos + length:
                    k, sub = _varint(buf, sub)
                    if k == (1 << 3 | 2):
                        n, sub = _varint(buf, sub)
                        domain, sub = buf[sub : sub + n].decode(errors="replace"), sub + n
                    elif k == (2 << 3 | 0):
                        version, sub = _varint(buf, sub)
                    else:
                        return None
                if domain in ("", "ai.onnx") and version is not None:
                    found = version
            pos += length
    except IndexError:
        return None
    return found


def _check_preprocess(cfg: PreprocessConfig) -> list[str]:
    problems = []
    if not 8 <= cfg.image_size <= _MAX_IMAGE_SIZE:
        problems.append(f"preprocess.image_size {cfg.image_size} is outside 8..{_MAX_IMAGE_SIZE}")
    if len(cfg.mean) != 3 or not all(math.isfinite(m) for m in cfg.mean):
        problems.append(f"preprocess.mean must be 3 finite numbers (RGB), got {list(cfg.mean)}")
    if len(cfg.std) != 3 or not all(math.isfinite(s) and s > 0 for s in cfg.std):
        problems.append(f"preprocess.std must be 3 positive numbers (RGB), got {list(cfg.std)}")
    names = cfg.class_names
    if len(names) < 2 or len(set(names)) != len(names) or not all(n.strip() for n in names):
        problems.append(f"preprocess.class_names must be 2 or more distinct non-empty names, got {list(names)}")
    if cfg.interpolation not in _RESAMPLING:
        problems.append(f"preprocess.interpolation {cfg.interpolation!r} is not one of {sorted(_RESAMPLING)}")
    return problems


def _check_io(session: Session, cfg: PreprocessConfig) -> list[str]:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or not outputs:
        return [f"the model has {len(inputs)} inputs and {len(outputs)} outputs; expected 1 image input, 1 output"]
    problems = []
    inp, out = inputs[0], outputs[0]
    want = [None, 3, cfg.image_size, cfg.image_size]
    if inp.type != "tensor(float)":
        problems.append(f"the model input is {inp.type}; expected tensor(float)")
    fixed = len(inp.shape) == 4 and all(
        not isinstance(d, int) or w is None or d == w for d, w in zip(inp.shape, want, strict=True)
    )
    if not fixed:
        problems.append(
            f"the model input shape {inp.shape} does not match [N, 3, {cfg.image_size}, {cfg.image_size}] "
            "(preprocess.image_size)"
        )
    n_classes = len(cfg.class_names)
    if len(out.shape) != 2 or (isinstance(out.shape[1], int) and out.shape[1] != n_classes):
        problems.append(f"the model output shape {out.shape} does not match [N, {n_classes}] (class_names)")
    return problems


def validate_bundle(meta: dict[str, Any], session: Session, model_file: Path) -> None:
    """Check everything a request relies on, so that a bad bundle fails its load instead of every request.

    Preprocessing fields, input shape against ``image_size``, outputs against ``class_names``, the opset,
    and one probe run (symbolic dimensions are only known by running). Raises ``ModelLoadError`` listing
    every problem found.
    """
    cfg = _parse_preprocess(meta["preprocess"])
    problems = _check_preprocess(cfg)
    problems += _check_io(session, cfg)
    opset = onnx_opset(model_file)
    if opset is None:
        problems.append(f"{model_file.name} declares no default-domain opset (not an ONNX model?)")
    elif opset < MIN_OPSET:
        problems.append(f"{model_file.name} uses opset {opset}; at least {MIN_OPSET} is supported")
    elif meta.get("opset") is not None and int(meta["opset"]) != opset:
        problems.append(f"model.json says opset {meta['opset']} but {model_file.name} uses opset {opset}")
    if not problems:
        size = cfg.image_size
        probe = np.zeros((1, 3, size, size), dtype=np.float32)
        try:
            (logits,) = session.run([session.get_outputs()[0].name], {session.get_inputs()[0].name: probe})
        except Exception as exc:  # the runtime's own error types
            problems.append(f"a probe run of the model failed: {exc}")
        else:
            if logits.shape != (1, len(cfg.class_names)):
                problems.append(
                    f"the model returns shape {list(logits.shape)} for one image; expected "
                    f"[1, {len(cfg.class_names)}] (one score per class name {list(cfg.class_names)})"
                )
            elif not np.isfinite(logits).all():
                problems.append("the model returns non-finite scores for a blank image")
    if problems:
        raise ModelLoadError("invalid model bundle: " + "; ".join(problems))


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
