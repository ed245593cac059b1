"""Distil the trained model (the teacher) into a faster student, and measure both.

The student is EfficientNet-Lite0 with one path at a smaller input (``distill.image_size``): its
ImageNet features feed both a new linear head and the pet score, where the teacher runs a fine-tuned
copy of its top blocks beside the ImageNet path at 224 px. Only the head learns, so it is fitted on
the cached features in one full-batch L-BFGS solve (a convex problem: no epochs or learning rate to
tune), against a mix of the labels and the teacher's calibrated probabilities (Hinton et al., 2015):

    loss = (1 - alpha) * CE(z_s, y) + alpha * tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau)) + l2 * |W|^2

``alpha`` and ``l2`` are chosen on val (alpha = 0 is the same head without a teacher). The student then
goes through the same calibrate -> evaluate -> export -> robustness steps as the teacher, into its own
servable bundle (``distill.bundle_dir``), and ``reports/student.json`` compares the two networks.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from catsdogs.core.config import Params
from catsdogs.data.loaders import SplitData, load_split
from catsdogs.data.prepare import CLASSES, ensure_prepared, file_sha256
from catsdogs.models.architectures import create_model
from catsdogs.release.scoring import load_for_inference, predict_split
from catsdogs.training.checkpoint import Checkpoint, TrainState
from catsdogs.training.metrics import log_loss, softmax
from catsdogs.training.recipes import frozen_outputs, preprocess_config
from catsdogs.training.runtime import Dist

log = logging.getLogger(__name__)

STUDENT = "efficientnet_lite0"


def student_params(params: Params) -> Params:
    """The teacher's params with the student's model, input size and output folders."""
    d = params.distill
    update = {
        "model": params.model.model_copy(
            update={"name": STUDENT, "pretrained": True, "image_size": d.image_size, "tuned_blocks": 0}
        ),
        "train": params.train.model_copy(update={"output_dir": d.output_dir}),
        "inference": params.inference.model_copy(update={"image_size": None}),
        "export": params.export.model_copy(update={"output_dir": d.bundle_dir, "quantize": False}),
    }
    return params.model_copy(update=update)


def teacher_probs(params: Params, split: str, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's calibrated probabilities softened by ``tau`` (N, C), and the labels, on ``split``."""
    from catsdogs.release.calibrate import Calibration

    ckpt = params.path(params.train.output_dir) / "best.pt"
    cal = Calibration.load(ckpt.parent / "calibration.json")
    model, cfg, _, prepared = load_for_inference(params, ckpt)
    data = load_split(params, prepared, cfg, split)
    logits = predict_split(model, cfg, data, params.inference.tta).logits
    return softmax(logits, cal.temperature * tau), data.labels


def kd_loss(
    logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor, alpha: float, tau: float
) -> torch.Tensor:
    """(1 - alpha) * CE(labels) + alpha * tau^2 * KL(teacher || student at tau); ``teacher`` is already at tau."""
    hard = F.cross_entropy(logits, labels)
    soft = F.kl_div(F.log_softmax(logits / tau, dim=1), teacher, reduction="batchmean") * tau**2
    return (1.0 - alpha) * hard + alpha * soft


def fit_head(
    feats: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor, alpha: float, tau: float, l2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (C, F) and bias (C,) of the linear head minimising ``kd_loss`` + l2 |W|^2 (full-batch L-BFGS)."""
    torch.manual_seed(0)
    weight = torch.zeros(teacher.shape[1], feats.shape[1], requires_grad=True)
    bias = torch.zeros(teacher.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=300, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = kd_loss(feats @ weight.T + bias, labels, teacher, alpha, tau) + l2 * weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return weight.detach(), bias.detach()


def choose_head(
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, np.ndarray],
    params: Params,
) -> tuple[dict[str, Any], list[dict[str, Any]], tuple[torch.Tensor, torch.Tensor]]:
    """Every (alpha, l2) of the grid fitted on train and scored on val; the lowest val loss wins."""
    d = params.distill
    rows, heads = [], []
    for alpha in d.alpha:
        for l2 in d.l2:
            weight, bias = fit_head(*train, alpha, d.kd_temperature, l2)
            probs = softmax((val[0] @ weight.T + bias).numpy())
            rows.append({"alpha": alpha, "l2": l2, "val_loss": round(log_loss(probs, val[1]), 6),
                         "val_accuracy": round(float((probs.argmax(1) == val[1]).mean()), 6)})  # fmt: skip
            heads.append((weight, bias))
            log.info("student head alpha=%.2f l2=%g: %s", alpha, l2, rows[-1])
    best = min(range(len(rows)), key=lambda i: rows[i]["val_loss"])
    return rows[best], rows, heads[best]


def student_features(model: torch.nn.Module, data: SplitData, params: Params) -> torch.Tensor:
    """The frozen student's pooled ImageNet features (N, 1280) for a split's pixels."""
    cfg = preprocess_config(params, data.pixels)
    return torch.from_numpy(frozen_outputs(model, data, cfg, torch.device("cpu"), Dist(), False)).float()


def train_student(params: Params, sp: Params) -> dict[str, Any]:
    """Teacher targets, student features, the head chosen on val; saves the student's best.pt."""
    t0 = time.perf_counter()
    soft, labels = teacher_probs(params, "train", params.distill.kd_temperature)
    t_teacher = time.perf_counter() - t0
    prepared = ensure_prepared(sp, fallback_dir=params.path(params.train.output_dir) / "prepared")
    cfg = preprocess_config(sp, np.zeros((1, 1, 1, 3), np.uint8))
    model = create_model(STUDENT, num_classes=len(CLASSES), dropout=sp.model.dropout, pretrained=True).eval()
    splits = {s: load_split(sp, prepared, cfg, s) for s in ("train", "val")}
    if not np.array_equal(splits["train"].labels, labels):
        raise RuntimeError("teacher and student see different training images: re-run `catsdogs data prepare`")
    t1 = time.perf_counter()
    feats = {s: student_features(model, splits[s], sp) for s in splits}
    t_cache = time.perf_counter() - t1
    t2 = time.perf_counter()
    train = (feats["train"], torch.from_numpy(labels), torch.from_numpy(soft).float())
    best, rows, (weight, bias) = choose_head(train, (feats["val"], splits["val"].labels), params)
    t_fit = time.perf_counter() - t2
    with torch.no_grad():
        model.head.weight.copy_(weight)
        model.head.bias.copy_(bias)
    save_student(model, cfg, sp, prepared, best)
    seconds = {"teacher_targets": t_teacher, "student_features": t_cache, "head_grid": t_fit}
    n_train = len(labels)
    log.info("student: %s; %s s for %d training images", best, {k: round(v) for k, v in seconds.items()}, n_train)
    return {"chosen": best, "grid": rows, "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "train_images": n_train}  # fmt: skip


def save_student(model: torch.nn.Module, cfg: Any, sp: Params, prepared: Path, best: dict[str, Any]) -> Path:
    from catsdogs.training import tracking

    out = sp.path(sp.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = TrainState(best_val_accuracy=best["val_accuracy"], best_val_loss=best["val_loss"])
    Checkpoint(
        model_name=STUDENT,
        dropout=sp.model.dropout,
        tuned_blocks=0,
        model_state=model.state_dict(),
        preprocess=cfg.to_dict(),
        params=sp.model_dump(mode="json"),
        git_commit=tracking.git_commit(),
        data_hash=file_sha256(prepared / "manifest.csv"),
        state=state,
    ).save(out / "best.pt", with_optimizer=False)
    return out / "best.pt"


def run_distill(params: Params) -> dict[str, Any]:
    """Train the student, then calibrate, evaluate, export and stress it like the teacher; compare the two."""
    from catsdogs.release.variant import release_variant

    sp = student_params(params)
    out = sp.path(sp.train.output_dir)
    training = train_student(params, sp)
    (out / "run.json").write_text(json.dumps({"train_seconds": sum(training["seconds"].values())}) + "\n")
    released = release_variant(sp)
    report = compare(params, training, released["metrics"], released["robustness"], released["meta"])
    path = params.path("reports/student.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    log.info("student report: %s", path)
    return report


def compare(
    params: Params, training: dict[str, Any], metrics: dict[str, Any], robust: dict[str, Any], meta: dict[str, Any]
) -> dict[str, Any]:
    """reports/student.json: the student's numbers beside the teacher's (same test split, same CPU)."""
    teacher_meta = json.loads((params.path(params.export.output_dir) / "model.json").read_text())
    teacher_robust = params.path("reports/robustness.json")
    pet = metrics.get("not_cat_or_dog", {})
    student = {
        "image_size": params.distill.image_size,
        "test_accuracy": metrics["accuracy"],
        "calibration": metrics["calibration"],
        "false_rejection": pet.get("false_rejection"),
        "nonpet_detection": pet.get("detection"),
        "robustness": robust.get("accuracy"),
        "latency_ms": meta["export"]["latency_ms"],
        "default_backend": meta["default_backend"],
        "training": training,
    }
    teacher = {
        "test_accuracy": teacher_meta["metrics"].get("accuracy"),
        "latency_ms": teacher_meta["export"]["latency_ms"],
        "default_backend": teacher_meta["default_backend"],
        "robustness": json.loads(teacher_robust.read_text()).get("accuracy") if teacher_robust.exists() else None,
    }
    return {"student": student, "teacher": teacher}
