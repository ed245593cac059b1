"""The one transform factory: shapes, determinism, train/eval consistency, safe decoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from catsdogs.core.config import AugmentConfig
from catsdogs.core.transforms import (
    InvalidImageError,
    PreprocessConfig,
    create_transform,
    load_image,
    normalize,
    resize,
)
from catsdogs.training.augment import train_transform

CFG = PreprocessConfig(image_size=64, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo(kaggle_train_dir) -> Image.Image:
    return load_image(kaggle_train_dir / "cat.1.jpg")


def test_eval_transform_shape_dtype_and_determinism(photo):
    t = create_transform(CFG)
    a, b = t(photo), t(photo)
    assert a.shape == (3, 64, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not t.is_training


def test_normalize_uses_config_statistics():
    pixels = np.full((3, 2, 2), 255 * 0.5, dtype=np.float32)  # value 0.5 in [0, 1]
    out = normalize(pixels, CFG)
    np.testing.assert_allclose(out[:, 0, 0], [(0.5 - 0.5) / 0.2, (0.5 - 0.4) / 0.25, (0.5 - 0.3) / 0.3], rtol=1e-5)


def test_normalize_is_the_reference_arithmetic_bit_for_bit_in_c_order():
    """Serving's fast path must give the model exactly what ``astype * scale + bias`` gave (what the shipped
    bundle was evaluated with), on the transposed HWC view ``Transform`` passes it."""
    hwc = np.random.default_rng(0).integers(0, 256, (33, 17, 3), dtype=np.uint8)
    chw = hwc.transpose(2, 0, 1)
    mean = np.asarray(CFG.mean, dtype=np.float32).reshape(3, 1, 1) * 255.0
    std = np.asarray(CFG.std, dtype=np.float32).reshape(3, 1, 1) * 255.0
    reference = chw.astype(np.float32) * (1.0 / std) + (-mean / std)
    out = normalize(chw, CFG)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert np.array_equal(out, reference)
    assert np.array_equal(normalize(chw.astype(np.float64), CFG), reference)  # float pixels too


def test_numpy_and_torch_paths_agree(photo):
    """Serving (NumPy, per image) and training/eval (torch, batched) give identical model input."""
    t = create_transform(CFG)
    per_image = t(photo)
    batched = t.batch(torch.from_numpy(t.pixels(photo)).unsqueeze(0))[0].numpy()
    np.testing.assert_allclose(per_image, batched, rtol=1e-6, atol=1e-5)


def test_train_transform_augments_but_keeps_shape(photo):
    torch.manual_seed(0)
    t = train_transform(CFG, AugmentConfig())
    assert t.is_training
    batch = torch.from_numpy(np.stack([t.pixels(photo)] * 8))
    out = t.batch(batch)
    assert out.shape == (8, 3, 64, 64) and out.dtype == torch.float32
    # random crops/flips/jitter: the 8 copies differ from each other and from the eval input
    assert len({round(float(x.sum()), 2) for x in out}) == 8
    eval_x = torch.from_numpy(create_transform(CFG)(photo))
    assert not torch.allclose(out[0], eval_x)


def test_train_flip_only_is_exact_mirror(photo):
    aug = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0, brightness=0, contrast=0, saturation=0)
    t = train_transform(CFG, aug)
    px = torch.from_numpy(t.pixels(photo)).unsqueeze(0)
    flipped = t.batch(px)[0]
    expected = create_transform(CFG).batch(px)[0].flip(-1)
    torch.testing.assert_close(flipped, expected, atol=1e-3, rtol=1e-4)


def test_resize_squashes_any_aspect_ratio():
    img = Image.new("RGB", (300, 100), (10, 20, 30))
    out = resize(img, CFG)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert tuple(out[32, 32]) == (10, 20, 30)


def test_preprocess_config_round_trip(tmp_path):
    CFG.save(tmp_path / "p.json")
    assert PreprocessConfig.load(tmp_path / "p.json") == CFG


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "I;16"])
def test_any_mode_becomes_rgb(mode):
    img = Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="TIFF" if mode in ("CMYK", "I;16") else "PNG")
    out = load_image(buf.getvalue())
    assert out.mode == "RGB" and out.size == (40, 30)


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    assert load_image(buf.getvalue()).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    wide = photo.crop((0, 0, 200, 100))
    out = load_image(_jpeg(wide, exif=exif.tobytes()))
    assert out.size == (100, 200)


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    r, _g, b = load_image(buf.getvalue()).getpixel((8, 8))
    assert r > 200 and b < 50


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty"),
        (b"hello, this is text", "not_an_image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 20, "not_an_image"),
    ],
)
def test_bad_bytes_raise_named_errors(payload, reason):
    with pytest.raises(InvalidImageError) as exc:
        load_image(payload)
    assert exc.value.reason == reason and exc.value.message


def test_truncated_jpeg_is_corrupt(photo):
    data = _jpeg(photo)
    with pytest.raises(InvalidImageError) as exc:
        load_image(data[: len(data) // 2])
    assert exc.value.reason == "corrupt"


def test_decompression_bomb_rejected_from_header():
    # A tiny PNG whose header declares 30000x30000 pixels.
    img = Image.new("1", (30000, 30000))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    assert len(buf.getvalue()) < 200_000
    with pytest.raises(InvalidImageError) as exc:
        load_image(buf.getvalue())
    assert exc.value.reason == "too_many_pixels"


def test_draft_decoding_of_large_jpeg_matches_full_decode(uploads_dir):
    """DCT-domain downscaling is a speed trick only: model input stays close to a full decode."""
    cfg = PreprocessConfig(image_size=128)
    data = (uploads_dir / "dog.4001.jpg").read_bytes()
    fast = resize(load_image(data, target_size=128), cfg).astype(np.float32)
    full = resize(load_image(data), cfg).astype(np.float32)
    assert np.abs(fast - full).mean() < 4.0


def test_image_stats_are_exact_on_large_arrays():
    """Regression: float32 accumulation over millions of pixels returned the same wrong mean for every channel."""
    from catsdogs.core.transforms import image_stats

    rng = np.random.default_rng(0)
    pixels = np.empty((600, 64, 64, 3), dtype=np.uint8)
    for c, (lo, hi) in enumerate(((100, 160), (50, 110), (0, 60))):
        pixels[..., c] = rng.integers(lo, hi, size=pixels.shape[:3])
    mean, std = image_stats(pixels)
    expected = pixels.reshape(-1, 3).astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, expected.mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(std, expected.std(axis=0), atol=1e-4)
    assert mean[0] > mean[1] > mean[2]
