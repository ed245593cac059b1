"""Experiment: does the pet score hold when the untouched ImageNet path runs on a smaller copy of the input?

A two-path bundle at 160 px (a fully fine-tuned classifier + the frozen ImageNet net for the pet score)
would feed the pet path the 160 px input downsampled in the graph to R px. This replays `calibrate`'s
fit (regression on half of val + the fitted dev sets, threshold at 1 % false rejection on the other half)
for each R, and reports false rejection / false acceptance on every held-out dev set.

Usage: python scripts/pet_resolution.py [--json reports/pet_resolution.json] [R ...] (R = 288 decodes at 288
directly: the shipped teacher's path; the others decode at 160 and resize in torch, bilinear; with --direct
every size decodes at itself, as a bundle served at that size would).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from catsdogs.core.config import load_params
from catsdogs.core.paths import PROJECT_ROOT
from catsdogs.core.transforms import PreprocessConfig, create_transform
from catsdogs.data.loaders import load_split
from catsdogs.models.architectures import create_model
from catsdogs.models.petscore import PetScore
from catsdogs.release.calibrate import fit_pet_regression, pet_threshold, val_halves
from catsdogs.release.nonpet import dev_sets, to_pixels


@torch.no_grad()
def evidence(net: torch.nn.Module, pixels: np.ndarray, base: int, r: int) -> np.ndarray:
    """The pet score's evidence (N, 2) from the untouched ImageNet path on a copy of the input resized to r."""
    cfg = PreprocessConfig(image_size=base, mean=(0.5,) * 3, std=(0.5,) * 3)
    tf = create_transform(cfg)
    out = []
    for i in range(0, len(pixels), 64):
        x = tf.batch(torch.from_numpy(pixels[i : i + 64]))
        if r != base:
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
        out.append(PetScore().evidence(net.imagenet_logits(net.imagenet_features(net.trunk(x)))).numpy())
    return np.concatenate(out)


def run(params, net: torch.nn.Module, r: int, direct: bool = False) -> dict:
    """Fit the regression and threshold as ``calibrate`` does; false rejection/acceptance on held-out sets."""
    base = r if direct or r == 288 else 160
    cfg = PreprocessConfig(image_size=base, mean=(0.5,) * 3, std=(0.5,) * 3)
    val = load_split(params, params.path(params.data.prepared_dir), cfg, "val")
    ev_val = evidence(net, val.pixels, base, r)
    sets = dev_sets(
        params.path(params.evaluation.nonpet_dir), params.path(params.evaluation.uploads_dir), params.data.seed
    )
    ev = {d.name: (d.pet, d.fit, evidence(net, to_pixels(d.images, base), base, r)) for d in sets}
    fit_idx, hold_idx = val_halves(len(ev_val), params.data.seed)
    pets = [ev_val[fit_idx]] + [e for p, f, e in ev.values() if p and f]
    others = [e for p, f, e in ev.values() if f and not p]
    w, b = fit_pet_regression(np.concatenate(pets), np.concatenate(others))
    score = PetScore(w, b)

    def s(e):
        return score.score(torch.from_numpy(e)).numpy()

    t = pet_threshold(s(ev_val[hold_idx]), 0.01)
    rows = {"val_held_FRR": float((s(ev_val[hold_idx]) < t).mean())}
    for name, (p, f, e) in ev.items():
        if not f:
            rows[name + ("_FRR" if p else "_FAR")] = round(float((s(e) < t).mean() if p else (s(e) >= t).mean()), 4)
    return {"r": r, "threshold": round(t, 4), **rows, "decoded_at": base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[288, 160, 128, 112, 96])
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--direct", action="store_true", help="decode at each size (a bundle served at that size)")
    args = parser.parse_args()
    torch.set_num_threads(2)  # the served backend's threads
    params = load_params(PROJECT_ROOT / "params.yaml")
    net = create_model("efficientnet_lite0", pretrained=True).eval()
    rows = []
    for r in args.sizes:
        rows.append(run(params, net, r, args.direct))
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
