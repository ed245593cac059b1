"""Scoring a checkpoint as the bundle will: the model at its inference size through the fp32 serving graph.

Shared by calibrate, evaluate and distill (each below none of the others, so none imports another for these).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from catsdogs.core.config import Params
from catsdogs.core.transforms import PreprocessConfig, create_transform
from catsdogs.data.loaders import ArrayLoader, SplitData
from catsdogs.data.prepare import ensure_prepared
from catsdogs.models.petscore import PetScore
from catsdogs.models.serving import serving_model
from catsdogs.training.checkpoint import Checkpoint, load_model


def load_for_inference(
    params: Params, checkpoint: Path | None = None, image_size: int | None = None
) -> tuple[nn.Module, PreprocessConfig, Checkpoint, Path]:
    """Model, preprocessing at the inference size, checkpoint and the prepared data it was trained on."""
    path = checkpoint or params.path(params.train.output_dir) / "best.pt"
    model, cfg, ckpt = load_model(path, image_size=image_size or params.inference.image_size)
    prepared_dir = ensure_prepared(params, fallback_dir=path.parent / "prepared")
    return model, cfg, ckpt, prepared_dir


class SplitScores(NamedTuple):
    """The serving graph's outputs over a split: logits (N, C); for models with a pet score also the score
    (N,), the looks_like ImageNet index (N,) and the evidence (N, 2) its regression reads."""

    logits: np.ndarray
    pet: np.ndarray | None = None
    looks_like: np.ndarray | None = None
    evidence: np.ndarray | None = None


@torch.no_grad()
def predict_split(
    model: nn.Module,
    cfg: PreprocessConfig,
    data: SplitData,
    tta: str,
    temperature: float = 1.0,
    pet: PetScore | None = None,
) -> SplitScores:
    """Every output of the fp32 serving graph (what the bundle runs), in order."""
    graph = serving_model(model, temperature=temperature, tta=tta, pet=pet)
    transform = create_transform(cfg)
    parts: dict[str, list[np.ndarray]] = {}
    for pixels, _ in ArrayLoader(data, 128, shuffle=False):
        for name, value in graph.scores(transform.batch(pixels)).items():
            parts.setdefault(name, []).append(value.numpy())
    out = {name: np.concatenate(v) for name, v in parts.items()}
    return SplitScores(out["logits"], out.get("pet_score"), out.get("looks_like"), out.get("evidence"))


def predict_images(
    model: nn.Module, cfg: PreprocessConfig, images: list[Any], tta: str, pet: PetScore | None = None
) -> SplitScores:
    """``predict_split`` over PIL images, resized exactly as training and serving resize them."""
    from catsdogs.release.nonpet import to_pixels

    data = SplitData(to_pixels(images, cfg.image_size), np.zeros(len(images), dtype=np.int64))
    return predict_split(model, cfg, data, tta, pet=pet)
