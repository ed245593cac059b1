"""Fit what turns scores into honest answers, on the validation split only.

* a temperature for the logits (temperature scaling: the probabilities mean what they say);
* the pet score's regression (``catsdogs.models.petscore``): val cats and dogs and the fitted development sets
  (``catsdogs.release.nonpet``) against non-pet photos, on one seeded half of val;
* its threshold, at most ``max_false_rejection`` of the *other* half of val turned away;
* the confidence below which the answer is "not sure".

``catsdogs calibrate`` writes them to ``calibration.json`` beside the checkpoint; export bakes the
temperature into the ONNX graph and copies the thresholds into ``model.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from catsdogs.core.config import Params
from catsdogs.training.metrics import expected_calibration_error, log_loss, softmax

if TYPE_CHECKING:
    from catsdogs.models.petscore import PetScore
    from catsdogs.release.scoring import SplitScores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    temperature: float = 1.0
    pet_threshold: float | None = None  # None: the model has no pet score
    unsure_below: float = 0.0
    image_size: int = 0  # the input size the values were fitted at
    pet_weights: list[float] | None = None  # the pet score's regression on ``petscore.EVIDENCE``
    pet_bias: float | None = None
    val: dict[str, Any] | None = None  # what the fit measured on val

    def save(self, path: Path) -> None:
        record = {k: v for k, v in asdict(self).items() if k != "directory"}
        path.write_text(json.dumps(record, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Calibration:
        if not Path(path).is_file():
            raise FileNotFoundError(f"no calibration at {path}: run `catsdogs calibrate` first")
        return replace(cls(**json.loads(Path(path).read_text())), directory=str(Path(path).parent))

    directory: str = ""  # where it was loaded from (not saved)

    def pet_score(self) -> PetScore | None:
        """The fitted pet score for the serving graph, or None for models without one."""
        from catsdogs.models.petscore import PetScore

        return PetScore(self.pet_weights, self.pet_bias or 0.0) if self.pet_weights is not None else None


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 that minimises the NLL of softmax(logits / T)."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(
        lambda log_t: log_loss(softmax(logits, float(np.exp(log_t))), labels), bounds=(-3.0, 3.0), method="bounded"
    )
    return float(np.exp(res.x))


def pet_threshold(pet_scores: np.ndarray, max_false_rejection: float) -> float:
    """The largest threshold that rejects at most ``max_false_rejection`` of these (real pet) images."""
    return float(np.quantile(pet_scores, max_false_rejection, method="lower"))


def unsure_threshold(probs: np.ndarray, labels: np.ndarray, confident_accuracy: float) -> float:
    """The lowest confidence t such that answers with confidence >= t are right ``confident_accuracy`` of the time."""
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    order = np.argsort(-conf)
    running = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)  # accuracy of the top-k most confident
    ok = np.nonzero(running >= confident_accuracy)[0]
    return float(conf[order][ok[-1]]) if len(ok) else 1.0


def fit(logits: np.ndarray, labels: np.ndarray, params: Params, image_size: int) -> Calibration:
    """Temperature and "not sure" threshold on all of val (the pet score is fitted by ``fit_pet_score``)."""
    c = params.calibration
    t = fit_temperature(logits, labels)
    before, after = softmax(logits), softmax(logits, t)
    val = {
        "n": len(labels),
        "nll_before": round(log_loss(before, labels), 6),
        "nll_after": round(log_loss(after, labels), 6),
        "ece_before": round(expected_calibration_error(before, labels), 6),
        "ece_after": round(expected_calibration_error(after, labels), 6),
    }
    unsure = unsure_threshold(after, labels, c.confident_accuracy)
    val["unsure_share"] = round(float((after.max(1) < unsure).mean()), 6)
    return Calibration(round(t, 6), None, round(unsure, 6), image_size, val=val)


def fit_pet_regression(pets: np.ndarray, others: np.ndarray) -> tuple[list[float], float]:
    """Logistic regression of "a cat or a dog is in view" on the evidence (N, 2), classes weighted equally."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([pets, others])
    y = np.r_[np.ones(len(pets)), np.zeros(len(others))]
    lr = LogisticRegression(C=1.0, class_weight="balanced").fit(x, y)
    return [round(float(w), 6) for w in lr.coef_[0]], round(float(lr.intercept_[0]), 6)


def val_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded halves of val: the pet score's regression fits on the first, its threshold on the second."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def fit_pet_score(
    cal: Calibration, val: SplitScores, fitted: dict[str, tuple[bool, np.ndarray]], params: Params
) -> Calibration:
    """The regression on half of val plus the fitted development sets, its threshold on the other half of val.

    ``fitted`` maps each fitted development set to (is a pet set, its evidence (N, 2)).
    """
    import torch

    from catsdogs.models.petscore import PetScore

    fit_idx, hold_idx = val_halves(len(val.logits), params.data.seed)
    pets = [val.evidence[fit_idx]] + [e for pet, e in fitted.values() if pet]
    others = [e for pet, e in fitted.values() if not pet]
    weights, bias = fit_pet_regression(np.concatenate(pets), np.concatenate(others))
    held = PetScore(weights, bias).score(torch.from_numpy(val.evidence[hold_idx])).numpy()
    threshold = pet_threshold(held, params.calibration.max_false_rejection)
    record = {"false_rejection": round(float((held < threshold).mean()), 6), "n_threshold": len(hold_idx)}
    record["pet_fit"] = {"val": len(fit_idx)} | {name: len(e) for name, (_, e) in fitted.items()}
    return replace(cal, pet_threshold=round(threshold, 6), pet_weights=weights, pet_bias=bias, val=cal.val | record)


def run_calibration(params: Params, *, checkpoint: Path | None = None, output: Path | None = None) -> Calibration:
    from catsdogs.data.loaders import load_split
    from catsdogs.release.nonpet import dev_sets
    from catsdogs.release.scoring import load_for_inference, predict_images, predict_split

    model, cfg, _, prepared_dir = load_for_inference(params, checkpoint)
    out = output or params.path(params.train.output_dir) / "calibration.json"
    val = load_split(params, prepared_dir, cfg, "val")
    scores = predict_split(model, cfg, val, params.inference.tta)
    cal = fit(scores.logits, val.labels, params, cfg.image_size)
    if scores.evidence is not None:
        ev = params.evaluation
        sets = dev_sets(params.path(ev.nonpet_dir), params.path(ev.uploads_dir), params.data.seed)
        fitted = {
            d.name: (d.pet, predict_images(model, cfg, d.images, params.inference.tta).evidence) for d in sets if d.fit
        }
        cal = fit_pet_score(cal, scores, fitted, params)
    cal.save(out)
    log.info("calibration on %d val images: T=%.3f, pet threshold %s, unsure below %.3f, %s",
             len(val.labels), cal.temperature, cal.pet_threshold, cal.unsure_below, cal.val)  # fmt: skip
    return cal
