"""The pet score's pieces: evidence from ImageNet logits, looks_like, and the regression calibrate fits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from catsdogs.core.config import load_params
from catsdogs.models.petscore import PET_CLASSES, PetScore
from catsdogs.release.calibrate import Calibration, fit_pet_regression, fit_pet_score, val_halves
from catsdogs.release.scoring import SplitScores


def test_the_evidence_is_the_log_odds_of_the_pet_mass_and_the_best_pet_logit() -> None:
    logits = torch.randn(8, 1000, generator=torch.Generator().manual_seed(0)) * 3
    mass = torch.softmax(logits.double(), dim=1)[:, list(PET_CLASSES)].sum(1)
    evidence = PetScore().evidence(logits)
    assert torch.allclose(evidence[:, 0].double(), torch.log(mass / (1 - mass)), atol=1e-4)
    assert torch.equal(evidence[:, 1], logits[:, list(PET_CLASSES)].max(1).values)


def test_looks_like_is_the_best_class_that_is_not_a_pet() -> None:
    logits = torch.zeros(2, 1000)
    logits[0, 207], logits[0, 339] = 9.0, 5.0  # a golden retriever first, a sorrel second
    logits[1, 310] = 4.0  # an ant
    score, looks = PetScore((1.0, 0.0), 0.0)(logits)
    assert looks.tolist() == [339, 310] and looks.dtype == torch.int64
    assert score[0] > 0.5 > score[1]  # log-odds > 0 only where the pet classes hold most of the mass


def test_the_regression_separates_pets_from_the_rest_and_the_threshold_keeps_its_promise() -> None:
    rng = np.random.default_rng(0)
    pets, others = rng.normal([1.0, 5.0], 1.0, (400, 2)), rng.normal([-3.0, 1.0], 1.0, (400, 2))
    weights, _ = fit_pet_regression(pets, others)
    assert all(w > 0 for w in weights)  # more evidence of a pet never lowers the score

    params = load_params()
    n = 2000
    val = SplitScores(np.zeros((n, 2)), evidence=rng.normal([1.0, 5.0], 1.0, (n, 2)).astype(np.float32))
    fitted = {"others": (False, others.astype(np.float32))}
    cal = fit_pet_score(Calibration(val={}), val, fitted, params)
    held = val_halves(n, params.data.seed)[1]
    scores = PetScore(cal.pet_weights, cal.pet_bias).score(torch.from_numpy(val.evidence[held])).numpy()
    assert (scores < cal.pet_threshold).mean() <= params.calibration.max_false_rejection
    assert cal.val["n_threshold"] == len(held) and cal.val["pet_fit"] == {"val": n - len(held), "others": 400}


def test_val_halves_are_disjoint_and_cover_val() -> None:
    a, b = val_halves(101, seed=3)
    assert len(a) + len(b) == 101 and not set(a) & set(b)
    assert np.array_equal(a, val_halves(101, seed=3)[0])  # seeded


@pytest.mark.parametrize("weights", [(0.0, 0.0), (2.5, 1.8)])
def test_a_calibration_round_trips_its_pet_score(tmp_path, weights) -> None:
    cal = Calibration(1.1, 0.09, 0.6, 288, list(weights), -0.4, {"n": 3})
    cal.save(tmp_path / "c.json")
    loaded = Calibration.load(tmp_path / "c.json")
    assert loaded.pet_weights == list(weights) and loaded.pet_score() is not None
    assert Calibration().pet_score() is None
