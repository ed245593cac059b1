"""Experiment: distil the shipped teacher into a student that is itself fine-tuned (a frontier candidate).

The student trains exactly as ``catsdogs train`` trains it (``run_training``: the recipe, optimiser,
schedule, early stopping and checkpoints of ``--params``, e.g. Lite0 at 160 px with tuned blocks), except
that each batch's loss is ``release.distill.kd_loss``: ``(1 - alpha) * CE(labels) + alpha * tau^2 *
KL(teacher || student)``, the teacher's calibrated probabilities on the training split softened by
``tau`` (``distill.kd_temperature`` of ``--teacher-params``). Then run ``catsdogs calibrate`` and
``catsdogs export`` with the same ``--params``, and ``scripts/frontier.py`` on the bundle.

Usage: python scripts/kd_tuned.py --params STUDENT_PARAMS --teacher-params TEACHER_PARAMS [--alpha 0.5]
(the teacher's probabilities are cached in the student's output folder: a re-run skips them).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from catsdogs.core.config import load_params
from catsdogs.data.loaders import ArrayLoader, SplitData
from catsdogs.release.distill import kd_loss, teacher_probs
from catsdogs.training import train
from catsdogs.training.recipes import Job
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
    """The job with training 'labels' replaced by row indices, so each batch can look up its teacher row."""
    data = job.train_loader.data
    if not np.array_equal(data.labels, labels):
        raise SystemExit("teacher and student see different training images (hflip copies are not supported)")
    old = job.train_loader
    job.train_loader = ArrayLoader(SplitData(data.pixels, np.arange(len(labels))), old.batch_size, shuffle=True,
                                   seed=old.seed, rank=old.rank, world_size=old.world_size)  # fmt: skip
    return job


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
    args = parser.parse_args()
    params = load_params(args.params)
    if params.train.recipe != "cached_features":
        raise SystemExit("kd_tuned.py trains the cached_features recipe only")
    soft, labels, tau = soft_targets(args, params.path(params.train.output_dir))
    make_job = train.cached_features_job
    train.cached_features_job = lambda *a, **kw: indexed(make_job(*a, **kw), labels)
    train.train_one_epoch = kd_epoch(torch.from_numpy(soft).float(), torch.from_numpy(labels), args.alpha, tau)
    result = train.run_training(params, register=False)
    print(f"best val_accuracy={result.best_val_accuracy:.4f} (epoch {result.best_epoch}); {result.checkpoint}")


if __name__ == "__main__":
    main()
