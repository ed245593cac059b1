"""What the training loop trains on (``train.recipe``): the whole network on augmented images (``full``), or
only the top of a pretrained one on cached outputs of its frozen trunk (``cached_features``)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from catsdogs.core.config import Params
from catsdogs.core.transforms import PreprocessConfig, Transform, create_transform, image_stats
from catsdogs.data.loaders import ArrayLoader, SplitData
from catsdogs.data.prepare import CLASSES
from catsdogs.models.architectures import PRETRAINED_NORMALIZATION
from catsdogs.training.augment import train_transform
from catsdogs.training.runtime import Dist, all_gather_rows

log = logging.getLogger(__name__)


class FeatureBatch:
    """The "transform" of cached features: they go to the trainable top as they are (float32)."""

    @staticmethod
    def batch(x: torch.Tensor) -> torch.Tensor:
        return x.float()


@dataclass
class Job:
    """What ``fit`` trains: the module, its loaders and their transforms."""

    trainable: nn.Module
    train_loader: ArrayLoader
    val_loader: ArrayLoader
    train_tf: Transform | FeatureBatch
    eval_tf: Transform | FeatureBatch
    setup_seconds: float = 0.0  # e.g. caching the frozen part's outputs
    setup_images: int = 0


def preprocess_config(params: Params, train_pixels: np.ndarray) -> PreprocessConfig:
    """The fitted preprocessing: pretrained models keep the normalisation their weights expect."""
    if params.model.name in PRETRAINED_NORMALIZATION and params.model.pretrained:
        mean, std = PRETRAINED_NORMALIZATION[params.model.name]
    else:
        mean, std = image_stats(train_pixels)
    return PreprocessConfig(image_size=params.model.image_size, mean=mean, std=std, class_names=CLASSES)


def full_job(model: nn.Module, splits: dict[str, SplitData], cfg: PreprocessConfig, params: Params, dist: Dist) -> Job:
    tp = params.train
    train = ArrayLoader(
        splits["train"], tp.batch_size, shuffle=True, seed=tp.seed, rank=dist.rank, world_size=dist.world_size
    )
    val = ArrayLoader(splits["val"], max(tp.batch_size, 128), shuffle=False, rank=dist.rank, world_size=dist.world_size)
    train_tf = train_transform(cfg, tp.augment)
    return Job(model, train, val, train_tf, create_transform(cfg))


class CachedTop(nn.Module):
    """The trainable top of a pretrained network, fed with the cached output of its frozen trunk."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        # a: (N, C, h, w) trunk output for a tuned top, or (N, F) pooled features for a linear probe
        return self.model.classify(self.model.tuned(a) if self.model.tuned is not None else a)


def cached_features_job(
    model: nn.Module,
    splits: dict[str, SplitData],
    cfg: PreprocessConfig,
    params: Params,
    dist: Dist,
    device: torch.device,
) -> Job:
    """Train only the tuned top (``model.tuned_blocks``) and the head, on cached outputs of the frozen trunk."""
    if not hasattr(model, "trunk"):
        raise ValueError(f"train.recipe cached_features needs a pretrained model, not {params.model.name}")
    for p in model.parameters():
        p.requires_grad_(False)
    for module in (model.head, model.tuned):
        if module is not None:
            module.requires_grad_(True)
    tp = params.train
    t0 = time.perf_counter()
    flips = (False, True) if tp.augment.hflip > 0 else (False,)
    parts = [frozen_outputs(model, splits["train"], cfg, device, dist, flip) for flip in flips]
    train = SplitData(np.concatenate(parts), np.concatenate([splits["train"].labels] * len(flips)))
    val = SplitData(frozen_outputs(model, splits["val"], cfg, device, dist, False), splits["val"].labels)
    seconds, images = time.perf_counter() - t0, len(train.labels) + len(val.labels)
    log.info("cached the frozen trunk for %d images in %.0f s (%.1f img/s)", images, seconds, images / seconds)
    kw = {"rank": dist.rank, "world_size": dist.world_size}
    train_loader = ArrayLoader(train, tp.batch_size, shuffle=True, seed=tp.seed, **kw)
    val_loader = ArrayLoader(val, 512, shuffle=False, **kw)
    return Job(CachedTop(model), train_loader, val_loader, FeatureBatch(), FeatureBatch(), seconds, images)


@torch.no_grad()
def frozen_outputs(
    model: nn.Module, data: SplitData, cfg: PreprocessConfig, device: torch.device, dist: Dist, flip: bool
) -> np.ndarray:
    """The frozen trunk's output (float16, in the split's order): pooled features when nothing is tuned."""
    model.eval()
    transform = create_transform(cfg)
    loader = ArrayLoader(data, 64, shuffle=False, rank=dist.rank, world_size=dist.world_size)
    shard = []
    for pixels, _ in loader:
        x = transform.batch(pixels.to(device))
        a = model.trunk(torch.flip(x, dims=[3]) if flip else x)
        out = a if model.tuned is not None else model.imagenet_features(a)
        shard.append(out.half().cpu().numpy())  # float16 halves the cache; the top trains in float32
    parts = all_gather_rows(np.concatenate(shard), dist)
    out = np.empty((len(data.labels), *parts[0].shape[1:]), np.float16)
    for rank, part in enumerate(parts):
        out[rank :: dist.world_size] = part  # ArrayLoader's evaluation shards are strided
    return out
