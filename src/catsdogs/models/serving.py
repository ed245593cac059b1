"""The network the bundle runs: test-time augmentation, calibrated logits, the pet score and looks_like.

Built from a trained model by ``serving_model`` and exported to ONNX as one graph, so the API
serves exactly what evaluation measured (no post-processing that could drift between the two).
"""

from __future__ import annotations

import torch
from torch import nn

from catsdogs.models.petscore import PetScore

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
    return hasattr(model, "trunk") and hasattr(model, "imagenet_features")


class ServingModel(nn.Module):
    """(N, 3, S, S) -> calibrated logits (N, C) [, pet score (N,), looks_like (N,)] for models that have one.

    Dividing logits by the temperature fitted on val changes no prediction, only how sure the
    probabilities say they are. The pet score and ``looks_like`` come from the untouched ImageNet
    head through ``PetScore`` (its regression weights fitted on val by ``calibrate``).
    """

    def __init__(self, model: nn.Module, *, temperature: float = 1.0, tta: str = "none", pet: PetScore | None = None):
        super().__init__()
        with_tta(model, tta)  # validates the name
        self.model = model.eval()
        self.flip = tta == "flip"
        self.temperature = float(temperature)
        self.pet = (pet or PetScore()) if has_pet_score(model) else None

    def scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every output by name, plus the pet score's ``evidence`` (N, 2) that ``calibrate`` fits on."""
        n = x.shape[0]
        if self.flip:
            x = torch.cat([x, torch.flip(x, dims=[3])], dim=0)  # (2N, 3, S, S)
        if self.pet is None:
            return {"logits": _average(self.model(x), n, self.flip) / self.temperature}
        m = self.model
        a = m.trunk(x)  # shared frozen blocks
        imagenet = m.imagenet_features(a)  # (N', F) the untouched ImageNet path
        logits = m.classify(m.tuned(a) if m.tuned is not None else imagenet)  # (N', C)
        imagenet_logits = _average(m.imagenet_logits(imagenet), n, self.flip)  # (N, 1000)
        pet_score, looks_like = self.pet(imagenet_logits)
        return {
            "logits": _average(logits, n, self.flip) / self.temperature,
            "pet_score": pet_score,
            "looks_like": looks_like,
            "evidence": self.pet.evidence(imagenet_logits),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.scores(x)
        return out["logits"] if self.pet is None else (out["logits"], out["pet_score"], out["looks_like"])


def _average(t: torch.Tensor, n: int, flip: bool) -> torch.Tensor:
    return (t[:n] + t[n:]) / 2 if flip else t


def serving_model(
    model: nn.Module, *, temperature: float = 1.0, tta: str = "none", pet: PetScore | None = None
) -> ServingModel:
    return ServingModel(model, temperature=temperature, tta=tta, pet=pet).eval()
