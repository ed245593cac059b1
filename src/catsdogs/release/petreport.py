"""The "not a cat or a dog" report through ``Predictor``: per source and per kind, on the served backend.

For every pet source the share turned away (false rejection), for every non-pet kind the share
caught (detection), at the bundle's threshold; and the curve of both against the threshold, so an
operator can pick another one (``CATSDOGS_PET_THRESHOLD``). ``catsdogs robustness`` writes it into
``reports/robustness.json``; the model card renders it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from catsdogs.core.config import Params
from catsdogs.inference.predictor import Prediction, Predictor

CURVE_THRESHOLDS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def served(predictor: Predictor, images: list[Image.Image], batch_size: int = 64) -> list[Prediction]:
    """What a client is told for each image, through the served preprocessing and backend."""
    out: list[Prediction] = []
    for i in range(0, len(images), batch_size):
        batch = np.stack([predictor.transform(img.convert("RGB")) for img in images[i : i + batch_size]])
        out += predictor.predict_array(batch)
    return out


def set_row(answers: list[Prediction], pet: bool, fit: bool, note: str = "") -> dict[str, Any]:
    """One table row: the rate (false rejection for pets, detection for non-pets) and the common hints."""
    rejected = [not a.is_cat_or_dog for a in answers]
    hints = Counter(a.looks_like for a in answers if a.looks_like)
    return {
        "pet": pet,
        "fit": fit,
        "n": len(answers),
        "rate": round(float(np.mean(rejected)), 6) if answers else 0.0,
        "looks_like": [w for w, _ in hints.most_common(3)],
        "note": note,
        "scores": [float(a.pet_score or 0.0) for a in answers],
    }


def curve(rows: dict[str, dict[str, Any]]) -> list[dict[str, float]]:
    """False rejection of every held-out pet image and detection of every held-out non-pet, per threshold."""
    pets = np.concatenate([r["scores"] for r in rows.values() if r["pet"] and not r["fit"]])
    others = np.concatenate([r["scores"] for r in rows.values() if not r["pet"] and not r["fit"]])
    kaggle = np.asarray(rows["kaggle_test"]["scores"])
    return [
        {
            "threshold": t,
            "false_rejection_kaggle_test": round(float((kaggle < t).mean()), 6),
            "false_rejection_all_pets": round(float((pets < t).mean()), 6),
            "detection_held_out": round(float((others < t).mean()), 6),
        }
        for t in CURVE_THRESHOLDS
    ]


def pet_report(predictor: Predictor, params: Params, test_images: list[Image.Image]) -> dict[str, Any] | None:
    """Per-set rates at the served threshold and the curve, or None for a bundle without a pet score."""
    from catsdogs.release.nonpet import dev_sets

    if predictor.pet_threshold is None:
        return None
    ev = params.evaluation
    rows = {"kaggle_test": set_row(served(predictor, test_images), True, False, "Kaggle test split")}
    for d in dev_sets(params.path(ev.nonpet_dir), params.path(ev.uploads_dir), params.data.seed):
        rows[d.name] = set_row(served(predictor, d.images), d.pet, d.fit, d.note)
    points = curve(rows)
    for row in rows.values():
        del row["scores"]
    return {"threshold": predictor.pet_threshold, "backend": predictor.backend, "by_set": rows, "curve": points}


def plot_curve(points: list[dict[str, float]], threshold: float | None, path: Path) -> None:
    """False rejection against detection, one point per threshold (empty: the bundle has no pet score)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    if not points or threshold is None:
        ax.text(0.5, 0.5, "this bundle has no pet score", ha="center", va="center")
        ax.set_axis_off()
        _save(fig, path)
        return
    for key, label in (
        ("false_rejection_kaggle_test", "Kaggle test"),
        ("false_rejection_all_pets", "all held-out pets"),
    ):
        ax.plot([100 * p[key] for p in points], [100 * p["detection_held_out"] for p in points], "o-", label=label)
    for p in points:
        ax.annotate(
            f"{p['threshold']:g}", (100 * p["false_rejection_all_pets"], 100 * p["detection_held_out"]), fontsize=7
        )
    ax.set_xlabel("cats and dogs turned away (%)")
    ax.set_ylabel("held-out non-pets caught (%)")
    ax.set_title(f"Pet-score threshold (served: {threshold:.3g})")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
