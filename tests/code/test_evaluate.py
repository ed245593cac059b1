"""How inference settings are picked from a validation sweep (the one-standard-error rule)."""

from __future__ import annotations

from catsdogs.evaluate import recommend


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
