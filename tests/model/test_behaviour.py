"""The SHIPPED bundle (models/), guarded through what serving runs (``Predictor``, the default backend).

Floors come from the release gate in params.yaml (``gate.min_accuracy``), never from the accuracy the
bundle reports about itself. The behavioural sample is the first 300 test-split images (the split is a
pure function of each file's content hash, so it is recomputed without preparing all the data).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance

from catsdogs.core.config import load_params
from catsdogs.core.paths import MODELS_DIR
from catsdogs.data.prepare import assign_split
from catsdogs.inference.predictor import PET_OUTPUT, Prediction, Predictor

SAMPLE = 300  # images, fixed by file name order


def _standard_error(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def sample_floor(n: int) -> float:
    """The gate's floor, less two standard errors of a sample of n images at that accuracy.

    A model exactly at the floor passes with ~98 % probability; one 2 points under it (the old hard-coded
    margin) fails at n = 300.
    """
    floor = load_params().gate.min_accuracy
    return floor - 2 * _standard_error(floor, n)


@pytest.fixture(scope="module")
def meta() -> dict:
    if not (MODELS_DIR / "model.json").exists():
        pytest.fail(f"no shipped model in {MODELS_DIR}")
    return json.loads((MODELS_DIR / "model.json").read_text())


@pytest.fixture(scope="module")
def predictor(meta) -> Predictor:
    return Predictor.load(MODELS_DIR)


@pytest.fixture(scope="module")
def test_split_sample(kaggle_train_dir) -> list[tuple[bytes, str]]:
    d = load_params().data
    out = []
    for n in range(12500):
        for label in ("cat", "dog"):
            path = kaggle_train_dir / f"{label}.{n}.jpg"
            if not path.exists():
                continue
            data = path.read_bytes()
            if assign_split(hashlib.sha256(data).hexdigest(), d.val_fraction, d.test_fraction, d.seed) == "test":
                out.append((data, label))
            if len(out) >= SAMPLE:
                return out
    return out


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _predict(predictor: Predictor, images: list[bytes]) -> list[Prediction]:
    results = []
    for i in range(0, len(images), 64):
        results += predictor.predict_bytes(images[i : i + 64])
    assert all(isinstance(r, Prediction) for r in results), [r for r in results if not isinstance(r, Prediction)][:3]
    return results


@pytest.fixture(scope="module")
def sample_predictions(predictor, test_split_sample) -> list[Prediction]:
    return _predict(predictor, [d for d, _ in test_split_sample])


def _accuracy(preds: list[Prediction], sample: list[tuple[bytes, str]]) -> float:
    return float(np.mean([p.label == label for p, (_, label) in zip(preds, sample, strict=True)]))


@pytest.mark.slow
def test_quality_gate_passes_on_the_shipped_bundle():
    """`catsdogs validate` without promotion: the whole test split, the served backend, params.yaml's own floor.

    The latency check is reported, not asserted: a timing on a shared 2-core machine says more about the
    neighbours than about the model (its failure path is tested in tests/integration/test_gate.py).
    """
    from catsdogs.release.validate import run_gate

    params = load_params()
    result = run_gate(params, promote=False)
    for check in result.checks:
        print(f"[{'PASS' if check.passed else 'FAIL'}] {check.name}: {check.detail}")
    assert {c.name for c in result.checks} == {"accuracy", "false_rejection", "onnx_parity", "latency"}
    failed = [c.detail for c in result.checks if not c.passed and c.name != "latency"]
    assert failed == [], failed
    assert f"threshold {params.gate.min_accuracy:.4f}" in next(c.detail for c in result.checks if c.name == "accuracy")


def test_accuracy_on_a_fixed_test_sample_is_above_the_gate_derived_floor(sample_predictions, test_split_sample):
    accuracy = _accuracy(sample_predictions, test_split_sample)
    floor = sample_floor(len(test_split_sample))
    print(f"shipped model accuracy on {len(test_split_sample)} test-split images: {accuracy:.4f} (floor {floor:.4f})")
    assert len(test_split_sample) == SAMPLE
    assert accuracy >= floor


def test_model_card_agrees_with_a_fresh_evaluation(meta, sample_predictions, test_split_sample):
    """The card's test accuracy (whole split) and a fresh evaluation of the fixed sample agree within sampling error."""
    card = (MODELS_DIR / "MODEL_CARD.md").read_text()
    assert meta["version"] in card
    reported = float(re.search(r"^\| accuracy \| ([0-9.]+) \|$", card, re.MULTILINE).group(1))
    n_test = int(re.search(r"## Test split \((\d+) images", card).group(1))
    assert n_test == meta["n_test"] and reported == pytest.approx(meta["metrics"]["accuracy"], abs=5e-5)
    fresh = _accuracy(sample_predictions, test_split_sample)
    # three standard errors of the sample (at the reported accuracy), plus one image of rounding
    tolerance = 3 * _standard_error(reported, SAMPLE) + 1 / SAMPLE
    assert abs(fresh - reported) <= tolerance, (fresh, reported, tolerance)


def test_the_bundle_has_a_pet_score_and_its_threshold(meta, predictor, sample_predictions):
    assert PET_OUTPUT in meta["outputs"] and "looks_like" in meta["outputs"]
    threshold = meta["thresholds"]["pet_score"]
    assert 0.0 < threshold < 1.0
    assert all(p.pet_score is not None and 0.0 <= p.pet_score <= 1.0 for p in sample_predictions)
    # real cats and dogs are rarely rejected: calibration allows at most calibration.max_false_rejection on val
    rejected = sum(not p.is_cat_or_dog for p in sample_predictions)
    expected = load_params().calibration.max_false_rejection * len(sample_predictions)
    assert rejected <= expected + 2 * math.sqrt(expected) + 1  # Poisson count: two standard deviations, plus one


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_every_f32_backend_serves_the_same_answers(test_split_sample, backend):
    """The thresholds were fitted on fp32 scores: every fp32 backend gives the same scores (ONNX Runtime's)."""
    images = [d for d, _ in test_split_sample[:64]]
    reference = _predict(Predictor.load(MODELS_DIR, backend="onnx"), images)
    for mine, ref in zip(_predict(Predictor.load(MODELS_DIR, backend=backend), images), reference, strict=True):
        assert mine.label == ref.label and mine.is_cat_or_dog == ref.is_cat_or_dog
        assert mine.confidence == pytest.approx(ref.confidence, abs=1e-4)
        assert mine.pet_score == pytest.approx(ref.pet_score, abs=1e-4)


def test_the_bf16_backend_keeps_the_answers(test_split_sample):
    """bf16 (native on AMX CPUs, else f32) moves scores a little; labels and verdicts stay within export's budget."""
    images = [d for d, _ in test_split_sample]
    reference = _predict(Predictor.load(MODELS_DIR, backend="openvino"), images)
    bf16 = _predict(Predictor.load(MODELS_DIR, backend="openvino-bf16"), images)
    changed = sum(
        a.label != b.label or a.is_cat_or_dog != b.is_cat_or_dog for a, b in zip(bf16, reference, strict=True)
    )
    budget = load_params().export.bf16_max_changed_answers * len(images)
    assert changed <= budget + 2 * math.sqrt(budget) + 1  # Poisson count, as for the rejections above
    assert max(abs(a.confidence - b.confidence) for a, b in zip(bf16, reference, strict=True)) < 0.1
    assert max(abs(a.pet_score - b.pet_score) for a, b in zip(bf16, reference, strict=True)) < 0.05


def _not_pets() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    text = Image.new("RGB", (400, 300), "white")
    draw = ImageDraw.Draw(text)
    for i, line in enumerate(["INVOICE #4471", "Total due: 129.00 EUR", "Payment within 30 days", "Thank you!"]):
        draw.text((20, 20 + 60 * i), line, fill="black", font_size=36)
    return {
        "black": _png(Image.new("RGB", (224, 224), "black")),
        "white": _png(Image.new("RGB", (224, 224), "white")),
        "grey": _jpeg(Image.new("RGB", (640, 480), (128, 128, 128))),
        "noise": _png(Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))),
        "text": _png(text),
    }


@pytest.mark.parametrize("name", sorted(_not_pets()))
def test_blank_noise_and_text_images_are_not_cats_or_dogs(predictor, name):
    [pred] = _predict(predictor, [_not_pets()[name]])
    assert pred.is_cat_or_dog is False, (name, pred.pet_score)
    assert pred.reason and pred.to_dict()["is_cat_or_dog"] is False


def test_real_uploads_are_cats_or_dogs_with_the_right_label(predictor, uploads_dir):
    files = sorted(uploads_dir.glob("*.jpg"))
    preds = _predict(predictor, [f.read_bytes() for f in files])
    assert len(files) == 40
    assert [f.name for f, p in zip(files, preds, strict=True) if not p.is_cat_or_dog] == []
    wrong = [f.name for f, p in zip(files, preds, strict=True) if p.label != f.name.split(".")[0]]
    # at the gate's 99 % about 0.4 of 40 are wrong; two or more would happen only ~6 % of the time
    assert len(wrong) <= 1, wrong


def _invariance(predictor, sample, transform) -> float:
    originals = _predict(predictor, [d for d, _ in sample])
    changed = _predict(predictor, [_jpeg(transform(Image.open(io.BytesIO(d)).convert("RGB"))) for d, _ in sample])
    return float(np.mean([a.label == b.label for a, b in zip(originals, changed, strict=True)]))


def test_horizontal_flip_keeps_the_label(predictor, test_split_sample):
    agreement = _invariance(predictor, test_split_sample, lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    assert agreement >= 0.95


def test_mild_brightness_change_keeps_the_label(predictor, test_split_sample):
    agreement = _invariance(predictor, test_split_sample, lambda im: ImageEnhance.Brightness(im).enhance(1.2))
    assert agreement >= 0.95


def test_full_size_photo_and_its_small_copy_agree(predictor, uploads_dir):
    """Serving sees full-size uploads; training saw 200x200 copies of the same photos."""
    files = sorted(uploads_dir.glob("*.jpg"))
    full = _predict(predictor, [f.read_bytes() for f in files])
    small = _predict(predictor, [_jpeg(Image.open(f).convert("RGB").resize((200, 200))) for f in files])
    agreement = np.mean([a.label == b.label for a, b in zip(full, small, strict=True)])
    assert agreement >= 0.95


def test_catsdogs_predict_says_not_a_cat_or_dog(tmp_path: Path, uploads_dir: Path) -> None:
    """The CLI shows the shipped model's verdict: a blank square is flagged, a real cat is not."""
    from PIL import Image
    from typer.testing import CliRunner

    from catsdogs.cli import app

    blank = tmp_path / "blue.png"
    Image.new("RGB", (300, 300), (30, 60, 200)).save(blank)
    result = CliRunner().invoke(app, ["predict", str(blank), str(uploads_dir / "cat.4001.jpg"), "-f", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["is_cat_or_dog"] for r in rows] == [False, True]
    looks_like = rows[0]["looks_like"]
    article = "an" if looks_like[0] in "aeiou" else "a"
    assert rows[0]["note"] == f"this looks like {article} {looks_like}, not a cat or a dog"
    assert rows[1]["prediction"] == "cat" and "looks_like" not in rows[1]
    assert "1 not a cat or a dog" in result.stderr
