"""Splits as in-memory uint8 arrays from the decoded cache, and the batches the torch loops read from them.

torch is imported only when a loader is iterated: splits and their labels are plain NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from catsdogs.core.config import Params
from catsdogs.core.transforms import PreprocessConfig
from catsdogs.data.cache import build_cache
from catsdogs.data.prepare import SPLITS, raw_source, read_manifest

if TYPE_CHECKING:
    import torch


@dataclass
class SplitData:
    pixels: np.ndarray  # uint8 (N, S, S, 3)
    labels: np.ndarray  # int64 (N,)


def load_splits(
    params: Params, prepared_dir: Path, cfg: PreprocessConfig, *, progress: bool = True
) -> dict[str, SplitData]:
    """Decoded uint8 arrays per split, through the shared ``resize`` step."""
    records = read_manifest(prepared_dir / "manifest.csv")
    source = raw_source(prepared_dir, params.base_dir)
    pixels, labels = build_cache(records, source, cfg, params.path(params.data.cache_dir), progress=progress)
    split_of = np.asarray([r.split for r in records])
    return {s: SplitData(np.ascontiguousarray(pixels[split_of == s]), labels[split_of == s]) for s in SPLITS}


def load_split(params: Params, prepared_dir: Path, cfg: PreprocessConfig, split: str) -> SplitData:
    """One split only (decodes and caches just its images: cheap for evaluation at a new size)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    records = [r for r in read_manifest(prepared_dir / "manifest.csv") if r.split == split]
    source = raw_source(prepared_dir, params.base_dir)
    pixels, labels = build_cache(records, source, cfg, params.path(params.data.cache_dir))
    return SplitData(pixels, labels)


class ArrayLoader:
    """Batches from an in-memory uint8 (N, H, W, 3) array: no decoding in the loop.

    Under torch.distributed each rank reads its own shard (``rank``/``world_size``). Training
    shards are re-shuffled every epoch from ``seed + epoch`` and cut to equal length, so every
    rank runs the same number of steps; evaluation shards (no shuffle) cover each image once.
    """

    def __init__(
        self,
        data: SplitData,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> np.ndarray:
        n = len(self.data.labels)
        if not self.shuffle:
            return np.arange(self.rank, n, self.world_size)
        order = np.random.default_rng(self.seed + self.epoch).permutation(n)
        usable = n - n % self.world_size
        return order[self.rank : usable : self.world_size]

    def __len__(self) -> int:
        return math.ceil(len(self.indices()) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        import torch

        order = self.indices()
        for start in range(0, len(order), self.batch_size):
            idx = np.sort(order[start : start + self.batch_size])
            yield torch.from_numpy(self.data.pixels[idx]), torch.from_numpy(self.data.labels[idx])
