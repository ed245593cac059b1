"""Development sets for the "not a cat or a dog" signal, beyond Kaggle: non-pets and pets in other styles.

Nothing here is committed data. Images are generated (blanks, noise, gradients, text, patterns), read
from photos that ship inside installed packages (scikit-image, scikit-learn, foolbox's ImageNet and
CIFAR samples), read from optional folders (real non-pet photos, full-size uploads), or derived from
those (recrops, people and objects pasted into the frame, pets on other backgrounds).

Each set says whether the pet score's regression is fitted on it (``fit``) or it is held out, so the
model card can report honest numbers: only the seeded half of a folder or of the uploads is fitted.
"""

from __future__ import annotations

from dataclasses import dataclass
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


FOOLBOX_PET_LABELS = {"imagenet": set(range(151, 269)) | set(range(281, 286)), "cifar10": {3, 5}}
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class DevSet:
    """Images of one source and kind: ``pet`` true for cats and dogs (false rejection is measured)."""

    name: str
    pet: bool
    fit: bool  # the pet score's regression saw these
    images: list[Image.Image]
    note: str = ""


def foolbox_samples() -> dict[str, list[tuple[int, Image.Image]]]:
    """foolbox's labelled samples per dataset (imagenet, cifar10, cifar100, mnist, fashionMNIST)."""
    import foolbox

    out: dict[str, list[tuple[int, Image.Image]]] = {}
    for path in sorted((Path(foolbox.__file__).parent / "data").glob("*_*_*.*")):
        dataset, _, label = path.stem.rsplit("_", 2)
        out.setdefault(dataset, []).append((int(label), load_image(path)))
    return out


def wheel_sets() -> list[DevSet]:
    """Held-out sets from foolbox's samples: 20 ImageNet val photos, 32 px CIFAR and 28 px digit images."""
    sets = []
    for dataset, items in foolbox_samples().items():
        pets = FOOLBOX_PET_LABELS.get(dataset, set())
        if dataset == "cifar10":  # split by kind: animals vs vehicles
            animals = [im for lab, im in items if CIFAR10[lab] in ("bird", "deer", "frog", "horse")]
            vehicles = [im for lab, im in items if CIFAR10[lab] in ("airplane", "automobile", "ship", "truck")]
            sets += [DevSet("cifar10_animals", False, False, animals, "bird, deer, frog, horse; 32 px"),
                     DevSet("cifar10_vehicles", False, False, vehicles, "32 px")]  # fmt: skip
        else:
            others = [im for lab, im in items if lab not in pets]
            sets.append(DevSet(f"{dataset}_samples", False, False, others, "foolbox package samples"))
        if pets:
            sets.append(DevSet(f"{dataset}_pets", True, False, [im for lab, im in items if lab in pets]))
    return sets


def halves(items: list, seed: int) -> tuple[list, list]:
    """A seeded half to fit on and the other half to hold out."""
    order = np.random.default_rng(seed).permutation(len(items))
    cut = len(items) // 2
    return [items[i] for i in sorted(order[:cut])], [items[i] for i in sorted(order[cut:])]


def variations(photo: Image.Image, rng: np.random.Generator, props: list[Image.Image]) -> dict[str, Image.Image]:
    """A pet photo as other sources frame it: recropped, with a person or object in view, on another background."""
    w, h = photo.size
    out = {}
    cw, ch = int(w * 0.7), int(h * 0.7)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out["recrop"] = photo.crop((x, y, x + cw, y + ch))
    prop = props[int(rng.integers(len(props)))].copy()
    prop.thumbnail((int(w * 0.45), int(h * 0.55)))
    pasted = photo.copy()
    pasted.paste(prop, (int(rng.integers(0, w - prop.size[0] + 1)), int(rng.integers(0, h - prop.size[1] + 1))))
    out["object_in_view"] = pasted
    background = props[int(rng.integers(len(props)))].convert("RGB").resize((600, 500))
    s = float(rng.uniform(0.5, 0.75))
    small = photo.resize((int(600 * s), int(500 * s)))
    background.paste(
        small, (int(rng.integers(0, 600 - small.size[0] + 1)), int(rng.integers(0, 500 - small.size[1] + 1)))
    )
    out["other_background"] = background
    out["grayscale"] = photo.convert("L").convert("RGB")
    return out


def variation_sets(folder: Path, seed: int) -> list[DevSet]:
    """Variations of the full-size pet photos in ``folder``: the seeded half fitted, the other half held out."""
    photos = folder_photos(folder)
    props = package_photos()[::5]  # the whole photos (each is followed by its four corner crops)
    rng = np.random.default_rng(seed)
    fit, held = halves(photos, seed)
    sets = [DevSet("uploads", True, False, [p.convert("RGB") for p in photos], "full-size Kaggle originals")]
    for name, group in (("fit", fit), ("held", held)):
        by_kind: dict[str, list[Image.Image]] = {}
        for photo in group:
            for kind, img in variations(photo.convert("RGB"), rng, props).items():
                by_kind.setdefault(kind, []).append(img)
        suffix = "_fit" if name == "fit" else ""
        sets += [DevSet(f"uploads_{kind}{suffix}", True, name == "fit", imgs) for kind, imgs in by_kind.items()]
    return sets


def nonpet_sets(folder: Path | None, seed: int) -> list[DevSet]:
    """Generated images (fitted), package photos (held out) and a real non-pet folder split in halves."""
    sets = [DevSet("generated", False, True, generated()), DevSet("package_photos", False, False, package_photos())]
    if folder is not None and folder.is_dir():
        fit, held = halves(folder_photos(folder), seed)
        sets += [DevSet("photo_folder_fit", False, True, fit), DevSet("photo_folder", False, False, held)]
    return sets


def dev_sets(nonpet_dir: Path | None, uploads_dir: Path | None, seed: int) -> list[DevSet]:
    """Every development set beyond Kaggle's splits, fitted ones first."""
    sets = nonpet_sets(nonpet_dir, seed) + wheel_sets()
    if uploads_dir is not None and uploads_dir.is_dir():
        sets += variation_sets(uploads_dir, seed)
    return sorted(sets, key=lambda d: not d.fit)


def to_pixels(images: list[Image.Image], image_size: int) -> np.ndarray:
    """uint8 (N, S, S, 3) through the same resize step as training and serving."""
    cfg = PreprocessConfig(image_size=image_size)
    return np.stack([resize(img.convert("RGB"), cfg) for img in images])
