"""Export a checkpoint to the serving bundle: ONNX fp32 (+ static INT8), model.json, model card.

Every export is checked: ONNX probabilities are compared with PyTorch on real test
images, and the INT8 model is kept only if it loses at most
``export.int8_max_accuracy_drop`` accuracy on the whole test split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from catsdogs import __version__
from catsdogs.config import Params
from catsdogs.model import count_parameters, with_tta
from catsdogs.train import ArrayLoader, load_checkpoint, load_splits, predict_proba
from catsdogs.transforms import PreprocessConfig, create_transform

log = logging.getLogger(__name__)

INPUT, OUTPUT = "input", "logits"


def export_onnx(model: torch.nn.Module, path: Path, image_size: int, opset: int) -> None:
    """fp32 ONNX with a dynamic batch axis.

    The TorchScript-based exporter is used on purpose: for this plain conv net it gives
    the same graph as the dynamo exporter in ~1 s instead of ~45 s on two cores, and
    parity with PyTorch is checked after every export anyway.
    """
    import warnings

    dummy = torch.zeros(1, 3, image_size, image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (dummy,),
            str(path),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    import onnx

    onnx.checker.check_model(str(path))


def ort_session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    from catsdogs.predictor import available_cpus, session_options

    opts = session_options(threads or available_cpus())
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_proba(session: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    out = []
    for i in range(0, len(x), batch_size):
        logits = session.run([OUTPUT], {INPUT: x[i : i + batch_size]})[0]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        out.append(e / e.sum(axis=1, keepdims=True))
    return np.concatenate(out)


def latency_ms(session: Any, image_size: int, runs: int = 50) -> dict[str, float]:
    """Model-only, batch-1 latency percentiles (a measurement, reported, never asserted in tests)."""
    x = np.random.default_rng(0).standard_normal((1, 3, image_size, image_size), dtype=np.float32)
    for _ in range(5):
        session.run([OUTPUT], {INPUT: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run([OUTPUT], {INPUT: x})
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"p50": round(statistics.median(times), 3), "p95": round(times[int(0.95 * (len(times) - 1))], 3)}


class _Calibration:
    """Feeds calibration batches to onnxruntime's static quantizer."""

    def __init__(self, x: np.ndarray, batch_size: int = 32):
        self.batches = iter([{INPUT: x[i : i + batch_size]} for i in range(0, len(x), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: np.ndarray) -> None:
    """Static INT8 in QDQ format: per-channel s8 weights, u8 activations (dynamic INT8 is ~6x slower here)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)
        quantize_static(
            str(prepped),
            str(int8_path),
            _Calibration(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_export(params: Params, *, checkpoint: Path | None = None, output_dir: Path | None = None) -> dict[str, Any]:
    ckpt_path = checkpoint or params.path(params.train.output_dir) / "best.pt"
    if not ckpt_path.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt_path}: run `catsdogs train` first")
    out = output_dir or params.path(params.export.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, cfg, ckpt = load_checkpoint(ckpt_path, image_size=params.inference.image_size)
    prepared_dir = Path(ckpt.get("prepared_dir") or params.path(params.data.prepared_dir))
    splits, _ = load_splits(params, prepared_dir, PreprocessConfig(image_size=cfg.image_size), progress=False)
    transform = create_transform(cfg)
    test = splits["test"]
    x_test = transform.batch(torch.from_numpy(test.pixels)).numpy()  # the exact serving preprocessing

    onnx_path, int8_path = out / "model.onnx", out / "model.int8.onnx"
    torch.save(model.state_dict(), out / "model.pt")  # for the PyTorch baseline and parity checks
    model = with_tta(model, params.inference.tta)
    export_onnx(model, onnx_path, cfg.image_size, params.export.opset)

    loader = ArrayLoader(test.pixels, test.labels, 256, shuffle=False)
    p_torch, labels = predict_proba(model, loader, transform, torch.device("cpu"), bf16=False)
    fp32 = ort_session(onnx_path)
    p_onnx = ort_proba(fp32, x_test)
    parity = float(np.abs(p_onnx - p_torch).max())
    acc_fp32 = float((p_onnx.argmax(1) == labels).mean())
    report: dict[str, Any] = {
        "onnx": {"path": str(onnx_path), "accuracy": acc_fp32, "max_prob_diff_vs_torch": parity},
        "latency_ms": {"onnx": latency_ms(fp32, cfg.image_size)},
    }
    log.info("ONNX fp32: accuracy %.4f, max |p_onnx - p_torch| = %.2e", acc_fp32, parity)

    int8_kept = False
    if params.export.quantize:
        train_px = splits["train"].pixels
        step = max(1, len(train_px) // params.export.calibration_images)
        calib = transform.batch(torch.from_numpy(np.ascontiguousarray(train_px[::step]))).numpy()
        quantize_int8(onnx_path, int8_path, calib[: params.export.calibration_images])
        int8 = ort_session(int8_path)
        acc_int8 = float((ort_proba(int8, x_test).argmax(1) == labels).mean())
        drop = acc_fp32 - acc_int8
        int8_kept = drop <= params.export.int8_max_accuracy_drop
        report["int8"] = {"accuracy": acc_int8, "accuracy_drop": drop, "kept": int8_kept}
        report["latency_ms"]["onnx-int8"] = latency_ms(int8, cfg.image_size)
        log.info("ONNX INT8: accuracy %.4f (drop %.4f) -> %s", acc_int8, drop, "kept" if int8_kept else "discarded")
        if not int8_kept:
            int8_path.unlink()
    elif int8_path.exists():
        int8_path.unlink()

    lat = report["latency_ms"]
    default_backend = "onnx-int8" if int8_kept and lat["onnx-int8"]["p50"] < lat["onnx"]["p50"] else "onnx"
    metrics_file = params.path("reports/metrics.json")
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    run_dir = ckpt_path.parent
    run_info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    registered = run_info.get("registered_version")
    sha = _sha256(onnx_path)
    meta = {
        "name": "catsdogs",
        "version": f"{__version__}+{'r' + registered if registered else 'local'}.{sha[:8]}",
        "architecture": ckpt["model_name"],
        "tta": params.inference.tta,
        "parameters": count_parameters(model),
        "preprocess": cfg.to_dict(),
        "metrics": {k: metrics[k] for k in ("accuracy", "precision", "recall", "f1", "roc_auc") if k in metrics},
        "n_test": metrics.get("n_test"),
        "files": {"onnx": onnx_path.name, "onnx_int8": int8_path.name if int8_kept else None, "torch": "model.pt"},
        "sha256": {"onnx": sha},
        "default_backend": default_backend,
        "export": report | {"onnx": {k: v for k, v in report["onnx"].items() if k != "path"}},
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": ckpt.get("params", {}).get("git_commit") or _git_commit(),
        "mlflow_run_id": ckpt["state"].get("run_id"),
        "registered_version": registered,
        "training": {
            k: run_info.get(k)
            for k in ("epochs_run", "best_epoch", "best_val_accuracy", "train_seconds", "device", "bf16", "threads")
        },
        "params": ckpt.get("params", {}),
    }
    (out / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "MODEL_CARD.md").write_text(model_card(meta, prepared_dir))
    _log_bundle(meta, out)
    return report


def _git_commit() -> str:
    from catsdogs.tracking import git_commit

    return git_commit()


def _log_bundle(meta: dict[str, Any], bundle: Path) -> None:
    """Attach the bundle to the training run as artifact path ``bundle`` (what ``models:/`` URIs serve)."""
    if not meta["mlflow_run_id"]:
        return
    import mlflow

    from catsdogs import tracking

    tracking.setup_mlflow()
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "bundle"
        shutil.copytree(bundle, staged)
        with mlflow.start_run(run_id=meta["mlflow_run_id"]):
            mlflow.log_artifacts(str(staged), "bundle")
            mlflow.log_metric("onnx_max_prob_diff", meta["export"]["onnx"]["max_prob_diff_vs_torch"])


def _train_size_note(meta: dict[str, Any]) -> str:
    trained = meta["params"].get("model", {}).get("image_size")
    served = meta["preprocess"]["image_size"]
    if not trained or trained == served:
        return ""
    return (
        f"\n- Trained at {trained}x{trained}, served at {served}x{served} (`inference.image_size`, chosen on the"
        " validation split with `catsdogs tune-inference`): random-resized-crop training makes animals look"
        " larger than a plain resize does, and a larger test size matches them again (FixRes)."
    )


def model_card(meta: dict[str, Any], prepared_dir: Path) -> str:
    stats_file = prepared_dir / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    counts = stats.get("counts", {})
    split_rows = "\n".join(
        f"| {s} | {c.get('cat', 0):,} | {c.get('dog', 0):,} | {c.get('cat', 0) + c.get('dog', 0):,} |"
        for s, c in counts.items()
    )
    m = meta["metrics"]
    t = meta["training"]
    p = meta["params"]
    tp = p.get("train", {})
    lat = meta["export"]["latency_ms"]
    int8 = meta["export"].get("int8")
    metric_rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in m.items())
    train_min = f"{t['train_seconds'] / 60:.1f} min" if t.get("train_seconds") else "n/a"
    return f"""# Model card: catsdogs {meta["version"]}

Binary image classifier: is the pet in the photo a **cat** or a **dog**?

## Model
- Architecture: `{meta["architecture"]}` ({meta["parameters"]:,} parameters), input {meta["preprocess"]["image_size"]}x{meta["preprocess"]["image_size"]} RGB,
  squash-resized (bilinear), normalised with the training split's mean {meta["preprocess"]["mean"]} / std {meta["preprocess"]["std"]}.{_train_size_note(meta)}
- Files: `model.onnx` (fp32){", `model.int8.onnx` (static INT8, QDQ)" if meta["files"]["onnx_int8"] else ""}, `model.pt` (PyTorch state dict), `model.json` (metadata + preprocessing).
- Test-time augmentation inside the exported graph: `{meta["tta"]}`{" (logits averaged with the mirrored image)" if meta["tta"] == "flip" else ""}.
- Default serving backend: `{meta["default_backend"]}`.

## Data
- Source: Kaggle "Dogs vs. Cats" training set (Asirra; 200x200 redistribution), {stats.get("found", "?"):,} files found,
  {stats.get("kept", "?"):,} kept after validation and content de-duplication ({stats.get("duplicates_removed", "?")} byte-identical duplicates removed, skipped: {stats.get("skipped", {})}).
- Split by content hash (deterministic, stable when files are added, no duplicate across splits), 80/10/10:

| split | cat | dog | total |
|---|---:|---:|---:|
{split_rows}

## Training
- Params: epochs {tp.get("epochs")} (ran {t.get("epochs_run")}, best epoch {t.get("best_epoch")}), batch {tp.get("batch_size")}, AdamW lr {tp.get("lr")} (warm-up + cosine), weight decay {tp.get("weight_decay")}, label smoothing {tp.get("label_smoothing")}, dropout {p.get("model", {}).get("dropout")}, augmentation {tp.get("augment")}.
- Hardware: {t.get("device")} with {t.get("threads")} threads, bf16 autocast + channels_last: {t.get("bf16")}. Training time: {train_min}.
- Best validation accuracy: {t.get("best_val_accuracy")}. MLflow run `{meta["mlflow_run_id"]}`, registered version {meta["registered_version"]}.

## Test metrics (held-out test split, {meta.get("n_test")} images, fp32)
| metric | value |
|---|---:|
{metric_rows}

ONNX parity vs PyTorch: max probability difference {meta["export"]["onnx"]["max_prob_diff_vs_torch"]:.2e}.
{f"INT8: accuracy {int8['accuracy']:.4f} (drop {int8['accuracy_drop'] * 100:.2f} points), {'kept' if int8['kept'] else 'discarded'}." if int8 else ""}
Model-only latency, batch 1 (ms, p50/p95): {", ".join(f"{k} {v['p50']}/{v['p95']}" for k, v in lat.items())}.

## Reproduce
```bash
make init
.venv/bin/dvc repro          # prepare -> train -> evaluate -> export, with params.yaml
# or step by step:
.venv/bin/catsdogs data prepare && .venv/bin/catsdogs train && .venv/bin/catsdogs evaluate && .venv/bin/catsdogs export
```
Git commit of the training code: `{meta["git_commit"]}`.

## Intended use and limits
For sorting pet photos on an adoption platform. Trained only on cats and dogs: any other image
(other animals, people, drawings) still gets a cat/dog answer, and low confidence is the only hint.
The Kaggle images are mostly amateur photos of one animal; photos with several animals, unusual
breeds or heavy filters are less reliable. Monitor the `prediction_confidence` distribution in production.
"""
