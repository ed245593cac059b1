"""The training loop: one epoch, validation over all ranks, the optimiser and its schedule, early stopping."""

from __future__ import annotations

import math
import time
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from catsdogs.data.loaders import ArrayLoader
from catsdogs.data.prepare import CLASSES
from catsdogs.training.checkpoint import TrainState
from catsdogs.training.metrics import classification_metrics
from catsdogs.training.runtime import Dist, all_gather_rows, all_reduce_sum, autocast, memory_format


class BatchTransform(Protocol):
    """What the loop feeds the model: ``Transform`` (images) or ``recipes.FeatureBatch`` (cached features)."""

    def batch(self, pixels: torch.Tensor) -> torch.Tensor: ...


def train_one_epoch(
    model: nn.Module,
    loader: ArrayLoader,
    transform: BatchTransform,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    *,
    bf16: bool,
    label_smoothing: float,
    dist: Dist = Dist(),
) -> dict[str, float]:
    """One pass over this rank's shard; loss and accuracy are summed over all ranks."""
    model.train()
    fmt = memory_format(device, bf16)
    total_loss = correct = seen = 0.0
    start = time.perf_counter()
    for pixels, labels in loader:
        x = transform.batch(pixels.to(device, non_blocking=True))  # (N, 3, S, S) augmented, or (N, F) features
        x = x.contiguous(memory_format=fmt) if x.dim() == 4 else x
        labels = labels.to(device, non_blocking=True)
        with autocast(device, bf16):
            logits = model(x)  # (N, C)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
    elapsed = time.perf_counter() - start
    total_loss, correct, seen = all_reduce_sum([total_loss, correct, seen], dist, device)
    return {"loss": total_loss / seen, "accuracy": correct / seen, "images_per_s": seen / elapsed, "seconds": elapsed}


@torch.no_grad()
def validate(
    model: nn.Module,
    loader: ArrayLoader,
    transform: BatchTransform,
    device: torch.device,
    *,
    bf16: bool,
    dist: Dist = Dist(),
) -> dict[str, float]:
    """Metrics over the whole split: each rank scores its shard, rank shards are gathered (each image once)."""
    probs, labels = predict_shard(model, loader, transform, device, bf16=bf16)
    probs = np.concatenate(all_gather_rows(probs, dist))
    labels = np.concatenate(all_gather_rows(labels, dist))
    return classification_metrics(probs, labels) | {"n": len(labels)}


@torch.no_grad()
def predict_shard(
    model: nn.Module, loader: ArrayLoader, transform: BatchTransform, device: torch.device, *, bf16: bool
) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    fmt = memory_format(device, bf16)
    probs, targets = [np.zeros((0, len(CLASSES)), np.float32)], [np.zeros(0, np.int64)]
    for pixels, labels in loader:
        x = transform.batch(pixels.to(device))
        x = x.contiguous(memory_format=fmt) if x.dim() == 4 else x
        with autocast(device, bf16):
            logits = model(x)
        probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        targets.append(labels.numpy())
    return np.concatenate(probs), np.concatenate(targets)


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak learning rate, then cosine decay to 1 % of it."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on norms and biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def improved(state: TrainState, val: dict[str, float], watch: str) -> bool:
    """Whether this epoch beats the best so far on the early-stopping metric."""
    if watch == "val_loss":
        return val["loss"] < state.best_val_loss
    return val["accuracy"] > state.best_val_accuracy
