"""Test-split evaluation of a checkpoint: metrics JSON (DVC metrics), plots, MLflow logging."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from catsdogs.config import Params
from catsdogs.data import CLASSES
from catsdogs.model import with_tta
from catsdogs.plots import classification_report_text, confusion, confusion_matrix, roc_curve
from catsdogs.train import (
    ArrayLoader,
    SplitData,
    classification_metrics,
    load_checkpoint,
    load_split,
    predict_proba,
)
from catsdogs.transforms import PreprocessConfig, create_transform

log = logging.getLogger(__name__)


def test_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    m = classification_metrics(probs, labels)
    cm = confusion(probs, labels, len(CLASSES))
    return {
        "accuracy": round(m["accuracy"], 6),
        "precision": round(m["precision"], 6),
        "recall": round(m["recall"], 6),
        "f1": round(m["f1"], 6),
        "roc_auc": round(float(roc_auc_score(labels, probs[:, 1])), 6),
        "log_loss": round(m["loss"], 6),
        "n_test": len(labels),
        "confusion_matrix": {"labels": list(CLASSES), "rows_true_cols_predicted": cm.tolist()},
        "per_class_accuracy": {c: round(float(cm[i, i] / max(1, cm[i].sum())), 6) for i, c in enumerate(CLASSES)},
    }


def _load(
    params: Params, checkpoint: Path | None, image_size: int | None = None
) -> tuple[torch.nn.Module, PreprocessConfig, dict[str, Any], Path]:
    """Model, preprocessing, raw checkpoint and the prepared-data folder it was trained on."""
    path = checkpoint or params.path(params.train.output_dir) / "best.pt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: run `catsdogs train` first")
    model, cfg, ckpt = load_checkpoint(path, image_size=image_size)
    prepared_dir = Path(ckpt.get("prepared_dir") or params.path(params.data.prepared_dir))
    return model, cfg, ckpt, prepared_dir


def _predict(model: torch.nn.Module, cfg: PreprocessConfig, data: SplitData, tta: str) -> np.ndarray:
    loader = ArrayLoader(data.pixels, data.labels, 256, shuffle=False)
    # fp32: the numbers must describe the exported model, not the bf16 training graph.
    probs, _ = predict_proba(with_tta(model, tta), loader, create_transform(cfg), torch.device("cpu"), bf16=False)
    return probs


def run_evaluation(params: Params, *, checkpoint: Path | None = None, output: Path | None = None) -> dict[str, Any]:
    inf = params.inference
    model, cfg, ckpt, prepared_dir = _load(params, checkpoint, inf.image_size)
    test = load_split(params, prepared_dir, cfg, "test")
    probs, labels = _predict(model, cfg, test, inf.tta), test.labels
    metrics = test_metrics(probs, labels)
    metrics.update(
        {
            "model": ckpt["model_name"],
            "image_size": cfg.image_size,
            "train_image_size": ckpt.get("params", {}).get("model", {}).get("image_size"),
            "tta": inf.tta,
            "checkpoint_epoch": ckpt["state"]["epoch"],
        }
    )

    output = output or params.path("reports/metrics.json")
    plots_dir = output.parent / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(metrics, indent=2) + "\n")
    confusion_matrix(probs, labels, CLASSES, plots_dir / "test_confusion_matrix.png", title="Test")
    roc_curve(probs, labels, plots_dir / "test_roc_curve.png")
    (output.parent / "test_classification_report.txt").write_text(classification_report_text(probs, labels, CLASSES))
    log.info(
        "test accuracy %.4f, f1 %.4f, roc_auc %.4f on %d images",
        metrics["accuracy"],
        metrics["f1"],
        metrics["roc_auc"],
        len(labels),
    )

    run_id = ckpt["state"].get("run_id")
    if run_id:
        import mlflow

        from catsdogs import tracking

        tracking.setup_mlflow()
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics({f"test_{k}": metrics[k] for k in ("accuracy", "precision", "recall", "f1", "roc_auc")})
            mlflow.log_artifact(str(output), "evaluation")
            mlflow.log_artifact(str(output.parent / "test_classification_report.txt"), "evaluation")
            for png in plots_dir.glob("test_*.png"):
                mlflow.log_artifact(str(png), "plots")
    return metrics


def sweep_inference(
    params: Params, sizes: list[int], ttas: list[str], *, checkpoint: Path | None = None, split: str = "val"
) -> list[dict[str, Any]]:
    """Accuracy and log loss for each inference size x TTA on a tuning split.

    This is how ``inference.image_size`` and ``inference.tta`` are chosen. The test split
    is refused: choosing on it would make the reported test accuracy optimistic.
    """
    if split == "test":
        raise ValueError("inference settings are chosen on the validation split, never on test")
    model, train_cfg, _, prepared_dir = _load(params, checkpoint)
    rows = []
    for size in sizes:
        cfg = dataclasses.replace(train_cfg, image_size=size)
        data = load_split(params, prepared_dir, cfg, split)
        for tta in ttas:
            m = classification_metrics(_predict(model, cfg, data, tta), data.labels)
            rows.append(
                {
                    "image_size": size,
                    "tta": tta,
                    "accuracy": round(m["accuracy"], 6),
                    "log_loss": round(m["loss"], 6),
                    # compute per image relative to one pass at the training size
                    "relative_cost": round((size / train_cfg.image_size) ** 2 * (2 if tta == "flip" else 1), 2),
                    "n": len(data.labels),
                }
            )
            log.info("%s: %dpx tta=%s accuracy %.4f log_loss %.4f", split, size, tta, m["accuracy"], m["loss"])
    return rows


def best_setting(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The most accurate row; lower log loss breaks ties."""
    return max(rows, key=lambda r: (r["accuracy"], -r["log_loss"]))


def recommend(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The one-standard-error rule: the cheapest setting within one standard error of the best accuracy.

    Differences smaller than the sampling noise of the tuning split are not worth paying
    for in serving latency.
    """
    best = best_setting(rows)
    se = math.sqrt(best["accuracy"] * (1 - best["accuracy"]) / best["n"])
    close = [r for r in rows if r["accuracy"] >= best["accuracy"] - se]
    return min(close, key=lambda r: (r["relative_cost"], -r["accuracy"]))
