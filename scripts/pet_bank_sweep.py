"""How many training images the pet score's bank needs: non-pet detection at the val threshold, per bank size.

For each bank size and k, the threshold rejects ``calibration.max_false_rejection`` of the val cats and
dogs (as ``catsdogs calibrate`` does), and the table shows the share of each non-pet group flagged.
Choose on ``photo_folder`` (``../shared/data/nonpet-dev``); the other groups are reported, not tuned on.
The ImageNet path is frozen, so any Lite0 checkpoint gives the same features.

Usage: python scripts/pet_bank_sweep.py [--sizes 2000,4000,8000] [--k 3,10,30] [--limit N]
(about 20 minutes of CPU for 8,000 bank images on 2 cores; --limit N caps every set for a quick look)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from catsdogs.core.config import load_params
from catsdogs.core.transforms import create_transform
from catsdogs.data.loaders import load_split
from catsdogs.data.prepare import ensure_prepared
from catsdogs.models.serving import embed, imagenet_features
from catsdogs.release.nonpet import nonpet_set
from catsdogs.training.checkpoint import load_model


def features(model: torch.nn.Module, transform, pixels: np.ndarray) -> np.ndarray:
    """Unit-length ImageNet-path embeddings of uint8 (N, S, S, 3) images."""
    out = []
    with torch.no_grad():
        for i in range(0, len(pixels), 64):
            batch = transform.batch(torch.from_numpy(np.array(pixels[i : i + 64])))
            out.append(embed(imagenet_features(model, batch)))
    return torch.cat(out).numpy()


def score(x: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    return np.sort(x @ bank.T, axis=1)[:, -k:].mean(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,4000,8000")
    parser.add_argument("--k", default="3,10,30")
    parser.add_argument("--limit", type=int, default=None, help="cap every image set (a quick look)")
    args = parser.parse_args()
    sizes, ks = [int(v) for v in args.sizes.split(",")], [int(v) for v in args.k.split(",")]
    params = load_params()
    ckpt = params.path(params.train.output_dir) / "best.pt"
    model, cfg, _ = load_model(ckpt)
    model.eval()
    transform = create_transform(cfg)
    prepared = ensure_prepared(params, fallback_dir=ckpt.parent / "prepared")
    train = load_split(params, prepared, cfg, "train")
    pick = np.random.default_rng(params.data.seed).permutation(len(train.labels))[: max(sizes)][: args.limit]
    bank_all = features(model, transform, train.pixels[np.sort(pick)])
    val = features(model, transform, load_split(params, prepared, cfg, "val").pixels[: args.limit])
    groups = {
        name: features(model, transform, px[: args.limit])
        for name, px in nonpet_set(cfg.image_size, params.path(params.evaluation.nonpet_dir)).items()
    }
    print("| bank | k | threshold | " + " | ".join(groups) + " |")
    for size in sizes:
        bank = bank_all[np.random.default_rng(0).permutation(len(bank_all))[:size]]
        for k in ks:
            threshold = np.quantile(score(val, bank, k), params.calibration.max_false_rejection, method="lower")
            flagged = [float((score(x, bank, k) < threshold).mean()) for x in groups.values()]
            print(f"| {len(bank)} | {k} | {threshold:.3f} | " + " | ".join(f"{f:.1%}" for f in flagged) + " |")


if __name__ == "__main__":
    main()
