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
    return hasattr(model, "trunk") and hasattr(model, "imagenet_features")


class PetSimilarity(nn.Module):
    """How much an image looks like the training cats and dogs: the mean cosine similarity of its
    ImageNet features to their ``k`` nearest neighbours in a bank of training images (in [0, 1]).

    A blank square, noise, text, a person or an insect lands far from every training pet, whatever
    the ImageNet head makes of it (its cat+dog share stays ~12 % on a featureless image).
    """

    def __init__(self, bank: torch.Tensor, k: int = 10):
        super().__init__()
        self.register_buffer("bank", embed(bank))  # (M, F), unit rows
        self.k = k

    def forward(self, imagenet_feats: torch.Tensor) -> torch.Tensor:
        sims = embed(imagenet_feats) @ self.bank.T  # (N, M)
        return sims.topk(self.k, dim=1).values.mean(dim=1)  # (N,)


def embed(feats: torch.Tensor) -> torch.Tensor:
    """Square-rooted (the features are non-negative ReLU6 means), unit-length: cosine similarity is a dot."""
    z = feats.clamp(min=0).sqrt()
    return z / z.norm(dim=1, keepdim=True).clamp(min=1e-6)


class ServingModel(nn.Module):
    """(N, 3, S, S) -> calibrated logits (N, C) [, pet score (N,)] for models that have one.

    Dividing logits by the temperature fitted on val changes no prediction, only how sure the
    probabilities say they are. The pet score is ``PetSimilarity`` when a bank of training features
    is given, else the ImageNet head's total probability on cat and dog classes.
    """

    def __init__(
        self, model: nn.Module, *, temperature: float = 1.0, tta: str = "none", bank: torch.Tensor | None = None
    ):
        super().__init__()
        with_tta(model, tta)  # validates the name
        self.model = model.eval()
        self.flip = tta == "flip"
        self.temperature = float(temperature)
        self.pet = has_pet_score(model)
        self.similarity = PetSimilarity(bank) if bank is not None and self.pet else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        if self.flip:
            x = torch.cat([x, torch.flip(x, dims=[3])], dim=0)  # (2N, 3, S, S)
        if not self.pet:
            return _average(self.model(x), n, self.flip) / self.temperature
        m = self.model
        a = m.trunk(x)  # shared frozen blocks
        imagenet = m.imagenet_features(a)  # (N', F) the untouched ImageNet path
        logits = m.classify(m.tuned(a) if m.tuned is not None else imagenet)  # (N', C)
        pet = self.similarity(imagenet) if self.similarity is not None else m.pet_score(imagenet)  # (N',)
        return _average(logits, n, self.flip) / self.temperature, _average(pet, n, self.flip)


def _average(t: torch.Tensor, n: int, flip: bool) -> torch.Tensor:
    return (t[:n] + t[n:]) / 2 if flip else t


def serving_model(
    model: nn.Module, *, temperature: float = 1.0, tta: str = "none", bank: torch.Tensor | None = None
) -> ServingModel:
    return ServingModel(model, temperature=temperature, tta=tta, bank=bank).eval()


@torch.no_grad()
def imagenet_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) -> (N, F) features of the untouched ImageNet path (what ``PetSimilarity`` compares)."""
    return model.imagenet_features(model.trunk(x))
