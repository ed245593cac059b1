"""Image decoding and the one transform factory shared by training, evaluation and serving.

The pipeline is ``decode -> resize -> [augment] -> normalize``:

* ``load_image`` decodes bytes or a path safely (size limits, EXIF orientation,
  any mode to RGB) and is used by data preparation, the API and the CLI.
* ``resize`` is the deterministic geometric step; its uint8 output is what the
  training cache stores, so training, evaluation and serving see identical pixels.
* ``augment`` is training-only: ``catsdogs.training.augment.BatchAugment``, handed to
  ``create_transform`` by the training loop, works on whole torch batches (cheap on two cores,
  where per-image Pillow augmentation would starve the model).
* ``normalize`` maps uint8 pixels to the model's input with the fitted mean/std.

Nothing here imports torch: the serving image has none. The same ``Transform`` takes the NumPy
arrays of serving and the torch tensors of training and evaluation, with one set of constants.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# ImageNet statistics: only a starting point, training replaces them with the
# statistics of its own train split.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 40_000_000  # ~ a 7300x5500 photo; larger is treated as a bomb


class InvalidImageError(ValueError):
    """An upload or file that is not a usable image. ``reason`` is a short metric label."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything needed to turn an image into model input; saved with every model."""

    image_size: int = 128
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    class_names: tuple[str, ...] = ("cat", "dog")
    interpolation: str = "bilinear"

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        return cls(
            image_size=int(d["image_size"]),
            mean=tuple(float(x) for x in d["mean"]),
            std=tuple(float(x) for x in d["std"]),
            class_names=tuple(str(x) for x in d["class_names"]),
            interpolation=str(d.get("interpolation", "bilinear")),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> PreprocessConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def load_image(
    source: bytes | str | Path, *, target_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Decode an image to RGB, or raise ``InvalidImageError`` naming the problem.

    The pixel-count check runs on the header, before any pixel is decoded, so a
    small file that declares 30000x30000 pixels costs nothing.
    """
    if isinstance(source, bytes | bytearray):
        if not source:
            raise InvalidImageError("empty", "the file is empty")
        fp: Any = io.BytesIO(source)
    else:
        if Path(source).stat().st_size == 0:
            raise InvalidImageError("empty", "the file is empty")
        fp = source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
            width, height = img.size
            if width * height > max_pixels:
                raise InvalidImageError(
                    "too_many_pixels",
                    f"image is {width}x{height} pixels; at most {max_pixels:,} pixels are accepted",
                )
            if target_size and img.format == "JPEG":
                # DCT-domain downscale: decoding a 1024x768 JPEG drops from ~6 to ~3 ms.
                img.draft("RGB", (target_size, target_size))
            img.seek(0)  # animated GIF/WebP/PNG: first frame
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError("too_many_pixels", f"image declares too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError("not_an_image", "the file is not an image format that can be decoded") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated/corrupt data as OSError ("image file is truncated").
        raise InvalidImageError("corrupt", f"the image data is corrupt or truncated: {exc}") from exc


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode to RGB; transparent pixels are composited onto white, not black."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        hi = float(arr.max()) or 1.0
        img = Image.fromarray((arr * (255.0 / hi)).clip(0, 255).astype(np.uint8), mode="L")
    return img.convert("RGB")


def resize(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """The deterministic geometric step: squash to ``image_size`` square, uint8 HWC.

    Squashing (not cropping) keeps the whole animal in frame; the Kaggle images
    were produced the same way, so full-size photos match the training data.
    """
    size = (cfg.image_size, cfg.image_size)
    if img.size != size:
        img = img.resize(size, _RESAMPLE[cfg.interpolation])
    return np.array(img, dtype=np.uint8)


def _norm_constants(cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(cfg.mean, dtype=np.float32) * 255.0
    std = np.asarray(cfg.std, dtype=np.float32) * 255.0
    return (1.0 / std).reshape(3, 1, 1), (-mean / std).reshape(3, 1, 1)


def normalize(pixels: Any, cfg: PreprocessConfig) -> Any:
    """uint8/float pixels, channels first (..., 3, H, W) -> normalised float32.

    Works on NumPy arrays and torch tensors alike so the constants live in one place.
    """
    scale, bias = _norm_constants(cfg)
    if isinstance(pixels, np.ndarray):
        # The same float32 arithmetic as ``pixels.astype(np.float32) * scale + bias``, bit for bit, in one
        # C-ordered output: on the transposed HWC view the model gets, that costs ~0.1 ms, not ~1 ms.
        out = np.empty(pixels.shape, dtype=np.float32)
        np.multiply(pixels, scale, out=out, dtype=np.float32)
        out += bias
        return out
    x = pixels.float()  # a torch tensor: the constants go to its device and dtype (float32)
    return x * x.new_tensor(scale) + x.new_tensor(bias)


# A training augmentation: float NCHW batch in [0, 255] -> the same, randomly changed (BatchAugment).
Augment = Callable[[Any], Any]


class Transform:
    """Image -> model input. Built only by ``create_transform``.

    ``__call__`` takes a PIL image and returns a float32 CHW array (evaluation and serving).
    ``batch`` takes the uint8 NHWC torch batch that training and evaluation read from the decoded
    cache, and applies ``augment`` only when training.
    """

    def __init__(self, cfg: PreprocessConfig, augment: Augment | None):
        self.cfg = cfg
        self.augment = augment

    @property
    def is_training(self) -> bool:
        return self.augment is not None

    def pixels(self, img: Image.Image) -> np.ndarray:
        """The cached representation: uint8 HWC at the model's input size."""
        return resize(img, self.cfg)

    def __call__(self, img: Image.Image) -> np.ndarray:
        if self.is_training:
            raise TypeError("a training transform augments whole batches: call .batch() on a uint8 NHWC tensor")
        return normalize(self.pixels(img).transpose(2, 0, 1), self.cfg)

    def batch(self, pixels: Any) -> Any:
        """uint8 NHWC torch batch -> float32 NCHW model input (augmented when training)."""
        x = pixels.permute(0, 3, 1, 2).float()
        if self.augment is not None:
            x = self.augment(x)
        return normalize(x, self.cfg)


def create_transform(cfg: PreprocessConfig, *, augment: Augment | None = None) -> Transform:
    """The single factory every stage calls (timm's ``create_transform`` pattern); training passes
    ``augment`` (``catsdogs.training.augment.train_transform``), everything else leaves it out."""
    return Transform(cfg, augment)


def image_stats(pixels: np.ndarray, max_images: int = 4000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std in [0, 1] of a uint8 NHWC array (the fitted normalisation)."""
    step = max(1, len(pixels) // max_images)
    # float64: a float32 running sum over ~10^7 values per channel stalls and gives a wrong mean.
    sample = pixels[::step].reshape(-1, 3).astype(np.float64) / 255.0
    mean = sample.mean(axis=0)
    std = sample.std(axis=0)
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


__all__ = [
    "Augment",
    "InvalidImageError",
    "PreprocessConfig",
    "Transform",
    "create_transform",
    "image_stats",
    "load_image",
    "normalize",
    "resize",
    "to_rgb",
]
