"""An evaluation set of images with no cat or dog, for the "this is not a cat or a dog" signal.

Nothing here is committed data: images are generated (blanks, noise, gradients, text, patterns) or
read from photos that ship inside installed packages (scikit-image, scikit-learn), plus an optional
folder of real non-pet photos. The threshold is never fitted on this set (it is chosen on the
validation split's cats and dogs); this set only measures how often non-pets are caught.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from catsdogs.core.transforms import IMAGE_SUFFIXES, PreprocessConfig, load_image, resize

# scikit-image sample photos: people, vehicles, objects, landscapes, textures, microscopy.
# ``chelsea`` is left out: it is a cat.
# Read as files from the installed package (its fetcher functions may try to download).
SKIMAGE_PHOTOS = (
    "astronaut.png", "camera.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "brick.png", "grass.png",
    "gravel.png", "moon.png", "coins.png", "hubble_deep_field.jpg", "ihc.png", "logo.png", "page.png",
    "text.png", "retina.jpg", "horse.png", "color.png", "cell.png",
)  # fmt: skip


def generated(n_each: int = 8, seed: int = 0) -> list[Image.Image]:
    """Blanks, noise, gradients, stripes and rendered text: what broken uploads and screenshots look like."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n_each):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        images.append(Image.new("RGB", (256, 256), color))
        images.append(Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)))
        blurred = rng.normal(128, 60, (256, 256, 3)).clip(0, 255).astype(np.uint8)
        images.append(Image.fromarray(blurred).filter(ImageFilter.GaussianBlur(4)))
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        ramp = np.linspace(0, 1, 256)[:, None, None] if rng.random() < 0.5 else np.linspace(0, 1, 256)[None, :, None]
        images.append(Image.fromarray((a + (b - a) * ramp * np.ones((256, 256, 1))).astype(np.uint8)))
        period = int(rng.integers(8, 64))
        stripes = ((np.arange(256) // period) % 2).astype(np.uint8) * 255
        images.append(Image.fromarray(np.broadcast_to(stripes[None, :, None], (256, 256, 3)).copy()))
        images.append(_text_image(rng))
    return images


def _text_image(rng: np.random.Generator) -> Image.Image:
    img = Image.new("RGB", (256, 256), tuple(int(c) for c in rng.integers(180, 256, 3)))
    draw = ImageDraw.Draw(img)
    words = ["INVOICE", "Total 42.00", "Hello world", "catsdogs", "Lorem ipsum", "2026-12-01", "ADOPT ME", "page 3"]
    for row in range(10):
        draw.text((10, 10 + row * 24), " ".join(rng.choice(words, 3)), fill=(0, 0, 0))
    return img


def package_photos() -> list[Image.Image]:
    """Photos shipped in scikit-image and scikit-learn, each with its four corner crops."""
    import skimage
    from sklearn.datasets import load_sample_images

    skimage_data = Path(skimage.__file__).parent / "data"
    photos = [load_image(skimage_data / name) for name in SKIMAGE_PHOTOS]
    photos += [Image.fromarray(img) for img in load_sample_images().images]
    views = []
    for photo in photos:
        rgb = photo.convert("RGB")
        w, h = rgb.size
        views.append(rgb)
        views += [rgb.crop((x, y, x + w // 2, y + h // 2)) for x in (0, w // 2) for y in (0, h // 2)]
    return views


def folder_photos(folder: Path) -> list[Image.Image]:
    return [load_image(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]


def nonpet_set(image_size: int, folder: Path | None = None) -> dict[str, np.ndarray]:
    """uint8 (N, S, S, 3) arrays per group, through the same resize step as training and serving."""
    cfg = PreprocessConfig(image_size=image_size)
    groups = {"generated": generated(), "package_photos": package_photos()}
    if folder is not None and folder.is_dir():
        groups["photo_folder"] = folder_photos(folder)
    return {name: np.stack([resize(img.convert("RGB"), cfg) for img in imgs]) for name, imgs in groups.items()}
