"""Model bundles: find one (a directory or an MLflow registry URI), read and check its ``model.json``,
validate its ONNX file, and name it by content (``bundle_digest``, its identity in any registry).

A bundle is a directory with ``model.json`` (metadata + preprocessing), ``model.onnx`` and optionally
``model.int8.onnx``. mlflow is imported only for a registry URI: the serving image does not ship it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from catsdogs.core.paths import tracking_uri
from catsdogs.core.transforms import PreprocessConfig
from catsdogs.inference.backends import BACKEND_FILES, Session, available

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The model (bundle directory or registry URI) cannot be loaded; the message says why."""


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


def serving_files(bundle_dir: Path, meta: dict[str, Any]) -> list[Path]:
    """What a copy of the bundle needs to serve: model.json, the card and the model files (no PyTorch weights)."""
    names = {"model.json", "MODEL_CARD.md"} | {meta["files"].get(key) for _, key in BACKEND_FILES.values()}
    return sorted(bundle_dir / n for n in names if n and (bundle_dir / n).is_file())


PYFUNC_BUNDLE_KEY = "bundle"  # the name of the bundle among a pyfunc model's artifacts (inference.pyfunc)


def bundle_in_model(model_dir: Path) -> Path | None:
    """The bundle directory inside a downloaded pyfunc model of ``inference.pyfunc``, or None for any other model."""
    if not (model_dir / "MLmodel").is_file():
        return None
    import mlflow

    flavor = mlflow.models.Model.load(str(model_dir)).flavors.get("python_function", {})
    artifact = (flavor.get("artifacts") or {}).get(PYFUNC_BUNDLE_KEY)
    if not artifact:
        return None
    path = model_dir / artifact["path"]
    read_bundle_meta(path)  # raises ModelLoadError naming what is wrong
    return path


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
        path = bundle_in_model(Path(path)) or path  # a pyfunc version (the gate's) carries the bundle as an artifact
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
