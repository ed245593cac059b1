"""Test-split evaluation of a checkpoint: metrics JSON (DVC metrics), plots, MLflow logging."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from catsdogs.config import Params
from catsdogs.data import CLASSES
from catsdogs.model import with_tta
from catsdogs.plots import classification_report_text, confusion, confusion_matrix, roc_curve
from catsdogs.train import ArrayLoader, classification_metrics, load_checkpoint, load_splits, predict_proba
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


def run_evaluation(params: Params, *, checkpoint: Path | None = None, output: Path | None = None) -> dict[str, Any]:
    ckpt_path = checkpoint or params.path(params.train.output_dir) / "best.pt"
    if not ckpt_path.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt_path}: run `catsdogs train` first")
    model, cfg, ckpt = load_checkpoint(ckpt_path)
    model = with_tta(model, params.inference.tta)
    prepared_dir = Path(ckpt.get("prepared_dir") or params.path(params.data.prepared_dir))
    splits, _ = load_splits(params, prepared_dir, PreprocessConfig(image_size=cfg.image_size), progress=False)
    test = splits["test"]
    loader = ArrayLoader(test.pixels, test.labels, 256, shuffle=False)
    # fp32: the numbers must describe the exported model, not the bf16 training graph.
    probs, labels = predict_proba(model, loader, create_transform(cfg), torch.device("cpu"), bf16=False)
    metrics = test_metrics(probs, labels)
    metrics.update(
        {
            "model": ckpt["model_name"],
            "image_size": cfg.image_size,
            "tta": params.inference.tta,
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
