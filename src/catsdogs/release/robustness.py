"""Accuracy of a bundle on the test split under common photo corruptions, through ``Predictor``.

Model-agnostic (it runs any bundle), so the previous and the new model are compared the same way.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from catsdogs.core.config import Params
from catsdogs.core.transforms import load_image
from catsdogs.inference.predictor import Predictor
from catsdogs.release.petreport import pet_report, plot_curve

log = logging.getLogger(__name__)


def jpeg_q20(img: Image.Image, i: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=20)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def center_crop_60(img: Image.Image, i: int) -> Image.Image:
    w, h = img.size
    cw, ch = int(w * 0.6), int(h * 0.6)
    return img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))


CORRUPTIONS: dict[str, Callable[[Image.Image, int], Image.Image]] = {
    "clean": lambda img, i: img,
    "jpeg_q20": jpeg_q20,
    "gaussian_blur_r2": lambda img, i: img.filter(ImageFilter.GaussianBlur(2)),
    "low_light_30pct": lambda img, i: ImageEnhance.Brightness(img).enhance(0.3),
    "grayscale": lambda img, i: img.convert("L").convert("RGB"),
    "rotate_20deg": lambda img, i: img.rotate(20 if i % 2 else -20, resample=Image.Resampling.BILINEAR),
    "center_crop_60pct": center_crop_60,
}


def accuracy_under(predictor: Predictor, images: list[Image.Image], labels: np.ndarray, corrupt: Callable) -> float:
    correct = 0
    for start in range(0, len(images), 64):
        batch = np.stack(
            [predictor.transform(corrupt(img, start + k)) for k, img in enumerate(images[start : start + 64])]
        )
        probs, _ = predictor.run(batch)
        correct += int((probs.argmax(1) == labels[start : start + 64]).sum())
    return correct / len(labels)


def run_robustness(params: Params, *, model_dir: Path | None = None, output: Path | None = None) -> dict[str, Any]:
    from catsdogs.release.validate import test_images

    bundle = model_dir or params.path(params.export.output_dir)
    predictor = Predictor.load(bundle)
    raw, labels = test_images(params)
    images = [load_image(b) for b in raw]
    accuracy = {}
    for name, corrupt in CORRUPTIONS.items():
        accuracy[name] = round(accuracy_under(predictor, images, labels, corrupt), 6)
        log.info("%s: accuracy %.4f", name, accuracy[name])
    result = {"model": predictor.meta.get("architecture"), "version": predictor.version,
              "backend": predictor.backend, "n": len(labels), "accuracy": accuracy}  # fmt: skip
    out = output or params.path("reports/robustness.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    pets = pet_report(predictor, params, images)
    if pets is not None:
        result["not_cat_or_dog"] = pets
    # Always written (a note for bundles without a pet score): the pipeline has one shape for every model.
    plot_curve(
        pets["curve"] if pets else [], pets["threshold"] if pets else None, out.parent / "pet_threshold_curve.png"
    )
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result
