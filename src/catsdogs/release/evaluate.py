"""Test-split evaluation of a checkpoint through the serving graph: metrics JSON (DVC metrics), plots, MLflow."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from catsdogs.core.config import Params
from catsdogs.core.transforms import PreprocessConfig
from catsdogs.data.loaders import load_split
from catsdogs.data.prepare import CLASSES
from catsdogs.release.calibrate import Calibration
from catsdogs.release.scoring import load_for_inference, predict_images, predict_split
from catsdogs.training.metrics import classification_metrics, expected_calibration_error, log_loss, softmax
from catsdogs.training.plots import classification_report_text, confusion, confusion_matrix, roc_curve

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
    cal = Calibration.load(ckpt_path.parent / "calibration.json")
    model, cfg, ckpt, prepared_dir = load_for_inference(params, ckpt_path)
    test = load_split(params, prepared_dir, cfg, "test")
    scores = predict_split(model, cfg, test, params.inference.tta, pet=cal.pet_score())
    logits, labels = scores.logits, test.labels
    probs = softmax(logits, cal.temperature)
    metrics = test_metrics(probs, labels)
    metrics["calibration"] = calibration_report(logits, labels, cal)
    if scores.pet is not None and cal.pet_threshold is not None:
        metrics["not_cat_or_dog"] = not_pet_report(model, cfg, params, scores.pet, cal)
    metrics.update(model=ckpt.model_name, image_size=cfg.image_size, tta=params.inference.tta)
    metrics["train_image_size"] = ckpt.params["model"]["image_size"]
    metrics["checkpoint_epoch"] = ckpt.state.best_epoch
    output = output or params.path("reports/metrics.json")
    _write_reports(metrics, probs, labels, output)
    log.info(
        "test accuracy %.4f, f1 %.4f, roc_auc %.4f on %d images",
        metrics["accuracy"],
        metrics["f1"],
        metrics["roc_auc"],
        len(labels),
    )
    _log_to_mlflow(ckpt.state.run_id, metrics, output)
    return metrics


def calibration_report(logits: np.ndarray, labels: np.ndarray, cal: Calibration) -> dict[str, Any]:
    """NLL and 15-bin ECE on this split before and after the temperature fitted on val."""
    before, after = softmax(logits), softmax(logits, cal.temperature)
    sure = after.max(1) >= cal.unsure_below
    # None, not NaN, when no answer is sure: NaN is not JSON (metrics.json is read by DVC and the card)
    accuracy_when_sure = round(float((after.argmax(1) == labels)[sure].mean()), 6) if sure.any() else None
    return {
        "temperature": cal.temperature,
        "nll_before": round(log_loss(before, labels), 6),
        "nll_after": round(log_loss(after, labels), 6),
        "ece_before": round(expected_calibration_error(before, labels), 6),
        "ece_after": round(expected_calibration_error(after, labels), 6),
        "unsure_below": cal.unsure_below,
        "unsure_share": round(float((after.max(1) < cal.unsure_below).mean()), 6),
        "accuracy_when_sure": accuracy_when_sure,
    }


def not_pet_report(
    model: nn.Module, cfg: PreprocessConfig, params: Params, pet: np.ndarray, cal: Calibration
) -> dict[str, Any]:
    """False rejection of this split's cats and dogs, and of every development set, in the fp32 graph.

    ``rate`` is the false rejection of a pet set and the detection of a non-pet set; the served
    backend's figures (what the model card reports) come from ``catsdogs robustness``.
    """
    from catsdogs.release.nonpet import dev_sets

    ev = params.evaluation
    by_set = {}
    for d in dev_sets(params.path(ev.nonpet_dir), params.path(ev.uploads_dir), params.data.seed):
        scores = predict_images(model, cfg, d.images, params.inference.tta, pet=cal.pet_score()).pet
        by_set[d.name] = {"pet": d.pet, "fit": d.fit, "n": len(scores), "rate": _rate(scores, cal.pet_threshold)}
    held = [r for r in by_set.values() if not r["pet"] and not r["fit"]]
    return {
        "threshold": cal.pet_threshold,
        "false_rejection": _rate(pet, cal.pet_threshold),
        "detection": round(sum(r["rate"] * r["n"] for r in held) / max(1, sum(r["n"] for r in held)), 6),
        "by_set": by_set,
    }


def _rate(scores: np.ndarray, threshold: float) -> float:
    """False rejection of pets or detection of non-pets: the share of scores under the threshold."""
    return round(float((scores < threshold).mean()), 6) if len(scores) else 0.0


def _write_reports(metrics: dict[str, Any], probs: np.ndarray, labels: np.ndarray, output: Path) -> None:
    plots_dir = output.parent / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(metrics, indent=2) + "\n")
    confusion_matrix(probs, labels, CLASSES, plots_dir / "test_confusion_matrix.png", title="Test")
    roc_curve(probs, labels, plots_dir / "test_roc_curve.png")
    (output.parent / "test_classification_report.txt").write_text(classification_report_text(probs, labels, CLASSES))


def _log_to_mlflow(run_id: str | None, metrics: dict[str, Any], output: Path) -> None:
    from catsdogs.training import tracking

    if not tracking.known_run(run_id):
        return
    import mlflow

    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k}": metrics[k] for k in ("accuracy", "precision", "recall", "f1", "roc_auc")})
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics["calibration"].items() if k.startswith(("nll", "ece"))})
        if "not_cat_or_dog" in metrics:
            nc = metrics["not_cat_or_dog"]
            mlflow.log_metrics({"test_false_rejection": nc["false_rejection"], "nonpet_detection": nc["detection"]})
        mlflow.log_artifact(str(output), "evaluation")
        mlflow.log_artifact(str(output.parent / "test_classification_report.txt"), "evaluation")
        for png in (output.parent / "plots").glob("test_*.png"):
            mlflow.log_artifact(str(png), "plots")


def sweep_inference(
    params: Params, sizes: list[int], ttas: list[str], *, checkpoint: Path | None = None, split: str = "val"
) -> list[dict[str, Any]]:
    """Accuracy and log loss for each inference size x TTA on a tuning split.

    This is how ``inference.image_size`` and ``inference.tta`` are chosen. The test split
    is refused: choosing on it would make the reported test accuracy optimistic.
    """
    if split == "test":
        raise ValueError("inference settings are chosen on the validation split, never on test")
    model, train_cfg, _, prepared_dir = load_for_inference(params, checkpoint)
    train_cfg = dataclasses.replace(train_cfg, image_size=params.model.image_size)
    rows = []
    for size in sizes:
        cfg = dataclasses.replace(train_cfg, image_size=size)
        data = load_split(params, prepared_dir, cfg, split)
        for tta in ttas:
            logits = predict_split(model, cfg, data, tta).logits
            m = classification_metrics(softmax(logits), data.labels)
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
