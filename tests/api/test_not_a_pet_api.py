"""The "not a cat or a dog" contract of /predict, /predict/batch, the CLI and the metrics, on a tiny pet bundle.

The tiny bundle's pet score is sigmoid(mean green) (threshold 0.5) and it always says a non-pet looks like
ImageNet class 339 ("sorrel"): a green photo is a pet, a red one is not, and the plain word is "horse".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from apihelpers import LOOKS_LIKE, PET_THRESHOLD, encode, solid, write_tiny_bundle
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from catsdogs.inference.looks_like import imagenet_classes, looks_like
from catsdogs.predictor import Predictor
from catsdogs.serve.settings import Settings

GREEN, RED = encode(solid((0, 255, 0)), "PNG"), encode(solid((255, 0, 0)), "PNG")


@pytest.fixture(scope="module")
def pet_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("pet-bundle"), pet=True, int8=False)


def _predict(client: TestClient, data: bytes) -> dict:
    r = client.post("/predict", files={"file": ("x.png", data, "image/png")})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_non_pet_says_what_it_looks_like_in_a_plain_word(make_client: Callable, pet_bundle: Path) -> None:
    client = make_client(model_path=str(pet_bundle))
    pet, other = _predict(client, GREEN), _predict(client, RED)
    assert pet["is_cat_or_dog"] is True and pet["looks_like"] is None and pet["pet_score"] > PET_THRESHOLD
    assert other["is_cat_or_dog"] is False and other["pet_score"] < PET_THRESHOLD
    assert other["looks_like"] == "horse" and other["looks_like_kind"] == "animal"
    assert other["reason"] == "this looks like a horse, not a cat or a dog"
    assert {"prediction", "probability"} <= other.keys()  # existing clients keep their fields


def test_the_batch_answer_carries_looks_like_per_file(make_client: Callable, pet_bundle: Path) -> None:
    client = make_client(model_path=str(pet_bundle))
    files = [("files", ("g.png", GREEN, "image/png")), ("files", ("r.png", RED, "image/png"))]
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 200, r.text
    rows = r.json()["results"]
    assert [row["looks_like"] for row in rows] == [None, "horse"]


@pytest.mark.parametrize(("threshold", "expected"), [(0.01, True), (0.99, False)])
def test_the_threshold_setting_changes_the_answer(
    make_client: Callable, pet_bundle: Path, threshold: float, expected: bool
) -> None:
    """A green photo (pet score ~0.92) passes a low threshold and fails a high one; the bundle's is 0.5."""
    client = make_client(model_path=str(pet_bundle), pet_threshold=threshold)
    assert _predict(client, GREEN)["is_cat_or_dog"] is expected


def test_the_threshold_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATSDOGS_PET_THRESHOLD", "0.97")
    assert Settings().pet_threshold == 0.97
    monkeypatch.setenv("CATSDOGS_PET_THRESHOLD", "2")
    with pytest.raises(ValueError, match="pet_threshold"):
        Settings()


def test_decisions_are_counted_by_what_they_look_like(make_client: Callable, pet_bundle: Path) -> None:
    client = make_client(model_path=str(pet_bundle))
    for data in (GREEN, RED, RED):
        _predict(client, data)
    text = client.get("/metrics").text
    assert 'catsdogs_pet_decisions_total{decision="cat_or_dog",looks_like="pet"} 1.0' in text
    assert 'catsdogs_pet_decisions_total{decision="not_cat_or_dog",looks_like="animal"} 2.0' in text


def test_the_cli_shows_looks_like_and_takes_a_threshold(tmp_path: Path, pet_bundle: Path) -> None:
    from catsdogs.cli import app

    red = tmp_path / "red.png"
    red.write_bytes(RED)
    base = ["predict", str(red), "--model", str(pet_bundle), "-f", "json"]
    [row] = json.loads(CliRunner().invoke(app, base).stdout)
    assert row["is_cat_or_dog"] is False and row["looks_like"] == "horse" and "horse" in row["note"]
    result = CliRunner().invoke(app, [*base, "--pet-threshold", "0.0"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["is_cat_or_dog"] is True and "looks_like" not in row


def test_a_predictor_threshold_overrides_the_bundles(pet_bundle: Path) -> None:
    assert Predictor.load(pet_bundle).pet_threshold == PET_THRESHOLD
    assert Predictor.load(pet_bundle, pet_threshold=0.2).pet_threshold == 0.2


def test_every_imagenet_class_has_a_plain_word_and_a_kind() -> None:
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert looks_like(LOOKS_LIKE).word == "horse" and looks_like(LOOKS_LIKE).name == "sorrel"
    assert {looks_like(i).kind for i in range(151, 269)} == {"pet"} == {looks_like(i).kind for i in range(281, 286)}
    assert looks_like(841).word == "person" and looks_like(310).word == "ant" and looks_like(22).word == "bird of prey"
    assert all(c.word and c.word == c.word.strip() and "_" not in c.word for c in classes)
    with pytest.raises(IndexError):
        looks_like(1000)
