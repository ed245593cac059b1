"""Training: ``run_training`` wires the factories; the loop is ``train_one_epoch`` + ``validate``.

CPU speed matters here (two cores): images are decoded once into a uint8 cache,
augmentation runs batched in torch, and on CPUs with AMX/AVX512-BF16 the model runs
in bf16 autocast with channels_last memory (oneDNN uses AMX only in that layout).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from catsdogs.config import Params
from catsdogs.data import CLASSES, SPLITS, build_cache, ensure_prepared, file_sha256, read_manifest
from catsdogs.model import count_parameters, create_model
from catsdogs.predictor import available_cpus
from catsdogs.transforms import PreprocessConfig, Transform, create_transform, image_stats

log = logging.getLogger(__name__)

METRIC_NAMES = ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "val_precision", "val_recall", "val_f1")


# --- runtime selection ---------------------------------------------------------------


MALLOC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=8589934592"


def reexec_with_malloc_tunables() -> None:
    """Restart this CLI process with glibc malloc tuned for training (up to ~2x faster on CPU).

    glibc hands large freed activations back to the OS after every step and page-faults
    them in again on the next; the tunables keep them. They must be set before the
    process starts, hence the re-exec. ``GLIBC_TUNABLES`` already set (to anything)
    means the user chose, and non-CLI callers (tests, notebooks) are left alone.
    """
    import sys

    if sys.platform != "linux" or "GLIBC_TUNABLES" in os.environ:
        return
    if Path(sys.argv[0]).name not in ("catsdogs", "__main__.py"):
        return
    env = {**os.environ, "GLIBC_TUNABLES": MALLOC_TUNABLES}
    os.execve(sys.executable, [sys.executable, "-m", "catsdogs", *sys.argv[1:]], env)


def select_device(pref: str) -> torch.device:
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda requested but CUDA is not available")
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def use_bf16(pref: str, device: torch.device) -> bool:
    if pref == "off":
        return False
    if pref == "on":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_fast_bf16()


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


# --- data ----------------------------------------------------------------------------


class ArrayLoader:
    """Batches from an in-memory uint8 (N, H, W, 3) array: no decoding in the loop."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0):
        self.pixels = pixels
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.rng.permutation(len(self.labels)) if self.shuffle else np.arange(len(self.labels))
        for start in range(0, len(order), self.batch_size):
            idx = np.sort(order[start : start + self.batch_size])
            yield torch.from_numpy(self.pixels[idx]), torch.from_numpy(self.labels[idx])


@dataclass
class SplitData:
    pixels: np.ndarray
    labels: np.ndarray


def load_splits(
    params: Params, prepared_dir: Path, cfg: PreprocessConfig, *, progress: bool = True
) -> tuple[dict[str, SplitData], Path]:
    """Decoded uint8 arrays per split (through the shared ``resize`` step) + the manifest path."""
    manifest = prepared_dir / "manifest.csv"
    records = read_manifest(manifest)
    pixels, labels = build_cache(
        records, _raw_source(prepared_dir), cfg, params.path(params.data.cache_dir), progress=progress
    )
    split_of = np.asarray([r.split for r in records])
    out = {}
    for split in SPLITS:
        mask = split_of == split
        out[split] = SplitData(np.ascontiguousarray(pixels[mask]), labels[mask])
    return out, manifest


def load_split(params: Params, prepared_dir: Path, cfg: PreprocessConfig, split: str) -> SplitData:
    """One split only (decodes and caches just its images: cheap for evaluation at a new size)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    records = [r for r in read_manifest(prepared_dir / "manifest.csv") if r.split == split]
    pixels, labels = build_cache(records, _raw_source(prepared_dir), cfg, params.path(params.data.cache_dir))
    return SplitData(pixels, labels)


def _raw_source(prepared_dir: Path) -> Path:
    """The raw image folder the manifest's relative paths point into."""
    return Path(json.loads((prepared_dir / "stats.json").read_text())["source"])


# --- the loop ------------------------------------------------------------------------


def train_one_epoch(
    model: nn.Module,
    loader: ArrayLoader,
    transform: Transform,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    *,
    bf16: bool,
    label_smoothing: float,
    desc: str = "train",
) -> dict[str, float]:
    from tqdm import tqdm

    model.train()
    memory_format = torch.channels_last if bf16 or device.type == "cuda" else torch.contiguous_format
    total_loss = correct = seen = 0.0
    start = time.perf_counter()
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, dynamic_ncols=True, mininterval=1.0)
    for pixels, labels in bar:
        pixels, labels = pixels.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        x = transform.batch(pixels).contiguous(memory_format=memory_format)  # (N, 3, S, S) augmented
        with autocast(device, bf16):
            logits = model(x)  # (N, 2)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        n = labels.shape[0]
        total_loss += loss.item() * n
        correct += (logits.argmax(1) == labels).sum().item()
        seen += n
        bar.set_postfix(
            loss=f"{total_loss / seen:.4f}",
            acc=f"{correct / seen:.4f}",
            img_s=f"{seen / (time.perf_counter() - start):.0f}",
        )
    elapsed = time.perf_counter() - start
    return {"loss": total_loss / seen, "accuracy": correct / seen, "images_per_s": seen / elapsed, "seconds": elapsed}


@torch.no_grad()
def predict_proba(
    model: nn.Module, loader: ArrayLoader, transform: Transform, device: torch.device, *, bf16: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N, C) and labels (N,) over a loader, in order."""
    model.eval()
    memory_format = torch.channels_last if bf16 or device.type == "cuda" else torch.contiguous_format
    probs, targets = [], []
    for pixels, labels in loader:
        x = transform.batch(pixels.to(device)).contiguous(memory_format=memory_format)
        with autocast(device, bf16):
            logits = model(x)
        probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        targets.append(labels.numpy())
    return np.concatenate(probs), np.concatenate(targets)


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, loss and precision/recall/F1 with "dog" (index 1) as the positive class."""
    pred = probs.argmax(1)
    tp = int(((pred == 1) & (labels == 1)).sum())
    fp = int(((pred == 1) & (labels == 0)).sum())
    fn = int(((pred == 0) & (labels == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    eps = 1e-7
    loss = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], eps, 1.0)).mean())
    return {
        "loss": loss,
        "accuracy": float((pred == labels).mean()),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def validate(
    model: nn.Module, loader: ArrayLoader, transform: Transform, device: torch.device, *, bf16: bool
) -> dict[str, float]:
    probs, labels = predict_proba(model, loader, transform, device, bf16=bf16)
    return classification_metrics(probs, labels)


# --- orchestration -------------------------------------------------------------------


@dataclass
class TrainResult:
    run_id: str | None
    best_val_accuracy: float
    best_epoch: int
    checkpoint: Path
    history: list[dict[str, float]] = field(default_factory=list)
    registered_version: str | None = None


def one_cycle(optimizer: torch.optim.Optimizer, steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to 1% of the peak learning rate."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # No weight decay on norms and biases.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )


def run_training(params: Params, *, resume: bool = False, register: bool = True) -> TrainResult:
    import mlflow

    from catsdogs import plots, tracking

    tp = params.train
    seed_everything(tp.seed)
    torch.set_num_threads(tp.threads or available_cpus())
    device = select_device(tp.device)
    bf16 = use_bf16(tp.bf16, device)
    out_dir = params.path(tp.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    prepared_dir = ensure_prepared(params, fallback_dir=out_dir / "prepared")
    base_cfg = PreprocessConfig(image_size=params.model.image_size, class_names=CLASSES)
    splits, manifest = load_splits(params, prepared_dir, base_cfg)
    # The fitted part of preprocessing: normalisation statistics of the training split.
    mean, std = image_stats(splits["train"].pixels)
    cfg = PreprocessConfig(image_size=params.model.image_size, mean=mean, std=std, class_names=CLASSES)
    train_tf = create_transform(cfg, is_training=True, augment=tp.augment.to_config())
    eval_tf = create_transform(cfg)
    train_loader = ArrayLoader(
        splits["train"].pixels, splits["train"].labels, tp.batch_size, shuffle=True, seed=tp.seed
    )
    val_loader = ArrayLoader(splits["val"].pixels, splits["val"].labels, max(tp.batch_size, 128), shuffle=False)

    model = create_model(params.model.name, num_classes=len(CLASSES), dropout=params.model.dropout).to(device)
    if bf16 or device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, tp.lr, tp.weight_decay)
    steps_per_epoch = len(train_loader)
    scheduler = one_cycle(optimizer, tp.epochs * steps_per_epoch, int(tp.warmup_epochs * steps_per_epoch))

    state = {"epoch": 0, "best_val_accuracy": -1.0, "best_epoch": 0, "stale": 0, "history": [], "run_id": None}
    last_ckpt, best_ckpt = out_dir / "last.pt", out_dir / "best.pt"
    if resume:
        if not last_ckpt.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {last_ckpt}")
        ckpt = torch.load(last_ckpt, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state = ckpt["state"]
        cfg = PreprocessConfig.from_dict(ckpt["preprocess"])
        log.info("resumed from %s at epoch %d", last_ckpt, state["epoch"])

    data_hash = file_sha256(manifest)
    resolved = params.model_dump(mode="json")
    (out_dir / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")
    cfg.save(out_dir / "preprocess.json")
    counts = {s: len(d.labels) for s, d in splits.items()}
    log.info(
        "model %s (%s params) on %s, bf16=%s, threads=%d, image %dpx, splits %s",
        params.model.name,
        f"{count_parameters(model):,}",
        device,
        bf16,
        torch.get_num_threads(),
        cfg.image_size,
        counts,
    )

    tracking.setup_mlflow()
    run = mlflow.start_run(run_id=state["run_id"]) if state["run_id"] else mlflow.start_run()
    with run:
        run_id = run.info.run_id
        state["run_id"] = run_id
        if not resume:
            flat = {f"{k}.{kk}": vv for k, v in resolved.items() for kk, vv in v.items() if not isinstance(vv, dict)}
            flat.update({f"train.augment.{k}": v for k, v in resolved["train"]["augment"].items()})
            flat.update({"parameters": count_parameters(model), "device": device.type, "bf16": bf16})
            flat.update({f"n_{s}": n for s, n in counts.items()})
            mlflow.log_params(flat)
            mlflow.set_tags({"git_commit": tracking.git_commit(), "data_hash": data_hash, "model": params.model.name})
            mlflow.log_dict(resolved, "config/resolved_config.json")
            mlflow.log_dict(cfg.to_dict(), "config/preprocess.json")
            mlflow.log_text(f"manifest.csv sha256 {data_hash}\n", "data/manifest_hash.txt")
            mlflow.log_artifact(str(manifest.parent / "stats.json"), "data")

        t0 = time.perf_counter()
        for epoch in range(state["epoch"] + 1, tp.epochs + 1):
            tr = train_one_epoch(
                model,
                train_loader,
                train_tf,
                optimizer,
                scheduler,
                device,
                bf16=bf16,
                label_smoothing=tp.label_smoothing,
                desc=f"epoch {epoch}/{tp.epochs}",
            )
            va = validate(model, val_loader, eval_tf, device, bf16=bf16)
            row = {
                "epoch": epoch,
                "train_loss": tr["loss"],
                "train_accuracy": tr["accuracy"],
                "val_loss": va["loss"],
                "val_accuracy": va["accuracy"],
                "val_precision": va["precision"],
                "val_recall": va["recall"],
                "val_f1": va["f1"],
                "images_per_s": tr["images_per_s"],
                "lr": scheduler.get_last_lr()[0],
            }
            state["history"].append(row)
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            improved = va["accuracy"] > state["best_val_accuracy"]
            if improved:
                state.update(best_val_accuracy=va["accuracy"], best_epoch=epoch, stale=0)
            else:
                state["stale"] += 1
            state["epoch"] = epoch
            ckpt = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "state": state,
                "model_name": params.model.name,
                "dropout": params.model.dropout,
                "preprocess": cfg.to_dict(),
                "prepared_dir": str(prepared_dir),
                "params": resolved,
            }
            torch.save(ckpt, last_ckpt)
            if improved:
                torch.save({k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler")}, best_ckpt)
            log.info(
                "epoch %d/%d  train_loss %.4f acc %.4f | val_loss %.4f acc %.4f f1 %.4f | %.0f img/s%s",
                epoch,
                tp.epochs,
                tr["loss"],
                tr["accuracy"],
                va["loss"],
                va["accuracy"],
                va["f1"],
                tr["images_per_s"],
                "  *best*" if improved else "",
            )
            if state["stale"] >= tp.patience:
                log.info("early stopping: val_accuracy has not improved for %d epochs", tp.patience)
                break
        train_seconds = time.perf_counter() - t0
        mlflow.log_metric("train_seconds", train_seconds)
        (out_dir / "history.json").write_text(json.dumps(state["history"], indent=2) + "\n")

        # Artifacts from the best checkpoint on the validation split.
        best = torch.load(best_ckpt, map_location=device, weights_only=False)
        model.load_state_dict(best["model"])
        probs, labels = predict_proba(model, val_loader, eval_tf, device, bf16=bf16)
        plots_dir = out_dir / "plots"
        plots_dir.mkdir(exist_ok=True)
        plots.learning_curves(state["history"], plots_dir / "learning_curves.png")
        plots.confusion_matrix(probs, labels, CLASSES, plots_dir / "val_confusion_matrix.png", title="Validation")
        report = plots.classification_report_text(probs, labels, CLASSES)
        (out_dir / "val_classification_report.txt").write_text(report)
        for name in ("learning_curves.png", "val_confusion_matrix.png"):
            mlflow.log_artifact(str(plots_dir / name), "plots")
        mlflow.log_artifact(str(out_dir / "val_classification_report.txt"), "reports")
        mlflow.log_artifact(str(out_dir / "history.json"), "reports")
        mlflow.log_artifact(str(out_dir / "config.json"), "config")

        version = log_and_register(model.float().to("cpu").to(memory_format=torch.contiguous_format), cfg, register)
        summary = {
            "run_id": run_id,
            "best_epoch": state["best_epoch"],
            "best_val_accuracy": state["best_val_accuracy"],
            "epochs_run": state["epoch"],
            "train_seconds": round(train_seconds, 1),
            "registered_version": version,
            "device": device.type,
            "bf16": bf16,
            "threads": torch.get_num_threads(),
        }
        (out_dir / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    return TrainResult(
        run_id, state["best_val_accuracy"], state["best_epoch"], best_ckpt, state["history"], registered_version=version
    )


def log_and_register(model: nn.Module, cfg: PreprocessConfig, register: bool) -> str | None:
    """Log the model with signature + input example; register it with alias ``challenger``."""
    import mlflow
    from mlflow.models import infer_signature

    from catsdogs import tracking

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


def load_checkpoint(
    path: Path, device: str | torch.device = "cpu", *, image_size: int | None = None
) -> tuple[nn.Module, PreprocessConfig, dict[str, Any]]:
    """A trained model (eval mode) and its preprocessing from a checkpoint file.

    ``image_size`` sets the inference input size (``inference.image_size``); the fitted
    normalisation is kept. Both architectures pool globally, so any size runs.
    """
    ckpt = torch.load(path, map_location=device, weights_only=False)
    model = create_model(
        ckpt["model_name"], num_classes=len(ckpt["preprocess"]["class_names"]), dropout=ckpt["dropout"]
    )
    model.load_state_dict(ckpt["model"])
    cfg = PreprocessConfig.from_dict(ckpt["preprocess"])
    if image_size:
        cfg = dataclasses.replace(cfg, image_size=image_size)
    return model.eval(), cfg, ckpt
