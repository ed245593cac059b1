"""The teacher: the more accurate, slower model, built beside the shipped one (params.yaml ``teacher``).

The shipped model fine-tunes ``model.tuned_blocks`` top blocks; the teacher is the same recipe, data
and seed with ``teacher.tuned_blocks`` (the release before it). It is trained, calibrated, evaluated,
exported and stressed like the shipped model, into its own folders, so that users who want its extra
accuracy serve it with ``catsdogs serve --model models/teacher``; ``reports/teacher.json`` holds its
numbers for the README's comparison.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from catsdogs.core.config import Params

log = logging.getLogger(__name__)


def teacher_params(params: Params) -> Params:
    """The shipped model's params with the teacher's tuned blocks and output folders."""
    t = params.teacher
    update = {
        "model": params.model.model_copy(update={"tuned_blocks": t.tuned_blocks}),
        "train": params.train.model_copy(update={"output_dir": t.output_dir}),
        "export": params.export.model_copy(update={"output_dir": t.bundle_dir}),
    }
    return params.model_copy(update=update)


def run_teacher(params: Params) -> dict[str, Any]:
    """Train the teacher, release it into its bundle, and write ``reports/teacher.json``."""
    from catsdogs.release.variant import release_variant
    from catsdogs.training.train import run_training

    tp = teacher_params(params)
    run_training(tp, register=False)  # the registry's champion is the shipped model
    run = json.loads((tp.path(tp.train.output_dir) / "run.json").read_text())
    released = release_variant(tp)
    metrics, meta = released["metrics"], released["meta"]
    report = {
        "tuned_blocks": tp.model.tuned_blocks,
        "image_size": meta["preprocess"]["image_size"],
        "training": {k: run[k] for k in ("best_epoch", "best_val_accuracy", "best_val_loss", "train_seconds")},
        "test_accuracy": metrics["accuracy"],
        "calibration": metrics["calibration"],
        "not_cat_or_dog": metrics.get("not_cat_or_dog"),
        "robustness": released["robustness"].get("accuracy"),
        "latency_ms": meta["export"]["latency_ms"],
        "default_backend": meta["default_backend"],
        "bundle": tp.teacher.bundle_dir,
    }
    path = params.path("reports/teacher.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    log.info("teacher report: %s", path)
    return report
