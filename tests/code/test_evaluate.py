"""How inference settings are picked from a validation sweep (the one-standard-error rule); the calibration report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from catsdogs.release.calibrate import Calibration
from catsdogs.release.evaluate import calibration_report, recommend


def _row(size: int, tta: str, accuracy: float, cost: float, n: int) -> dict:
    return {"image_size": size, "tta": tta, "accuracy": accuracy, "log_loss": 0.2, "relative_cost": cost, "n": n}


def test_cheapest_setting_within_one_standard_error_wins():
    # SE of 0.958 on 2,309 images is 0.0042: 0.955 is within it, 0.950 is not
    rows = [
        _row(128, "none", 0.950, 1.0, 2309),
        _row(160, "flip", 0.958, 3.1, 2309),
        _row(160, "none", 0.955, 1.6, 2309),
    ]
    assert (recommend(rows)["image_size"], recommend(rows)["tta"]) == (160, "none")


def test_a_clear_winner_is_worth_its_cost():
    # the same accuracies on 100,000 images: SE 0.0006, only the best is close enough
    rows = [
        _row(128, "none", 0.950, 1.0, 100_000),
        _row(160, "flip", 0.958, 3.1, 100_000),
        _row(160, "none", 0.955, 1.6, 100_000),
    ]
    assert (recommend(rows)["image_size"], recommend(rows)["tta"]) == (160, "flip")


def test_calibration_report_on_constructed_logits():
    logits = np.array([[3.0, 0.0], [0.0, 3.0], [0.2, 0.0], [0.0, 0.1]])
    labels = np.array([0, 1, 1, 1])
    confident = float(np.exp(3.0) / (1 + np.exp(3.0)))
    report = calibration_report(logits, labels, Calibration(temperature=1.0, unsure_below=confident))
    assert report["unsure_share"] == 0.5  # the two answers near 0.5 are "not sure"
    assert report["accuracy_when_sure"] == 1.0  # both confident answers are right


def test_calibration_report_when_no_answer_is_sure_is_valid_json():
    logits = np.array([[1.0, 0.0], [0.0, 1.0]])
    report = calibration_report(logits, np.array([1, 0]), Calibration(temperature=1.0, unsure_below=1.0))
    assert report["unsure_share"] == 1.0 and report["accuracy_when_sure"] is None
    json.loads(json.dumps(report, allow_nan=False))  # no NaN in metrics.json
    assert report["nll_after"] == pytest.approx(report["nll_before"])
