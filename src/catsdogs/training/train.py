"""Training: ``run_training`` wires the factories; the loop is ``train_one_epoch`` + ``validate`` (``loop``).

Two recipes (``train.recipe``):

* ``full``: every weight learns from augmented images (the from-scratch CNNs, or full fine-tuning).
* ``cached_features``: a pretrained network stays frozen but for its top ``model.tuned_blocks`` blocks;
  the frozen part runs once per image (and its mirror image) and the top trains on that cache, so an
  epoch costs a fraction of a full forward/backward pass (0 blocks: a linear probe).

Runs unchanged under ``torchrun``: each rank trains on its own shard (DistributedDataParallel),
validation is gathered over all ranks, and only rank 0 logs to MLflow, saves and registers.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from catsdogs.core.config import Params
from catsdogs.core.cpus import available_cpus
from catsdogs.core.transforms import PreprocessConfig
from catsdogs.data.loaders import ArrayLoader, SplitData, load_splits
from catsdogs.data.prepare import CLASSES, ensure_prepared, file_sha256
from catsdogs.models.architectures import count_parameters, create_model
from catsdogs.training.checkpoint import Checkpoint, TrainState
from catsdogs.training.loop import build_optimizer, improved, predict_shard, train_one_epoch, validate, warmup_cosine
from catsdogs.training.recipes import Job, cached_features_job, full_job, preprocess_config
from catsdogs.training.runtime import (
    Dist,
    barrier,
    device_for,
    init_distributed,
    memory_format,
    seed_everything,
    shutdown_distributed,
    use_bf16,
)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_id: str | None
    best_val_accuracy: float
    best_epoch: int
    checkpoint: Path
    history: list[dict[str, float]]
    registered_version: str | None = None


def run_training(params: Params, *, resume: bool = False, register: bool = True) -> TrainResult:
    """Wire data, model, recipe, optimiser and tracking together, then ``fit``."""
    tp = params.train
    dist = init_distributed(tp.device)
    try:
        seed_everything(tp.seed)
        torch.set_num_threads(tp.threads or available_cpus())
        device = device_for(dist, tp.device)
        bf16 = use_bf16(tp.bf16, device)
        out_dir = params.path(tp.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        prepared_dir, splits = _load_data(params, out_dir, dist)
        cfg = preprocess_config(params, splits["train"].pixels)
        model = create_model(
            params.model.name,
            num_classes=len(CLASSES),
            dropout=params.model.dropout,
            pretrained=params.model.pretrained,
            tuned_blocks=params.model.tuned_blocks,
        ).to(device)
        if tp.recipe == "cached_features":
            job = cached_features_job(model, splits, cfg, params, dist, device)
        else:
            model = model.to(memory_format=memory_format(device, bf16))
            job = full_job(model, splits, cfg, params, dist)
        ckpt = new_checkpoint(params, model, cfg, prepared_dir)
        if resume:
            ckpt = Checkpoint.load(out_dir / "last.pt", device)
            model.load_state_dict(ckpt.model_state)
            log.info("resumed from %s at epoch %d", out_dir / "last.pt", ckpt.state.epoch)
        with tracking_run(params, ckpt, model, splits, dist) as run_id:
            ckpt.state.run_id = run_id
            fit(job, model, ckpt, params, device, bf16, dist, out_dir)
            version = finish(model, job, ckpt, params, device, dist, out_dir, register)
        return TrainResult(ckpt.state.run_id, ckpt.state.best_val_accuracy, ckpt.state.best_epoch,
                           out_dir / "best.pt", ckpt.state.history, version)  # fmt: skip
    finally:
        shutdown_distributed(dist)


def _load_data(params: Params, out_dir: Path, dist: Dist) -> tuple[Path, dict[str, SplitData]]:
    """The prepared split and its decoded pixels. Rank 0 prepares and decodes first while the others
    wait, so no two processes write the same files and the others only read the cache."""

    def load() -> tuple[Path, dict[str, SplitData]]:
        prepared = ensure_prepared(params, fallback_dir=out_dir / "prepared")
        cfg = PreprocessConfig(image_size=params.model.image_size)
        return prepared, load_splits(params, prepared, cfg, progress=dist.is_main)

    if dist.is_main:
        loaded = load()
    barrier(dist)
    return loaded if dist.is_main else load()


def new_checkpoint(params: Params, model: nn.Module, cfg: PreprocessConfig, prepared_dir: Path) -> Checkpoint:
    from catsdogs.training import tracking

    return Checkpoint(
        model_name=params.model.name,
        dropout=params.model.dropout,
        tuned_blocks=params.model.tuned_blocks,
        model_state={},
        preprocess=cfg.to_dict(),
        params=params.model_dump(mode="json"),
        git_commit=tracking.git_commit(),
        data_hash=file_sha256(prepared_dir / "manifest.csv"),
        state=TrainState(),
    )


def fit(
    job: Job,
    model: nn.Module,
    ckpt: Checkpoint,
    params: Params,
    device: torch.device,
    bf16: bool,
    dist: Dist,
    out_dir: Path,
) -> None:
    """The epoch loop: train, validate, checkpoint, early-stop."""
    tp = params.train
    trainable = _ddp(job.trainable, dist, device)
    optimizer = build_optimizer(trainable, tp.lr, tp.weight_decay)
    steps = len(job.train_loader)
    scheduler = warmup_cosine(optimizer, tp.epochs * steps, int(tp.warmup_epochs * steps))
    if ckpt.optimizer_state:  # resuming: continue exactly where the last epoch ended
        optimizer.load_state_dict(ckpt.optimizer_state)
        scheduler.load_state_dict(ckpt.scheduler_state)
        torch.set_rng_state(ckpt.rng_state.cpu())
    state = ckpt.state
    smoothing = tp.label_smoothing
    for epoch in range(state.epoch + 1, tp.epochs + 1):
        if state.stale >= tp.patience:
            break
        job.train_loader.set_epoch(epoch)
        tr = train_one_epoch(trainable, job.train_loader, job.train_tf, optimizer, scheduler, device,
                             bf16=bf16, label_smoothing=smoothing, dist=dist)  # fmt: skip
        va = validate(job.trainable, job.val_loader, job.eval_tf, device, bf16=bf16, dist=dist)
        better = improved(state, va, tp.early_stopping)
        record_epoch(state, epoch, tr, va, scheduler.get_last_lr()[0], better)
        ckpt.model_state = model.state_dict()
        ckpt.optimizer_state, ckpt.scheduler_state = optimizer.state_dict(), scheduler.state_dict()
        ckpt.rng_state = torch.get_rng_state()
        if dist.is_main:
            _log_epoch(state, tr, va, tp.epochs, better)
            ckpt.save(out_dir / "last.pt")
            if better:
                ckpt.save(out_dir / "best.pt", with_optimizer=False)
    if state.stale >= tp.patience:
        log.info("early stopping: %s has not improved for %d epochs", tp.early_stopping, tp.patience)
    barrier(dist)


def _ddp(module: nn.Module, dist: Dist, device: torch.device) -> nn.Module:
    if not dist.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def record_epoch(
    state: TrainState, epoch: int, tr: dict[str, float], va: dict[str, float], lr: float, better: bool
) -> None:
    row = {
        "epoch": epoch,
        "train_loss": tr["loss"],
        "train_accuracy": tr["accuracy"],
        "val_loss": va["loss"],
        "val_accuracy": va["accuracy"],
        "val_precision": va["precision"],
        "val_recall": va["recall"],
        "val_f1": va["f1"],
        "val_n": va["n"],
        "images_per_s": tr["images_per_s"],
        "seconds": tr["seconds"],
        "lr": lr,
    }
    state.history.append(row)
    state.epoch = epoch
    if better:
        state.best_epoch, state.best_val_accuracy, state.best_val_loss, state.stale = (
            epoch,
            va["accuracy"],
            va["loss"],
            0,
        )
    else:
        state.stale += 1


def _log_epoch(state: TrainState, tr: dict[str, float], va: dict[str, float], epochs: int, better: bool) -> None:
    import mlflow

    row = state.history[-1]
    mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
    log.info(
        "epoch %d/%d  train_loss %.4f acc %.4f | val_loss %.4f acc %.4f f1 %.4f | %.0f img/s%s",
        row["epoch"], epochs, tr["loss"], tr["accuracy"], va["loss"], va["accuracy"], va["f1"], tr["images_per_s"],
        "  *best*" if better else "",
    )  # fmt: skip


@contextlib.contextmanager
def tracking_run(
    params: Params, ckpt: Checkpoint, model: nn.Module, splits: dict[str, SplitData], dist: Dist
) -> Iterator[str | None]:
    """The MLflow run of this training (rank 0 only; resumed runs continue theirs)."""
    if not dist.is_main:
        yield None
        return
    import mlflow

    from catsdogs.training import tracking

    tracking.setup_mlflow()
    with mlflow.start_run(run_id=ckpt.state.run_id) as run:
        if ckpt.state.run_id is None:
            resolved = ckpt.params
            flat = {f"{k}.{kk}": vv for k, v in resolved.items() for kk, vv in v.items() if not isinstance(vv, dict)}
            flat.update({f"train.augment.{k}": v for k, v in resolved["train"]["augment"].items()})
            flat.update({"parameters": count_parameters(model), "world_size": dist.world_size})
            flat.update({f"n_{s}": len(d.labels) for s, d in splits.items()})
            mlflow.log_params(flat)
            mlflow.set_tags({"git_commit": ckpt.git_commit, "data_hash": ckpt.data_hash, "model": ckpt.model_name})
            mlflow.log_dict(resolved, "config/resolved_config.json")
            mlflow.log_dict(ckpt.preprocess, "config/preprocess.json")
        yield run.info.run_id


def finish(
    model: nn.Module,
    job: Job,
    ckpt: Checkpoint,
    params: Params,
    device: torch.device,
    dist: Dist,
    out_dir: Path,
    register: bool,
) -> str | None:
    """Reports of the best epoch, registry entry and run.json (rank 0)."""
    if not dist.is_main:
        return None
    import mlflow

    from catsdogs.training import plots

    state = ckpt.state
    (out_dir / "history.json").write_text(json.dumps(state.history, indent=2) + "\n")
    best = Checkpoint.load(out_dir / "best.pt", device)
    model.load_state_dict(best.model_state)
    val_loader = ArrayLoader(job.val_loader.data, 1024, shuffle=False)
    probs, labels = predict_shard(job.trainable, val_loader, job.eval_tf, device, bf16=False)
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    plots.learning_curves(state.history, plots_dir / "learning_curves.png")
    plots.confusion_matrix(probs, labels, CLASSES, plots_dir / "val_confusion_matrix.png", title="Validation")
    (out_dir / "val_classification_report.txt").write_text(plots.classification_report_text(probs, labels, CLASSES))
    mlflow.log_artifacts(str(plots_dir), "plots")
    for name in ("val_classification_report.txt", "history.json"):
        mlflow.log_artifact(str(out_dir / name), "reports")
    train_seconds = sum(row["seconds"] for row in state.history)
    mlflow.log_metric("train_seconds", train_seconds)
    cfg = PreprocessConfig.from_dict(ckpt.preprocess)
    version = log_and_register(model.float().cpu().to(memory_format=torch.contiguous_format), cfg, register)
    summary = {
        "run_id": state.run_id,
        "best_epoch": state.best_epoch,
        "best_val_accuracy": state.best_val_accuracy,
        "best_val_loss": state.best_val_loss,
        "epochs_run": state.epoch,
        "train_seconds": round(train_seconds, 1),
        "setup_seconds": round(job.setup_seconds, 1),
        "setup_images_per_s": round(job.setup_images / job.setup_seconds, 1) if job.setup_seconds else None,
        "registered_version": version,
        "git_commit": ckpt.git_commit,
        "data_hash": ckpt.data_hash,
        "device": device.type,
        "world_size": dist.world_size,
        "threads": torch.get_num_threads(),
    }
    (out_dir / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    return version


def log_and_register(model: nn.Module, cfg: PreprocessConfig, register: bool) -> str | None:
    """Log the PyTorch model with signature + input example; register it with alias ``challenger``."""
    import mlflow
    from mlflow.models import infer_signature

    from catsdogs.training import tracking

    model.eval()
    # Batch 2, not 1: torch.export specialises a batch dimension of size 1 to a constant.
    example = np.zeros((2, 3, cfg.image_size, cfg.image_size), dtype=np.float32)
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        model,
        name="model",
        signature=infer_signature(example, output),
        input_example=example,
        registered_model_name=tracking.REGISTERED_MODEL if register else None,
        metadata={"preprocess": cfg.to_dict()},
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
    )
    version = getattr(info, "registered_model_version", None)
    if register and version is not None:
        tracking.set_alias(version, "challenger")
        log.info("registered %s version %s with alias challenger", tracking.REGISTERED_MODEL, version)
    return str(version) if version is not None else None


__all__ = ["TrainResult", "run_training"]
