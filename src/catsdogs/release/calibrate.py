"""Fit what turns scores into honest answers, on the validation split only.

* a temperature for the logits (temperature scaling: the probabilities mean what they say);
* the pet-score threshold below which an image "does not look like a cat or a dog";
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
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    temperature: float = 1.0
    pet_threshold: float | None = None  # None: the model has no pet score
    unsure_below: float = 0.0
    image_size: int = 0  # the input size the values were fitted at
    bank_file: str | None = None  # training features the pet score compares with (beside this file)
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

    def bank(self) -> torch.Tensor | None:
        """The feature bank of the pet score, or None for models without one."""
        import torch

        return torch.from_numpy(np.load(Path(self.directory) / self.bank_file)) if self.bank_file else None


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


def fit(
    logits: np.ndarray,
    labels: np.ndarray,
    pet: np.ndarray | None,
    params: Params,
    image_size: int,
    bank_file: str | None,
) -> Calibration:
    c = params.calibration
    t = fit_temperature(logits, labels)
    before, after = softmax(logits), softmax(logits, t)
    threshold = pet_threshold(pet, c.max_false_rejection) if pet is not None else None
    val = {
        "n": len(labels),
        "nll_before": round(log_loss(before, labels), 6),
        "nll_after": round(log_loss(after, labels), 6),
        "ece_before": round(expected_calibration_error(before, labels), 6),
        "ece_after": round(expected_calibration_error(after, labels), 6),
    }
    unsure = unsure_threshold(after, labels, c.confident_accuracy)
    val["unsure_share"] = round(float((after.max(1) < unsure).mean()), 6)
    if pet is not None:
        val["false_rejection"] = round(float((pet < threshold).mean()), 6)
    return Calibration(round(t, 6), threshold, round(unsure, 6), image_size, bank_file, val)


def run_calibration(params: Params, *, checkpoint: Path | None = None, output: Path | None = None) -> Calibration:
    from catsdogs.data.loaders import load_split
    from catsdogs.models.serving import has_pet_score
    from catsdogs.release.scoring import load_for_inference, predict_split

    model, cfg, _, prepared_dir = load_for_inference(params, checkpoint)
    out = output or params.path(params.train.output_dir) / "calibration.json"
    # Always written (empty for models without a pet score): the pipeline has one shape for every model.
    pet = has_pet_score(model)
    bank = feature_bank(model, cfg, params, prepared_dir) if pet else np.zeros((0, 0), np.float32)
    np.save(out.parent / "pet_bank.npy", bank)
    bank_file = "pet_bank.npy" if pet else None
    bank = bank if pet else None
    val = load_split(params, prepared_dir, cfg, "val")
    logits, pet = predict_split(model, cfg, val, params.inference.tta, bank=bank)
    cal = fit(logits, val.labels, pet, params, cfg.image_size, bank_file)
    cal.save(out)
    log.info("calibration on %d val images: T=%.3f, pet threshold %s, unsure below %.3f, %s",
             len(val.labels), cal.temperature, cal.pet_threshold, cal.unsure_below, cal.val)  # fmt: skip
    return cal


def feature_bank(model: Any, cfg: Any, params: Params, prepared_dir: Path) -> np.ndarray:
    """ImageNet-path features of a seeded sample of training images: what "looks like a pet" means."""
    import torch

    from catsdogs.core.transforms import create_transform
    from catsdogs.data.loaders import load_split
    from catsdogs.models.serving import imagenet_features

    train = load_split(params, prepared_dir, cfg, "train")
    pick = np.sort(
        np.random.default_rng(params.data.seed).permutation(len(train.labels))[: params.calibration.bank_images]
    )
    transform = create_transform(cfg)
    feats = [
        imagenet_features(
            model, transform.batch(torch.from_numpy(np.ascontiguousarray(train.pixels[pick[i : i + 64]])))
        )
        for i in range(0, len(pick), 64)
    ]
    return torch.cat(feats).numpy().astype(np.float32)
