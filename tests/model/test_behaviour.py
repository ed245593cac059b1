"""Behavioural tests of the SHIPPED model (models/), through the serving Predictor.

They read real test-split images (the split is a pure function of each file's
content hash, so the test split can be recomputed without preparing all data).
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from catsdogs.config import load_params
from catsdogs.data import assign_split
from catsdogs.paths import MODELS_DIR
from catsdogs.predictor import Prediction, Predictor

SAMPLE = 300  # images per test, fixed by file name order
ACCURACY_FLOOR = 0.93


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    if not (MODELS_DIR / "model.json").exists():
        pytest.fail(f"no shipped model in {MODELS_DIR}")
    return Predictor.load(MODELS_DIR)


@pytest.fixture(scope="module")
def test_split_sample(kaggle_train_dir) -> list[tuple[bytes, str]]:
    d = load_params().data
    out = []
    for n in range(11500):
        for label in ("cat", "dog"):
            data = (kaggle_train_dir / f"{label}.{n}.jpg").read_bytes()
            if assign_split(hashlib.sha256(data).hexdigest(), d.val_fraction, d.test_fraction, d.seed) == "test":
                out.append((data, label))
        if len(out) >= SAMPLE:
            return out
    return out


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _predict(predictor: Predictor, images: list[bytes]) -> list[Prediction]:
    results = []
    for i in range(0, len(images), 64):
        results += predictor.predict_bytes(images[i : i + 64])
    assert all(isinstance(r, Prediction) for r in results)
    return results


def test_accuracy_on_a_fixed_test_sample_is_above_the_floor(predictor, test_split_sample):
    preds = _predict(predictor, [d for d, _ in test_split_sample])
    accuracy = np.mean([p.label == label for p, (_, label) in zip(preds, test_split_sample, strict=True)])
    print(f"shipped model accuracy on {len(preds)} test-split images: {accuracy:.4f}")
    assert accuracy >= ACCURACY_FLOOR


def test_model_card_metrics_match_the_bundle(predictor):
    meta = json.loads((MODELS_DIR / "model.json").read_text())
    assert meta["metrics"]["accuracy"] >= ACCURACY_FLOOR
    assert meta["version"] in (MODELS_DIR / "MODEL_CARD.md").read_text()


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
    correct = np.mean([p.label == f.name.split(".")[0] for p, f in zip(full, files, strict=True)])
    assert agreement >= 0.95 and correct >= 0.9
