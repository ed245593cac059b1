"""Which "is a cat or a dog in view" score: the candidates measured side by side (model card, "Why this score").

Every candidate reads the trained model's untouched ImageNet path. Each gets its threshold at
``calibration.max_false_rejection`` of the held-out half of val (the half the shipped threshold uses),
and is measured on sets no candidate is fitted on: varied uploads (held-out half), the non-pet folder's
held-out half, the package photos and foolbox's samples. The regressions fit on the same fitted sets
as ``catsdogs calibrate``. Writes reports/pet_score_candidates.json (read by the model card).

Usage: python scripts/pet_score_candidates.py [--bank 2000]   (about 10 min on 2 cores at 288 px)
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from catsdogs.core.config import load_params
from catsdogs.core.transforms import create_transform
from catsdogs.data.loaders import load_split
from catsdogs.models.petscore import PetScore
from catsdogs.release.calibrate import fit_pet_regression, pet_threshold, val_halves
from catsdogs.release.nonpet import dev_sets, to_pixels
from catsdogs.release.scoring import load_for_inference

HELD = ("uploads_held", "photo_folder", "package_photos", "foolbox")


@torch.no_grad()
def head_outputs(model, cfg, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ImageNet logits (N, 1000) and square-rooted unit ImageNet features (N, 1280) for the k-NN candidate."""
    tf, logits, feats = create_transform(cfg), [], []
    for i in range(0, len(pixels), 64):
        f = model.imagenet_features(model.trunk(tf.batch(torch.from_numpy(np.ascontiguousarray(pixels[i : i + 64])))))
        logits.append(model.imagenet_logits(f).numpy())
        z = f.clamp(min=0).sqrt()
        feats.append((z / z.norm(dim=1, keepdim=True).clamp(min=1e-6)).numpy())
    return np.concatenate(logits), np.concatenate(feats)


def candidates(logits: np.ndarray, feats: np.ndarray, bank: np.ndarray) -> dict[str, np.ndarray]:
    ev = PetScore().evidence(torch.from_numpy(logits)).numpy()
    knn = np.sort(feats @ bank.T, axis=1)[:, -10:].mean(1)  # the previous score: 10-NN cosine similarity
    return {"log_odds": ev[:, 0], "best_pet": ev[:, 1], "max_logit": logits.max(1), "knn": knn}


def group(name: str, fit: bool, pet: bool) -> str:
    if fit:
        return "fit_pet" if pet else "fit_other"
    if name.startswith("uploads_"):
        return "uploads_held"
    return "foolbox" if name.endswith("_samples") or name.startswith("cifar10_") else name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", type=int, default=2000, help="training images in the k-NN candidate's bank")
    args = ap.parse_args()
    params = load_params()
    model, cfg, _, prepared = load_for_inference(params)
    train = load_split(params, prepared, cfg, "train")
    pick = np.random.default_rng(0).permutation(len(train.labels))[: args.bank]
    bank = head_outputs(model, cfg, train.pixels[np.sort(pick)])[1]
    del train
    val = load_split(params, prepared, cfg, "val")
    fit_idx, hold_idx = val_halves(len(val.labels), params.data.seed)
    cands = {"val_fit": candidates(*head_outputs(model, cfg, val.pixels[fit_idx]), bank)}
    cands["val_held"] = candidates(*head_outputs(model, cfg, val.pixels[hold_idx]), bank)
    ev = params.evaluation
    for d in dev_sets(params.path(ev.nonpet_dir), params.path(ev.uploads_dir), params.data.seed):
        if d.pet and not d.fit and not d.name.startswith("uploads_"):
            continue  # other pet sets are too few (and 32 px) to choose on
        g, c = (
            group(d.name, d.fit, d.pet),
            candidates(*head_outputs(model, cfg, to_pixels(d.images, cfg.image_size)), bank),
        )
        cands[g] = {k: np.concatenate([cands[g][k], v]) if g in cands else v for k, v in c.items()}
    report = measure(cands, params.calibration.max_false_rejection)
    out = params.path("reports/pet_score_candidates.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def measure(c: dict[str, dict[str, np.ndarray]], q: float) -> dict:
    rows = {}
    singles = {k: {g: v[k] for g, v in c.items()} for k in c["val_fit"]}
    combos = {"regression(log_odds, best_pet)": ("log_odds", "best_pet"),
              "regression(log_odds, best_pet, knn)": ("log_odds", "best_pet", "knn")}  # fmt: skip
    for name, keys in combos.items():
        x = {g: np.stack([v[k] for k in keys], 1) for g, v in c.items()}
        w, b = fit_pet_regression(np.concatenate([x["val_fit"], x["fit_pet"]]), x["fit_other"])
        singles[name] = {g: v @ np.asarray(w) + b for g, v in x.items()}
    for name, s in singles.items():
        t = pet_threshold(s["val_held"], q)
        caught = {g: float((s[g] < t).mean()) for g in HELD}
        rows[name] = {"val_false_rejection": float((s["val_held"] < t).mean()),
                      "variations_false_rejection": caught["uploads_held"],
                      "nonpet_held_detection": caught["photo_folder"], "package_detection": caught["package_photos"],
                      "wheel_detection": caught["foolbox"]}  # fmt: skip
    return {"max_false_rejection": q, "candidates": rows, "conclusion": CONCLUSION}


CONCLUSION = (
    "On these development sets the k-NN similarity to Kaggle training photos catches the most at the same "
    "false rejection. It is not shipped: it measures how much a photo looks like a Kaggle photo, and "
    "through /predict it turned away 9.9 % of dogs from another source and let 54 % of real horse photos "
    "through (the not-a-pet issue's measurement; no such photos ship in a package, so these sets cannot "
    "show it). The ImageNet-head scores are about the animal, not the photo style. Among them the best "
    "pet logit alone and the regression on it plus the pet-mass log-odds are within a few images of each "
    "other on the held-out sets; the regression is shipped because its log-odds term falls when another "
    'class dominates (a horse\'s "sorrel"), which the best pet logit alone cannot see.'
)


if __name__ == "__main__":
    main()
