"""The training checkpoint: one typed record, saved and loaded in one place.

It carries everything downstream stages need to trust a model: the weights, the preprocessing it
was trained with, the resolved params, and the lineage (training commit, data hash, MLflow run).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from catsdogs.core.transforms import PreprocessConfig

FORMAT_VERSION = 2


@dataclass
class TrainState:
    """Progress of a run; enough to resume it exactly."""

    epoch: int = 0
    best_epoch: int = 0
    best_val_accuracy: float = -1.0
    best_val_loss: float = float("inf")
    stale: int = 0  # epochs since the early-stopping metric last improved
    history: list[dict[str, float]] = field(default_factory=list)
    run_id: str | None = None


@dataclass
class Checkpoint:
    model_name: str
    dropout: float
    model_state: dict[str, torch.Tensor]
    preprocess: dict[str, Any]
    params: dict[str, Any]  # the resolved params.yaml of the training run
    git_commit: str  # commit of the code that trained the model
    data_hash: str  # sha256 of the prepared manifest it was trained on
    state: TrainState
    tuned_blocks: int = 0
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None
    rng_state: torch.Tensor | None = None  # torch's CPU generator (dropout, augmentation) for exact resume

    def save(self, path: Path, *, with_optimizer: bool = True) -> None:
        record = dataclasses.asdict(self) | {"format": FORMAT_VERSION}
        if not with_optimizer:
            record.update(optimizer_state=None, scheduler_state=None, rng_state=None)
        tmp = Path(path).with_suffix(".tmp")
        torch.save(record, tmp)
        tmp.replace(path)  # a crash mid-save never leaves a truncated checkpoint

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu") -> Checkpoint:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}: run `catsdogs train` first")
        record = torch.load(path, map_location=device, weights_only=False)
        if record.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path} has checkpoint format {record.get('format')}, expected {FORMAT_VERSION}: retrain")
        record.pop("format")
        record["state"] = TrainState(**record["state"])
        return cls(**record)

    @property
    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.preprocess)

    def build_model(self) -> nn.Module:
        """The trained network in eval mode (no pretrained download: the weights are all here)."""
        from catsdogs.models.architectures import create_model

        n_classes = len(self.preprocess["class_names"])
        model = create_model(
            self.model_name, num_classes=n_classes, dropout=self.dropout, tuned_blocks=self.tuned_blocks
        )
        model.load_state_dict(self.model_state)
        return model.eval()


def load_model(
    path: Path, *, image_size: int | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, PreprocessConfig, Checkpoint]:
    """Model (eval mode), its preprocessing (at ``image_size`` if given) and the checkpoint."""
    ckpt = Checkpoint.load(path, device)
    cfg = ckpt.preprocess_config
    if image_size:
        cfg = dataclasses.replace(cfg, image_size=image_size)
    return ckpt.build_model(), cfg, ckpt
