"""Export a checkpoint to the serving bundle: ONNX fp32 (+ static INT8), model.json, model card.

Every export is checked: ONNX probabilities are compared with PyTorch on real test
images, and the INT8 model is kept only if it loses at most
``export.int8_max_accuracy_drop`` accuracy on the whole test split.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from catsdogs import __version__
from catsdogs.core.config import Params
from catsdogs.core.cpus import available_cpus
from catsdogs.core.transforms import PreprocessConfig, create_transform
from catsdogs.data.loaders import load_split
from catsdogs.data.prepare import ensure_prepared
from catsdogs.inference.backends import available, latency_ms, native_bf16, open_session
from catsdogs.inference.bundle import bundle_digest
from catsdogs.inference.predictor import LOOKS_OUTPUT, PET_OUTPUT, Predictor
from catsdogs.models.architectures import count_parameters
from catsdogs.models.serving import serving_model
from catsdogs.release.calibrate import Calibration
from catsdogs.training.checkpoint import load_model
from catsdogs.training.metrics import softmax

log = logging.getLogger(__name__)

INPUT, OUTPUT = "input", "logits"


def export_onnx(model: torch.nn.Module, path: Path, image_size: int, opset: int) -> list[str]:
    """fp32 ONNX with a dynamic batch axis; returns the output names.

    The TorchScript-based exporter is used on purpose: for these conv nets it gives the same graph
    as the dynamo exporter in seconds instead of minutes on two cores, and parity with PyTorch is
    checked after every export anyway.
    """
    import warnings

    dummy = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        outputs = [OUTPUT, PET_OUTPUT, LOOKS_OUTPUT] if isinstance(model(dummy), tuple) else [OUTPUT]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (dummy,),
            str(path),
            input_names=[INPUT],
            output_names=outputs,
            dynamic_axes={INPUT: {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
            opset_version=opset,
            dynamo=False,
        )
    import onnx

    onnx.checker.check_model(str(path))
    return outputs


def ort_session(path: Path, threads: int | None = None) -> Any:
    return open_session("onnx", path, threads or available_cpus())


def ort_proba(session: Any, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Probabilities from an ONNX Runtime session (the bundle's first output holds the logits)."""
    return softmax(
        np.concatenate([session.run([OUTPUT], {INPUT: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)])
    )


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


def run_export(
    params: Params, *, checkpoint: Path | None = None, output_dir: Path | None = None, metrics_file: Path | None = None
) -> dict[str, Any]:
    """The bundle in ``output_dir``; ``metrics_file`` is the model's test report (default: reports/metrics.json)."""
    ckpt_path = checkpoint or params.path(params.train.output_dir) / "best.pt"
    cal = Calibration.load(ckpt_path.parent / "calibration.json")
    model, cfg, ckpt = load_model(ckpt_path, image_size=params.inference.image_size)
    out = output_dir or params.path(params.export.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    prepared_dir = ensure_prepared(params, fallback_dir=ckpt_path.parent / "prepared")
    # val and test only (train only for INT8 calibration): at 288 px all three splits as float32 do not fit in 24 GB
    pixel_cfg = PreprocessConfig(image_size=cfg.image_size)
    splits = {s: load_split(params, prepared_dir, pixel_cfg, s) for s in ("val", "test")}
    to_input = create_transform(cfg)  # the exact serving preprocessing
    x = {s: to_input.batch(torch.from_numpy(np.ascontiguousarray(splits[s].pixels))).numpy() for s in ("val", "test")}
    labels = {s: splits[s].labels for s in ("val", "test")}

    onnx_path, int8_path = out / "model.onnx", out / "model.int8.onnx"
    torch.save(model.state_dict(), out / "model.pt")  # for the PyTorch baseline and parity checks
    graph = serving_model(model, temperature=cal.temperature, tta=params.inference.tta, pet=cal.pet_score())
    outputs = export_onnx(graph, onnx_path, cfg.image_size, params.export.opset)
    report, p_onnx = check_fp32(graph, onnx_path, x, labels)
    if params.export.quantize:
        train_px = load_split(params, prepared_dir, pixel_cfg, "train").pixels
        step = max(1, len(train_px) // params.export.calibration_images)
        pick = np.ascontiguousarray(train_px[::step][: params.export.calibration_images])
        x_calib = to_input.batch(torch.from_numpy(pick)).numpy()
        try_int8(onnx_path, int8_path, x_calib, x, labels, report, params.export.int8_max_accuracy_drop)
    else:
        int8_path.unlink(missing_ok=True)
    check_openvino(onnx_path, x, p_onnx, report, params.gate.max_parity_diff)
    check_bf16(onnx_path, x, labels, cfg, cal, report, params.export.bf16_max_changed_answers)
    default_backend = fastest_backend(report)
    metrics_file = metrics_file or params.path("reports/metrics.json")
    meta = bundle_meta(params, ckpt, cfg, cal, model, report, outputs, out, default_backend, metrics_file)
    (out / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    _log_bundle(meta, out)
    return report


def check_fp32(
    graph: torch.nn.Module, onnx_path: Path, x: dict[str, np.ndarray], labels: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """ONNX vs PyTorch parity on test images, the fp32 accuracy on val and test, and those probabilities."""
    sample = x["test"][:256]
    with torch.no_grad():
        out = graph(torch.from_numpy(sample))
    p_torch = softmax((out[0] if isinstance(out, tuple) else out).numpy())
    fp32 = ort_session(onnx_path)
    parity = float(np.abs(ort_proba(fp32, sample) - p_torch).max())
    probs = {s: ort_proba(fp32, x[s]) for s in x}
    acc = {s: float((probs[s].argmax(1) == labels[s]).mean()) for s in x}
    log.info("ONNX fp32: val %.4f, test %.4f, max |p_onnx - p_torch| = %.2e", acc["val"], acc["test"], parity)
    report = {
        "onnx": {"val_accuracy": acc["val"], "accuracy": acc["test"], "max_prob_diff_vs_torch": parity},
        "latency_ms": {"onnx": latency_ms(fp32, x["test"][:1], runs=50)},
    }
    return report, probs


def check_openvino(
    onnx_path: Path, x: dict[str, np.ndarray], p_onnx: dict[str, np.ndarray], report: dict[str, Any], max_diff: float
) -> None:
    """OpenVINO on the fp32 ONNX file: its parity with ONNX Runtime (``p_onnx``) on val and test, its latency."""
    if not available("openvino"):
        log.info("openvino is not installed: the bundle's default backend is chosen among ONNX Runtime ones")
        return
    ov = open_session("openvino", onnx_path, available_cpus())
    diff = max(float(np.abs(ort_proba(ov, x[s]) - p_onnx[s]).max()) for s in x)
    report["openvino"] = {"max_prob_diff_vs_onnx": diff, "parity": diff <= max_diff}
    report["latency_ms"]["openvino"] = latency_ms(ov, x["test"][:1], runs=50)
    log.info("OpenVINO: max |p_openvino - p_onnx| = %.2e, p50 %.2f ms", diff, report["latency_ms"]["openvino"]["p50"])


def served_answers(predictor: Predictor, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(N, 3) what a client is told per image: label index, not a cat or a dog, not sure."""
    rows = []
    for i in range(0, len(x), batch_size):
        for p in predictor.predict_array(x[i : i + batch_size]):
            rows.append((predictor.class_names.index(p.label), not p.is_cat_or_dog, p.uncertain))
    return np.asarray(rows, dtype=np.int64)


def check_bf16(
    onnx_path: Path,
    x: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    cfg: PreprocessConfig,
    cal: Calibration,
    report: dict[str, Any],
    max_changed: float,
) -> None:
    """OpenVINO in bf16 against f32, through the served answers: kept if at most ``max_changed`` of val changes.

    The thresholds were fitted on f32 scores and bf16 moves scores by ~1e-3, so what counts is how many
    answers move: the label or the not-a-pet verdict. "Not sure" flips sit on a soft boundary by
    definition; they are reported, not counted.
    """
    if not native_bf16():
        log.info("no native bf16 on this CPU (or no openvino): the openvino-bf16 backend is not measured")
        return
    thresholds = {"pet_score": cal.pet_threshold, "unsure_below": cal.unsure_below}
    meta = {"preprocess": cfg.to_dict(), "thresholds": thresholds}
    answers, sessions = {}, {}
    for backend in ("openvino", "openvino-bf16"):
        sessions[backend] = session = open_session(backend, onnx_path, available_cpus())
        predictor = Predictor(bundle_dir=onnx_path.parent, meta=meta, backend=backend, threads=0, session=session)
        answers[backend] = {s: served_answers(predictor, x[s]) for s in x}
    f32, bf16 = answers["openvino"], answers["openvino-bf16"]
    flips = {s: f32[s] != bf16[s] for s in x}  # (N, 3): label, not a pet, not sure
    result = {f"{s}_changed_answers": float(flips[s][:, :2].any(axis=1).mean()) for s in x}
    result |= {f"{s}_changed_unsure": float(flips[s][:, 2].mean()) for s in x}
    result |= {"val_accuracy": float((bf16["val"][:, 0] == labels["val"]).mean())}
    result |= {"accuracy": float((bf16["test"][:, 0] == labels["test"]).mean())}
    result["kept"] = result["val_changed_answers"] <= max_changed
    report["openvino-bf16"] = result
    report["latency_ms"]["openvino-bf16"] = latency_ms(sessions["openvino-bf16"], x["test"][:1], runs=50)
    log.info("OpenVINO bf16: %.2f %% of val answers changed -> %s", 100 * result["val_changed_answers"],
             "kept" if result["kept"] else "discarded")  # fmt: skip


def fastest_backend(report: dict[str, Any]) -> str:
    """The backend with the lowest p50 among those that kept the fp32 model's answers (INT8 kept, OV parity)."""
    ok = {"onnx": True, "onnx-int8": report.get("int8", {}).get("kept", False)}
    ok["openvino"] = report.get("openvino", {}).get("parity", False)
    ok["openvino-bf16"] = ok["openvino"] and report.get("openvino-bf16", {}).get("kept", False)
    lat = report["latency_ms"]
    return min((b for b in lat if ok.get(b)), key=lambda b: lat[b]["p50"])


def try_int8(
    onnx_path: Path,
    int8_path: Path,
    x_calib: np.ndarray,
    x: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    report: dict[str, Any],
    max_drop: float,
) -> bool:
    """Static INT8, kept only if it loses at most ``max_drop`` accuracy on val (the choice never sees test)."""
    quantize_int8(onnx_path, int8_path, x_calib)
    int8 = ort_session(int8_path)
    acc = {s: float((ort_proba(int8, x[s]).argmax(1) == labels[s]).mean()) for s in x}
    drop = report["onnx"]["val_accuracy"] - acc["val"]
    kept = drop <= max_drop
    report["int8"] = {"val_accuracy": acc["val"], "accuracy": acc["test"], "val_accuracy_drop": drop, "kept": kept}
    report["latency_ms"]["onnx-int8"] = latency_ms(int8, x["test"][:1], runs=50)
    log.info("ONNX INT8: val %.4f (drop %.4f) -> %s", acc["val"], drop, "kept" if kept else "discarded")
    if not kept:
        int8_path.unlink()
    return kept


def pet_score_meta(cal: Calibration) -> dict[str, Any] | None:
    """How the bundle's pet score is made, for model.json and the card (None: the model has none)."""
    from catsdogs.models.petscore import EVIDENCE

    if cal.pet_weights is None:
        return None
    return {
        "method": "logistic regression on the untouched ImageNet head (fitted on val + development sets)",
        "evidence": list(EVIDENCE),
        "weights": cal.pet_weights,
        "bias": cal.pet_bias,
        "looks_like": "ImageNet index of the best class that is not a cat or a dog (catsdogs.inference.looks_like)",
    }


def bundle_meta(
    params: Params,
    ckpt: Any,
    cfg: PreprocessConfig,
    cal: Calibration,
    model: torch.nn.Module,
    report: dict[str, Any],
    outputs: list[str],
    out: Path,
    default_backend: str,
    metrics_file: Path,
) -> dict[str, Any]:
    """model.json: what the server needs to run the bundle, and where it came from."""
    files = {"onnx": "model.onnx", "onnx_int8": "model.int8.onnx" if (out / "model.int8.onnx").exists() else None}
    digest = bundle_digest(out, {"files": files})
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    run_file = params.path(params.train.output_dir) / "run.json"
    run_info = json.loads(run_file.read_text()) if run_file.exists() else {}
    return {
        "name": "catsdogs",
        "version": f"{__version__}+{digest[:8]}",
        "architecture": ckpt.model_name,
        "tta": params.inference.tta,
        "parameters": count_parameters(model),
        "preprocess": cfg.to_dict(),
        "outputs": outputs,
        "calibration": {"method": "temperature scaling (fitted on val)", "temperature": cal.temperature},
        "thresholds": {"pet_score": cal.pet_threshold, "unsure_below": cal.unsure_below},
        "pet_score": pet_score_meta(cal),
        "metrics": {k: metrics[k] for k in ("accuracy", "precision", "recall", "f1", "roc_auc") if k in metrics},
        "n_test": metrics.get("n_test"),
        "files": files | {"torch": "model.pt"},
        "sha256": {"bundle": digest},
        "default_backend": default_backend,
        "opset": params.export.opset,
        "export": report,
        # Lineage: the commit of the code that *trained* the model, and the data it saw.
        "git_commit": ckpt.git_commit,
        "data_hash": ckpt.data_hash,
        "mlflow_run_id": ckpt.state.run_id,
        "training": {
            k: run_info.get(k)
            for k in (
                "epochs_run",
                "best_epoch",
                "best_val_accuracy",
                "train_seconds",
                "device",
                "world_size",
                "threads",
            )
        },
        "params": ckpt.params,
    }


def _log_bundle(meta: dict[str, Any], bundle: Path) -> None:
    """Attach the bundle to the training run as artifact path ``bundle`` (what ``models:/`` URIs serve)."""
    from catsdogs.training import tracking

    if not tracking.known_run(meta["mlflow_run_id"]):
        return
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "bundle"
        shutil.copytree(bundle, staged)
        with mlflow.start_run(run_id=meta["mlflow_run_id"]):
            mlflow.log_artifacts(str(staged), "bundle")
            mlflow.log_metric("onnx_max_prob_diff", meta["export"]["onnx"]["max_prob_diff_vs_torch"])
            mlflow.set_tag("bundle_sha256", meta["sha256"]["bundle"])
