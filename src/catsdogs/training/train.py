"""Training: ``run_training`` wires the factories; the loop is ``train_one_epoch`` + ``validate``.

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
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from catsdogs.core.config import Params
from catsdogs.core.cpus import available_cpus
from catsdogs.core.transforms import PreprocessConfig, Transform, create_transform, image_stats
from catsdogs.data.prepare import CLASSES, ArrayLoader, SplitData, ensure_prepared, file_sha256, load_splits
from catsdogs.models.architectures import PRETRAINED_NORMALIZATION, count_parameters, create_model
from catsdogs.training.augment import train_transform
from catsdogs.training.checkpoint import Checkpoint, TrainState
from catsdogs.training.metrics import classification_metrics
from catsdogs.training.runtime import (
    Dist,
    all_gather_rows,
    all_reduce_sum,
    autocast,
    barrier,
    device_for,
    init_distributed,
    memory_format,
    seed_everything,
    shutdown_distributed,
    use_bf16,
)

log = logging.getLogger(__name__)


# --- the loop ------------------------------------------------------------------------


def train_one_epoch(
    model: nn.Module,
    loader: ArrayLoader,
    transform: Transform | FeatureBatch,
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
    transform: Transform | FeatureBatch,
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
    model: nn.Module, loader: ArrayLoader, transform: Transform | FeatureBatch, device: torch.device, *, bf16: bool
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


# --- recipes: what the loop trains on ------------------------------------------------


class FeatureBatch:
    """The "transform" of cached features: they go to the trainable top as they are (float32)."""

    @staticmethod
    def batch(x: torch.Tensor) -> torch.Tensor:
        return x.float()


@dataclass
class Job:
    """What ``fit`` trains: the module, its loaders and their transforms."""

    trainable: nn.Module
    train_loader: ArrayLoader
    val_loader: ArrayLoader
    train_tf: Transform | FeatureBatch
    eval_tf: Transform | FeatureBatch
    setup_seconds: float = 0.0  # e.g. caching the frozen part's outputs
    setup_images: int = 0


def preprocess_config(params: Params, train_pixels: np.ndarray) -> PreprocessConfig:
    """The fitted preprocessing: pretrained models keep the normalisation their weights expect."""
    if params.model.name in PRETRAINED_NORMALIZATION and params.model.pretrained:
        mean, std = PRETRAINED_NORMALIZATION[params.model.name]
    else:
        mean, std = image_stats(train_pixels)
    return PreprocessConfig(image_size=params.model.image_size, mean=mean, std=std, class_names=CLASSES)


def full_job(model: nn.Module, splits: dict[str, SplitData], cfg: PreprocessConfig, params: Params, dist: Dist) -> Job:
    tp = params.train
    train = ArrayLoader(
        splits["train"], tp.batch_size, shuffle=True, seed=tp.seed, rank=dist.rank, world_size=dist.world_size
    )
    val = ArrayLoader(splits["val"], max(tp.batch_size, 128), shuffle=False, rank=dist.rank, world_size=dist.world_size)
    train_tf = train_transform(cfg, tp.augment)
    return Job(model, train, val, train_tf, create_transform(cfg))


class CachedTop(nn.Module):
    """The trainable top of a pretrained network, fed with the cached output of its frozen trunk."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        # a: (N, C, h, w) trunk output for a tuned top, or (N, F) pooled features for a linear probe
        return self.model.classify(self.model.tuned(a) if self.model.tuned is not None else a)


def cached_features_job(
    model: nn.Module,
    splits: dict[str, SplitData],
    cfg: PreprocessConfig,
    params: Params,
    dist: Dist,
    device: torch.device,
) -> Job:
    """Train only the tuned top (``model.tuned_blocks``) and the head, on cached outputs of the frozen trunk."""
    if not hasattr(model, "trunk"):
        raise ValueError(f"train.recipe cached_features needs a pretrained model, not {params.model.name}")
    for p in model.parameters():
        p.requires_grad_(False)
    for module in (model.head, model.tuned):
        if module is not None:
            module.requires_grad_(True)
    tp = params.train
    t0 = time.perf_counter()
    flips = (False, True) if tp.augment.hflip > 0 else (False,)
    parts = [frozen_outputs(model, splits["train"], cfg, device, dist, flip) for flip in flips]
    train = SplitData(np.concatenate(parts), np.concatenate([splits["train"].labels] * len(flips)))
    val = SplitData(frozen_outputs(model, splits["val"], cfg, device, dist, False), splits["val"].labels)
    seconds, images = time.perf_counter() - t0, len(train.labels) + len(val.labels)
    log.info("cached the frozen trunk for %d images in %.0f s (%.1f img/s)", images, seconds, images / seconds)
    kw = {"rank": dist.rank, "world_size": dist.world_size}
    train_loader = ArrayLoader(train, tp.batch_size, shuffle=True, seed=tp.seed, **kw)
    val_loader = ArrayLoader(val, 512, shuffle=False, **kw)
    return Job(CachedTop(model), train_loader, val_loader, FeatureBatch(), FeatureBatch(), seconds, images)


@torch.no_grad()
def frozen_outputs(
    model: nn.Module, data: SplitData, cfg: PreprocessConfig, device: torch.device, dist: Dist, flip: bool
) -> np.ndarray:
    """The frozen trunk's output (float16, in the split's order): pooled features when nothing is tuned."""
    model.eval()
    transform = create_transform(cfg)
    loader = ArrayLoader(data, 64, shuffle=False, rank=dist.rank, world_size=dist.world_size)
    shard = []
    for pixels, _ in loader:
        x = transform.batch(pixels.to(device))
        a = model.trunk(torch.flip(x, dims=[3]) if flip else x)
        out = a if model.tuned is not None else model.imagenet_features(a)
        shard.append(out.half().cpu().numpy())  # float16 halves the cache; the top trains in float32
    parts = all_gather_rows(np.concatenate(shard), dist)
    out = np.empty((len(data.labels), *parts[0].shape[1:]), np.float16)
    for rank, part in enumerate(parts):
        out[rank :: dist.world_size] = part  # ArrayLoader's evaluation shards are strided
    return out


# --- orchestration -------------------------------------------------------------------


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


__all__ = ["TrainResult", "build_optimizer", "run_training", "train_one_epoch", "validate", "warmup_cosine"]
