"""Scoring a checkpoint as the bundle will: the model at its inference size through the fp32 serving graph.

Shared by calibrate, evaluate and distill (each below none of the others, so none imports another for these).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from catsdogs.core.config import Params
from catsdogs.core.transforms import PreprocessConfig, Transform, create_transform
from catsdogs.data.loaders import ArrayLoader, SplitData
from catsdogs.data.prepare import ensure_prepared
from catsdogs.models.serving import serving_model
from catsdogs.training.checkpoint import Checkpoint, load_model
from catsdogs.training.runtime import autocast, memory_format


@torch.no_grad()
def predict_proba(
    model: nn.Module, loader: ArrayLoader, transform: Transform, device: torch.device, *, bf16: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N, C) and labels (N,) over a loader, in order."""
    model.eval()
    fmt = memory_format(device, bf16)
    probs, targets = [], []
    for pixels, labels in loader:
        x = transform.batch(pixels.to(device)).contiguous(memory_format=fmt)
        with autocast(device, bf16):
            logits = model(x)
        probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        targets.append(labels.numpy())
    return np.concatenate(probs), np.concatenate(targets)


def load_for_inference(
    params: Params, checkpoint: Path | None = None, image_size: int | None = None
) -> tuple[nn.Module, PreprocessConfig, Checkpoint, Path]:
    """Model, preprocessing at the inference size, checkpoint and the prepared data it was trained on."""
    path = checkpoint or params.path(params.train.output_dir) / "best.pt"
    model, cfg, ckpt = load_model(path, image_size=image_size or params.inference.image_size)
    prepared_dir = ensure_prepared(params, fallback_dir=path.parent / "prepared")
    return model, cfg, ckpt, prepared_dir


@torch.no_grad()
def predict_split(
    model: nn.Module,
    cfg: PreprocessConfig,
    data: SplitData,
    tta: str,
    temperature: float = 1.0,
    bank: np.ndarray | torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits (N, C) and pet scores (N,) or None, from the fp32 serving graph (what the bundle runs)."""
    bank = torch.as_tensor(bank) if bank is not None else None
    graph = serving_model(model, temperature=temperature, tta=tta, bank=bank)
    transform = create_transform(cfg)
    logits, pets = [], []
    for pixels, _ in ArrayLoader(data, 128, shuffle=False):
        out = graph(transform.batch(pixels))
        lg, pet = out if isinstance(out, tuple) else (out, None)
        logits.append(lg.numpy())
        if pet is not None:
            pets.append(pet.numpy())
    return np.concatenate(logits), (np.concatenate(pets) if pets else None)
