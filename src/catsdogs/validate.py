"""The quality gate CI runs before a model may ship.

It re-measures the bundle itself, on the held-out test split, through the serving
preprocessing path (decode -> resize -> normalise -> ONNX Runtime), and fails with
the reason when accuracy, ONNX/PyTorch parity or single-image latency misses its
threshold in ``params.yaml``. On success the registry alias ``champion`` moves to
the bundle's registered version.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catsdogs.config import Params
from catsdogs.data import CLASSES, ensure_prepared, read_manifest
from catsdogs.transforms import PreprocessConfig, create_transform, load_image

log = logging.getLogger(__name__)


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class GateResult:
    checks: list[Check] = field(default_factory=list)
    promoted: str | None = None

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)


def _test_inputs(params: Params, cfg: PreprocessConfig, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    prepared = ensure_prepared(params, fallback_dir=params.path(params.train.output_dir) / "prepared")
    source = Path(json.loads((prepared / "stats.json").read_text())["source"])
    records = [r for r in read_manifest(prepared / "manifest.csv") if r.split == "test"][:limit]
    if not records:
        raise ValueError(f"the test split in {prepared} is empty")
    transform = create_transform(cfg)
    x = np.stack([transform(load_image((source / r.path).read_bytes(), target_size=cfg.image_size)) for r in records])
    return x, np.asarray([CLASSES.index(r.label) for r in records])


def run_gate(params: Params, *, model_dir: Path | None = None, promote: bool = True) -> GateResult:
    from catsdogs.export import latency_ms, ort_proba, ort_session

    gate = params.gate
    bundle = model_dir or params.path(params.export.output_dir)
    meta_file = bundle / "model.json"
    result = GateResult()
    if not meta_file.exists():
        result.checks.append(Check("bundle", False, f"no model.json in {bundle}: run `catsdogs export` first"))
        return result
    meta = json.loads(meta_file.read_text())
    cfg = PreprocessConfig.from_dict(meta["preprocess"])
    backend = meta.get("default_backend", "onnx")
    model_file = bundle / (meta["files"]["onnx_int8"] if backend == "onnx-int8" else meta["files"]["onnx"])
    session = ort_session(model_file)

    x, labels = _test_inputs(params, cfg)
    probs = ort_proba(session, x)
    accuracy = float((probs.argmax(1) == labels).mean())
    result.checks.append(
        Check(
            "accuracy",
            accuracy >= gate.min_accuracy,
            f"test accuracy {accuracy:.4f} on {len(labels)} images ({backend}) vs threshold {gate.min_accuracy:.4f}",
        )
    )

    torch_file = bundle / meta["files"].get("torch", "model.pt")
    if torch_file.exists():
        import torch

        from catsdogs.model import create_model, with_tta

        model = create_model(meta["architecture"], num_classes=len(cfg.class_names))
        model.load_state_dict(torch.load(torch_file, map_location="cpu", weights_only=True))
        model = with_tta(model.eval(), meta.get("tta"))
        sample = x[:256]
        with torch.no_grad():
            p_torch = torch.softmax(model.eval()(torch.from_numpy(sample)), dim=1).numpy()
        diff = float(np.abs(ort_proba(ort_session(bundle / meta["files"]["onnx"]), sample) - p_torch).max())
        result.checks.append(
            Check(
                "onnx_parity",
                diff <= gate.max_parity_diff,
                f"max |p_onnx - p_torch| {diff:.2e} vs {gate.max_parity_diff:.0e}",
            )
        )
    else:
        result.checks.append(
            Check("onnx_parity", False, f"{torch_file.name} missing from the bundle: parity cannot be checked")
        )

    lat = latency_ms(session, cfg.image_size, runs=100)
    result.checks.append(
        Check(
            "latency",
            lat["p50"] <= gate.max_latency_ms,
            f"single-image p50 {lat['p50']:.2f} ms vs budget {gate.max_latency_ms} ms",
        )
    )

    if result.passed and promote:
        result.promoted = _promote(meta.get("registered_version"), gate.registered_model)
    return result


def _promote(version: str | None, name: str) -> str | None:
    """Set alias ``champion``; a bundle unknown to this registry (e.g. a fresh CI clone) is not an error."""
    if not version:
        log.warning("the bundle has no registered version: nothing to promote")
        return None
    try:
        import mlflow

        from catsdogs import tracking

        tracking.setup_mlflow()
        mlflow.MlflowClient().get_model_version(name, version)
        tracking.set_alias(version, "champion", name)
    except ImportError:
        log.warning("mlflow is not installed: alias champion not set")
        return None
    except Exception as exc:  # MlflowException (unknown version) or an unreachable server
        log.warning(
            "alias champion not set: %s version %s is not in registry %s (%s)",
            name,
            version,
            tracking.tracking_uri(),
            exc,
        )
        return None
    log.info("alias champion -> %s version %s", name, version)
    return version
