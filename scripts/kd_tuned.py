"""Experiment: distil the shipped teacher into a student that is itself fine-tuned (a frontier candidate).

The student trains exactly as ``catsdogs train`` trains it (``run_training``: the recipe, optimiser,
schedule, early stopping and checkpoints of ``--params``, e.g. Lite0 at 160 px with tuned blocks), except
that each batch's loss is ``release.distill.kd_loss``: ``(1 - alpha) * CE(labels) + alpha * tau^2 *
KL(teacher || student)``, the teacher's calibrated probabilities on the training split softened by
``tau`` (``distill.kd_temperature`` of ``--teacher-params``). Then run ``catsdogs calibrate`` and
``catsdogs export`` with the same ``--params``, and ``scripts/frontier.py`` on the bundle.

With ``--augment`` the top does not train on the frozen trunk's cache: each step runs the full recipe's
augmentation (``train.augment``: random resized crop, flip, colour jitter) and the frozen trunk, so the
tuned blocks see a new view of every image each epoch (the cache's student overfits: train loss 0.005).

Usage: python scripts/kd_tuned.py --params STUDENT_PARAMS --teacher-params TEACHER_PARAMS [--alpha 0.5]
[--augment] [--resume] (the teacher's probabilities are cached in the student's output folder: a re-run
skips them).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from catsdogs.cli.common import setup_logging
from catsdogs.core.config import load_params
from catsdogs.data.loaders import ArrayLoader, SplitData
from catsdogs.release.distill import kd_loss, teacher_probs
from catsdogs.training import train
from catsdogs.training.recipes import Job, full_job
from catsdogs.training.runtime import autocast


def soft_targets(args: argparse.Namespace, out_dir: Path) -> tuple[np.ndarray, np.ndarray, float]:
    teacher = load_params(args.teacher_params)
    tau = teacher.distill.kd_temperature
    cache = out_dir / f"teacher_train_tau{tau:g}.npz"
    if cache.is_file():
        saved = np.load(cache)
        return saved["soft"], saved["labels"], tau
    soft, labels = teacher_probs(teacher, "train", tau)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, soft=soft, labels=labels)
    return soft, labels, tau


def indexed(job: Job, labels: np.ndarray) -> Job:
    """The job with training 'labels' replaced by row indices, so each batch can look up its teacher row.

    With ``augment.hflip`` the cache holds the split then its mirror image: row ``i`` of either copy is
    training image ``i % len(labels)`` (its teacher row is the same)."""
    data = job.train_loader.data
    copies = len(data.labels) // len(labels)
    if not np.array_equal(data.labels, np.tile(labels, copies)):
        raise SystemExit("teacher and student see different training images")
    old = job.train_loader
    rows = np.tile(np.arange(len(labels)), copies)
    job.train_loader = ArrayLoader(SplitData(data.pixels, rows), old.batch_size, shuffle=True,
                                   seed=old.seed, rank=old.rank, world_size=old.world_size)  # fmt: skip
    return job


class FrozenTrunkTop(nn.Module):
    """Lite0 whose tuned top and head learn from augmented images run through its frozen trunk each step.

    The trunk (and the ImageNet path the pet score reads) stays in eval mode: its batch-norm statistics
    must not move."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> FrozenTrunkTop:
        super().train(False)
        for part in (self.model.tuned, self.model.dropout, self.model.head):
            part.train(mode)
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            a = self.model.trunk(x)  # (N, C, h, w) at block ``split``
        return self.model.classify(self.model.tuned(a))  # (N, num_classes)


def augmented_job(model: nn.Module, splits, cfg, params, dist, device) -> Job:
    """``cached_features_job``'s split of frozen and trained weights, fed with the full recipe's augmentation."""
    model.requires_grad_(False)
    for part in (model.tuned, model.head):
        part.requires_grad_(True)
    return full_job(FrozenTrunkTop(model), splits, cfg, params, dist)


def kd_epoch(soft: torch.Tensor, labels: torch.Tensor, alpha: float, tau: float):
    """``loop.train_one_epoch`` with the distillation loss (same signature, so ``fit`` calls it)."""

    def train_one_epoch(model, loader, transform, optimizer, scheduler, device, *, bf16, label_smoothing, dist):
        model.train()
        total = correct = seen = 0.0
        start = time.perf_counter()
        for x, rows in loader:
            x, hard = transform.batch(x.to(device)), labels[rows].to(device)
            with autocast(device, bf16):
                logits = model(x)  # (N, C)
                loss = kd_loss(logits.float(), hard, soft[rows].to(device), alpha, tau)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(hard)
            correct += (logits.argmax(1) == hard).sum().item()
            seen += len(hard)
        elapsed = time.perf_counter() - start
        return {"loss": total / seen, "accuracy": correct / seen, "images_per_s": seen / elapsed, "seconds": elapsed}

    return train_one_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="the student's params.yaml (model, train, output dirs)")
    parser.add_argument("--teacher-params", required=True, help="params.yaml whose train.output_dir is the teacher")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the teacher vs the labels")
    parser.add_argument(
        "--augment",
        action="store_true",
        help="train on train.augment's crops through the frozen trunk each step instead of its cache",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the output folder's last.pt")
    args = parser.parse_args()
    setup_logging()  # the epoch lines of ``fit``
    params = load_params(args.params)
    if params.train.recipe != "cached_features":
        raise SystemExit("kd_tuned.py trains the cached_features recipe only")
    soft, labels, tau = soft_targets(args, params.path(params.train.output_dir))
    make_job = augmented_job if args.augment else train.cached_features_job
    train.cached_features_job = lambda *a, **kw: indexed(make_job(*a, **kw), labels)
    train.train_one_epoch = kd_epoch(torch.from_numpy(soft).float(), torch.from_numpy(labels), args.alpha, tau)
    result = train.run_training(params, resume=args.resume, register=False)
    print(f"best val_accuracy={result.best_val_accuracy:.4f} (epoch {result.best_epoch}); {result.checkpoint}")


if __name__ == "__main__":
    main()
