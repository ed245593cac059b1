"""The decoded cache: every image of a manifest decoded and resized once into a uint8 array on disk."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from catsdogs.core.transforms import PreprocessConfig, load_image, resize
from catsdogs.data.prepare import CLASSES, Record


def _decode_resized(args: tuple[str, int, str]) -> np.ndarray:
    path, size, interpolation = args
    cfg = PreprocessConfig(image_size=size, interpolation=interpolation)
    return resize(load_image(path, target_size=size), cfg)


def build_cache(
    records: list[Record], source: Path, cfg: PreprocessConfig, cache_dir: Path, *, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Decode every image once into a uint8 (N, S, S, 3) array + int64 labels, cached on disk.

    The cache key covers the manifest content and the resize parameters, so a changed
    split or input size never reads stale pixels.
    """
    key_src = json.dumps([[r.sha256 for r in records], cfg.image_size, cfg.interpolation])
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    cache_dir.mkdir(parents=True, exist_ok=True)
    x_path = cache_dir / f"pixels-{cfg.image_size}-{key}.npy"
    labels = np.asarray([CLASSES.index(r.label) for r in records], dtype=np.int64)
    if x_path.exists():
        return np.load(x_path, mmap_mode="r"), labels
    size = cfg.image_size
    # A temp name per process: two processes (e.g. torchrun ranks) may build the same cache at once.
    tmp = x_path.with_name(f"{x_path.stem}.{os.getpid()}.tmp.npy")
    pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(records), size, size, 3))
    jobs = [(str(source / r.path), size, cfg.interpolation) for r in records]
    with ProcessPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        it: Iterable = pool.map(_decode_resized, jobs, chunksize=64)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(jobs), desc=f"decode {size}px", unit="img")
        for i, arr in enumerate(it):
            pixels[i] = arr
    pixels.flush()
    del pixels
    os.replace(tmp, x_path)  # atomic; identical content, so the last writer winning is harmless
    return np.load(x_path, mmap_mode="r"), labels
