"""The pet score: "is a cat or a dog in this photo?", read from the untouched ImageNet head.

Two pieces of evidence from the head's 1,000 logits, both about cats and dogs *in view* rather than
about photo style:

* the log-odds of the head's total probability on its 118 dog and 5 domestic-cat classes;
* its best cat or dog logit (a dog held by its owner keeps a high one even when "sweatshirt" wins).

A logistic regression fitted on val cats and dogs against non-pet photos (outlier exposure, see
``calibrate``) turns them into a probability. It replaced the k-NN similarity to Kaggle training
photos, which measured "looks like a Kaggle photo" and turned away one dog photo in ten from other
sources (model card, "Not a cat or a dog").

The second output, ``looks_like``, is the index of the head's best class that is *not* a cat or a dog:
what the photo looks like instead (``catsdogs.inference.looks_like`` maps it to a plain word).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from catsdogs.models.architectures import IMAGENET_CAT_CLASSES, IMAGENET_DOG_CLASSES

EVIDENCE = ("pet_log_odds", "best_pet_logit")  # the regression's inputs, in order
PET_CLASSES = IMAGENET_DOG_CLASSES + IMAGENET_CAT_CLASSES


class PetScore(nn.Module):
    """ImageNet logits (N, 1000) -> pet score (N,) in [0, 1], looks_like (N,) int64 ImageNet index."""

    def __init__(self, weights: Sequence[float] = (0.0, 0.0), bias: float = 0.0):
        super().__init__()
        pets = torch.tensor(PET_CLASSES)
        others = torch.tensor(sorted(set(range(1000)) - set(PET_CLASSES)))
        self.register_buffer("pets", pets, persistent=False)
        self.register_buffer("others", others, persistent=False)
        self.register_buffer("weights", torch.tensor([float(w) for w in weights]), persistent=False)
        self.register_buffer("bias", torch.tensor(float(bias)), persistent=False)

    def evidence(self, logits: torch.Tensor) -> torch.Tensor:
        pet = logits.index_select(1, self.pets)  # (N, 123)
        other = logits.index_select(1, self.others)  # (N, 877)
        # log(p / (1 - p)) of the softmax mass on pets, computed without forming the softmax
        log_odds = torch.logsumexp(pet, dim=1) - torch.logsumexp(other, dim=1)  # (N,)
        return torch.stack([log_odds, pet.max(dim=1).values], dim=1)  # (N, 2)

    def score(self, evidence: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(evidence @ self.weights + self.bias)  # (N,) in [0, 1]

    def forward(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = logits.float()
        score = self.score(self.evidence(logits))  # (N,)
        looks_like = self.others[logits.index_select(1, self.others).argmax(dim=1)]  # (N,)
        return score, looks_like
