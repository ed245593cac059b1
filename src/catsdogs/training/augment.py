"""The training-only augmentation, in torch, plugged into the one transform factory of ``catsdogs.core``.

Random resized crop + horizontal flip + colour jitter on a whole uint8 batch from the decoded cache:
cheap on two cores, where per-image Pillow augmentation would starve the model. Resizing and
normalisation stay in ``catsdogs.core.transforms``, shared with evaluation and serving.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from catsdogs.core.config import AugmentConfig
from catsdogs.core.transforms import PreprocessConfig, Transform, create_transform


class BatchAugment:
    """Random resized crop + horizontal flip + colour jitter on a float NCHW batch in [0, 255].

    One ``affine_grid``/``grid_sample`` call crops, rescales and flips the whole batch.
    """

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
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


def train_transform(cfg: PreprocessConfig, augment: AugmentConfig | None = None) -> Transform:
    """The training transform: ``create_transform`` (the one factory) with ``BatchAugment`` plugged in."""
    return create_transform(cfg, augment=BatchAugment(augment or AugmentConfig()))
