"""Typed pipeline parameters (``params.yaml``), validated on load, overridable from the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from catsdogs.core.paths import PARAMS_FILE, resolve

# The architectures of catsdogs.models.architectures.MODELS (tests/code/test_model.py keeps the two equal):
# named here so that params.yaml is checked on load without importing torch.
MODEL_NAMES = ("efficientnet_lite0", "resnet_small", "simple_cnn")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataParams(_Strict):
    source: str = "../shared/data/dogs-vs-cats/train"
    prepared_dir: str = "data/prepared"
    cache_dir: str = "data/cache"
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    seed: int = 42
    limit: int | None = Field(None, ge=4)


class ModelParams(_Strict):
    name: str = "resnet_small"
    image_size: int = Field(128, ge=32, le=512)
    dropout: float = Field(0.2, ge=0, lt=1)
    pretrained: bool = False  # start from ImageNet weights (models that have them)
    tuned_blocks: int = Field(0, ge=0, le=16)  # pretrained: top blocks fine-tuned in a copy (0: linear probe)

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        # Checked on load, before any data is decoded.
        if name not in MODEL_NAMES:
            raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODEL_NAMES))}")
        return name


@dataclass
class AugmentConfig:
    """Training-only augmentation (``train.augment``), applied by ``catsdogs.training.augment.BatchAugment``."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: Annotated[float, Field(ge=0, le=1)] = 0.5
    brightness: Annotated[float, Field(ge=0, lt=1)] = 0.3
    contrast: Annotated[float, Field(ge=0, lt=1)] = 0.3
    saturation: Annotated[float, Field(ge=0, lt=1)] = 0.3


class TrainParams(_Strict):
    # full: train every weight on augmented images. cached_features: freeze a pretrained network's trunk,
    # run it once per image (and its mirror image) and train its tuned top (model.tuned_blocks) + head
    # on that cache (0 tuned blocks: a linear probe on the pooled features).
    recipe: Literal["full", "cached_features"] = "full"
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(0.003, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(1, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    patience: int = Field(8, ge=1)
    early_stopping: Literal["val_loss", "val_accuracy"] = "val_loss"  # watched for patience and best.pt
    seed: int = 42
    threads: int = Field(0, ge=0)
    bf16: Literal["auto", "on", "off"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    output_dir: str = "artifacts/train"
    augment: AugmentConfig = AugmentConfig()

    @field_validator("bf16", mode="before")
    @classmethod
    def _yaml_on_off(cls, v: Any) -> Any:
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v  # YAML 1.1 reads off as false


class InferenceParams(_Strict):
    # Test-time augmentation, part of the exported model: evaluate/export/serving, never the training loop.
    tta: Literal["none", "flip"] = "none"
    # Test-time input size; None = the training size. Training with random-resized crops makes
    # objects look larger than in a plain resize, so a larger test size can match them (FixRes).
    image_size: int | None = Field(default=None, ge=32, le=1024)


class CalibrationParams(_Strict):
    # Fitted on val by `catsdogs calibrate`. The pet-score threshold rejects at most this share of
    # held-out val cats and dogs; "not sure" is below the confidence where answers reach this accuracy on val.
    max_false_rejection: float = Field(0.005, ge=0, lt=0.5)
    confident_accuracy: float = Field(0.995, gt=0.5, le=1)


class EvaluationParams(_Strict):
    nonpet_dir: str = "../shared/data/nonpet-dev"  # optional real non-pet photos (missing folder: skipped)
    uploads_dir: str = "../shared/data/uploads"  # optional full-size pet photos, varied (missing folder: skipped)


class ExportParams(_Strict):
    output_dir: str = "models"
    opset: int = 18
    quantize: bool = True
    int8_max_accuracy_drop: float = Field(0.005, ge=0)
    calibration_images: int = Field(256, ge=8)
    bf16_max_changed_answers: float = Field(0.005, ge=0, le=1)


class GateParams(_Strict):
    min_accuracy: float = Field(0.95, ge=0, le=1)
    max_parity_diff: float = Field(1e-4, gt=0)
    max_latency_ms: float = Field(25.0, gt=0)
    sample: int | None = Field(None, ge=8)  # gate on the first N test images only (quick checks)
    max_false_rejection: float = Field(0.01, ge=0, le=1)  # cats and dogs turned away as "not a cat or a dog"


class DistillParams(_Strict):
    """A faster student taught by the trained model: EfficientNet-Lite0 with one path (its ImageNet
    features feed the linear head and the pet score) at a smaller input, head fitted on the teacher's
    calibrated probabilities. Each list is a grid searched on val."""

    image_size: int = Field(160, ge=32, le=512)
    alpha: list[float] = Field([0.0, 0.5, 1.0], min_length=1)  # weight of the teacher vs the labels
    kd_temperature: float = Field(2.0, gt=0)  # softens both sides of the teacher term (Hinton et al.)
    l2: list[float] = Field([1e-4, 1e-3, 1e-2], min_length=1)  # on the head's weights
    output_dir: str = "artifacts/student"  # checkpoint, calibration, reports
    bundle_dir: str = "models/student"  # its servable bundle (CATSDOGS_MODEL_DIR)

    @field_validator("alpha")
    @classmethod
    def _unit(cls, alpha: list[float]) -> list[float]:
        if any(not 0.0 <= a <= 1.0 for a in alpha):
            raise ValueError("every alpha must lie in [0, 1]")
        return alpha


class TeacherParams(_Strict):
    """The more accurate, slower model built beside the shipped one: the same recipe with more tuned
    blocks (the release before the shipped model), kept servable as ``--model models/teacher``."""

    tuned_blocks: int = Field(3, ge=0, le=16)
    output_dir: str = "artifacts/teacher"  # checkpoint, calibration, test report, robustness
    bundle_dir: str = "models/teacher"  # its servable bundle


class Params(_Strict):
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    inference: InferenceParams = InferenceParams()
    calibration: CalibrationParams = CalibrationParams()
    evaluation: EvaluationParams = EvaluationParams()
    export: ExportParams = ExportParams()
    gate: GateParams = GateParams()
    distill: DistillParams = DistillParams()
    teacher: TeacherParams = TeacherParams()
    base_dir: Path = Field(default_factory=lambda: PARAMS_FILE.parent, exclude=True)

    @model_validator(mode="after")
    def _check_fractions(self) -> Params:
        if self.data.val_fraction + self.data.test_fraction >= 0.5:
            raise ValueError("val_fraction + test_fraction must be below 0.5")
        return self

    def path(self, value: str) -> Path:
        """Resolve a path from the params file relative to that file's directory."""
        return resolve(value, self.base_dir)


def load_params(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Params:
    """Load and validate ``params.yaml``; ``overrides`` maps dotted keys to values (None = keep).

    No environment variable changes a pipeline setting: what trained a model is all in the params
    file (tracked by DVC) and the command line.
    """
    path = Path(path) if path else PARAMS_FILE
    raw: dict[str, Any] = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return Params.model_validate({**raw, "base_dir": path.resolve().parent})
