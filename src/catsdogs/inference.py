"""The network the bundle runs: test-time augmentation, calibrated logits and the pet score.

Built from a trained model by ``serving_model`` and exported to ONNX as one graph, so the API
serves exactly what evaluation measured (no post-processing that could drift between the two).
"""

from __future__ import annotations

import torch
from torch import nn

TTA_CHOICES = ("none", "flip")


class FlipTTA(nn.Module):
    """Average the logits of the image and its mirror image (cats and dogs look the same mirrored).

    One pass over (2N, 3, H, W) is cheaper on CPU than two passes over N.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        logits = self.model(torch.cat([x, torch.flip(x, dims=[3])], dim=0))  # (2N, C)
        return (logits[:n] + logits[n:]) / 2  # (N, C)


def with_tta(model: nn.Module, tta: str | None) -> nn.Module:
    """Wrap ``model`` for test-time augmentation (``"flip"``) or return it unchanged (``None``/``"none"``)."""
    if tta in (None, "none"):
        return model
    if tta == "flip":
        return FlipTTA(model).eval()
    raise ValueError(f"unknown test-time augmentation {tta!r}; choose one of {', '.join(TTA_CHOICES)}")


def has_pet_score(model: nn.Module) -> bool:
    return hasattr(model, "logits_and_pet_score")


class ServingModel(nn.Module):
    """(N, 3, S, S) -> calibrated logits (N, C) [, pet score (N,)] for models that have one.

    Dividing logits by the temperature fitted on val changes no prediction, only how sure the
    probabilities say they are.
    """

    def __init__(self, model: nn.Module, *, temperature: float = 1.0, tta: str = "none"):
        super().__init__()
        with_tta(model, tta)  # validates the name
        self.model = model.eval()
        self.flip = tta == "flip"
        self.temperature = float(temperature)
        self.pet = has_pet_score(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        if self.flip:
            x = torch.cat([x, torch.flip(x, dims=[3])], dim=0)  # (2N, 3, S, S)
        logits, pet = self.model.logits_and_pet_score(x) if self.pet else (self.model(x), None)  # (N', C), (N',)
        if self.flip:
            logits = (logits[:n] + logits[n:]) / 2  # (N, C)
        logits = logits / self.temperature
        if pet is None:
            return logits
        if self.flip:
            pet = (pet[:n] + pet[n:]) / 2  # (N,)
        return logits, pet


def serving_model(model: nn.Module, *, temperature: float = 1.0, tta: str = "none") -> ServingModel:
    return ServingModel(model, temperature=temperature, tta=tta).eval()
