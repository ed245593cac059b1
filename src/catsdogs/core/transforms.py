"""Image decoding and the one transform factory shared by training, evaluation and serving.

The pipeline is ``decode -> resize -> [augment] -> normalize``:

* ``load_image`` decodes bytes or a path safely (size limits, EXIF orientation,
  any mode to RGB) and is used by data preparation, the API and the CLI.
* ``resize`` is the deterministic geometric step; its uint8 output is what the
  training cache stores, so training, evaluation and serving see identical pixels.
* ``BatchAugment`` applies the training-only augmentation to a uint8 batch in torch
  (cheap on two cores, where per-image Pillow augmentation would starve the model).
* ``normalize`` maps uint8 pixels to the model's input with the fitted mean/std.

Nothing here imports torch at module level: the serving image has no torch.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import ConfigDict, Field

if TYPE_CHECKING:
    import torch

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
        return pixels.astype(np.float32) * scale + bias
    import torch

    return pixels.float() * torch.from_numpy(scale).to(pixels.device) + torch.from_numpy(bias).to(pixels.device)


@dataclass
class AugmentConfig:
    """Training-only augmentation (``train.augment`` in params.yaml, validated there by pydantic)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: Annotated[float, Field(ge=0, le=1)] = 0.5
    brightness: Annotated[float, Field(ge=0, lt=1)] = 0.3
    contrast: Annotated[float, Field(ge=0, lt=1)] = 0.3
    saturation: Annotated[float, Field(ge=0, lt=1)] = 0.3


class Transform:
    """Image -> model input. Built only by ``create_transform``.

    ``__call__`` takes a PIL image and returns a float32 CHW array (evaluation and
    serving). ``batch(uint8 NHWC tensor)`` is the torch path used by the training
    loop on the decoded cache; it applies ``augment`` only when training.
    """

    def __init__(self, cfg: PreprocessConfig, augment: AugmentConfig | None):
        self.cfg = cfg
        self.augment = augment
        self._batch_augment: Any = None

    @property
    def is_training(self) -> bool:
        return self.augment is not None

    def pixels(self, img: Image.Image) -> np.ndarray:
        """The cached representation: uint8 HWC at the model's input size."""
        return resize(img, self.cfg)

    def __call__(self, img: Image.Image) -> np.ndarray:
        if self.is_training:
            import torch

            out = self.batch(torch.from_numpy(self.pixels(img)).unsqueeze(0))
            return out[0].numpy()
        return normalize(self.pixels(img).transpose(2, 0, 1), self.cfg)

    def batch(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC batch -> float32 NCHW model input (augmented when training)."""
        x = pixels.permute(0, 3, 1, 2).float()
        if self.augment is not None:
            if self._batch_augment is None:
                self._batch_augment = BatchAugment(self.augment)
            x = self._batch_augment(x)
        return normalize(x, self.cfg)


def create_transform(
    cfg: PreprocessConfig, *, is_training: bool = False, augment: AugmentConfig | None = None
) -> Transform:
    """The single factory every stage calls (timm's ``create_transform`` pattern)."""
    return Transform(cfg, (augment or AugmentConfig()) if is_training else None)


class BatchAugment:
    """Random resized crop + horizontal flip + colour jitter on a float NCHW batch in [0, 255].

    One ``affine_grid``/``grid_sample`` call crops, rescales and flips the whole batch.
    """

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        n = x.shape[0]
        dev = x.device
        c = self.cfg
        area = torch.empty(n, device=dev).uniform_(*c.scale)
        log_r = torch.empty(n, device=dev).uniform_(float(np.log(c.ratio[0])), float(np.log(c.ratio[1])))
        ratio = torch.exp(log_r)
        # crop width/height as a fraction of the image side, clamped to fit
        w = torch.sqrt(area * ratio).clamp(max=1.0)
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (torch.rand(n, device=dev) * 2 - 1) * (1 - w)
        cy = (torch.rand(n, device=dev) * 2 - 1) * (1 - h)
        flip = torch.where(torch.rand(n, device=dev) < c.hflip, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3, device=dev)
        theta[:, 0, 0] = w * flip
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = h
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

        def factor(strength: float) -> torch.Tensor:
            return torch.empty(n, 1, 1, 1, device=dev).uniform_(1 - strength, 1 + strength)

        if c.brightness:
            x = x * factor(c.brightness)
        if c.contrast:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * factor(c.contrast) + mean
        if c.saturation:
            grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
            x = (x - grey) * factor(c.saturation) + grey
        return x.clamp_(0, 255)


def image_stats(pixels: np.ndarray, max_images: int = 4000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std in [0, 1] of a uint8 NHWC array (the fitted normalisation)."""
    step = max(1, len(pixels) // max_images)
    # float64: a float32 running sum over ~10^7 values per channel stalls and gives a wrong mean.
    sample = pixels[::step].reshape(-1, 3).astype(np.float64) / 255.0
    mean = sample.mean(axis=0)
    std = sample.std(axis=0)
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


__all__ = [
    "AugmentConfig",
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
