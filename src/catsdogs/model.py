"""Model architectures. Pure PyTorch: no I/O, no training logic.

``create_model(name, ...)`` is the only entry point the rest of the package uses,
so a new architecture is one class plus one registry line.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    name: str = "simple_cnn"
    num_classes: int = 2
    dropout: float = 0.5


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SimpleCNN(nn.Module):
    """The seed's baseline: 4 x (Conv3x3 + BN + ReLU + MaxPool2), GAP, 2 FC layers.

    422,530 parameters. Works at any input size (global average pooling).
    """

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        widths = (3, 32, 64, 128, 256)
        blocks = []
        for c_in, c_out in itertools.pairwise(widths):
            blocks += [
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(256, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(128, cfg.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, 3, H, W)
        x = self.features(x)  # (N, 256, H/16, W/16)
        x = self.pool(x).flatten(1)  # (N, 256)
        return self.classifier(x)  # (N, num_classes) logits


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn_relu(c_in, c_out, stride)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        nn.init.zeros_(self.bn2.weight)  # start each residual branch as identity
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn2(self.conv2(self.conv1(x))) + self.shortcut(x))


class ResNetSmall(nn.Module):
    """A compact ResNet for small inputs on CPU.

    The stride-2 stem puts the costly full-resolution work at 32 channels on a
    quarter of the pixels, which is why this is deeper than SimpleCNN at similar cost.
    """

    def __init__(
        self,
        cfg: ModelConfig = ModelConfig(),
        widths: tuple[int, ...] = (32, 64, 128, 256),
        depths: tuple[int, ...] = (1, 2, 2, 2),
    ):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(3, widths[0] // 2, stride=2), conv_bn_relu(widths[0] // 2, widths[0]))
        stages = []
        c_in = widths[0]
        for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            for j in range(depth):
                stride = 2 if (j == 0 and i > 0) else 1
                stages.append(BasicBlock(c_in, width, stride))
                c_in = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(c_in, cfg.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, 3, H, W)
        x = self.stem(x)  # (N, w0, H/2, W/2)
        x = self.stages(x)  # (N, w3, H/16, W/16)
        x = self.pool(x).flatten(1)  # (N, w3)
        return self.fc(self.dropout(x))  # (N, num_classes) logits


class FlipTTA(nn.Module):
    """Test-time augmentation: average the logits of the image and its mirror image.

    Cats and dogs look the same mirrored, so this removes left/right noise from the
    prediction at the cost of a second forward pass. Exported as part of the ONNX graph.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, 3, H, W); one pass over (2N, 3, H, W) is cheaper on CPU than two passes over N
        n = x.shape[0]
        logits = self.model(torch.cat([x, torch.flip(x, dims=[3])], dim=0))  # (2N, num_classes)
        return (logits[:n] + logits[n:]) / 2  # (N, num_classes)


MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "simple_cnn": SimpleCNN,
    "resnet_small": ResNetSmall,
}


def create_model(name: str = "simple_cnn", *, num_classes: int = 2, dropout: float = 0.5) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](ModelConfig(name=name, num_classes=num_classes, dropout=dropout))


def with_tta(model: nn.Module, tta: str | None) -> nn.Module:
    """Wrap ``model`` for inference-time augmentation (``"flip"``) or return it unchanged (``None``)."""
    if tta in (None, "none"):
        return model
    if tta == "flip":
        return FlipTTA(model).eval()
    raise ValueError(f"unknown test-time augmentation {tta!r}; choose 'flip' or 'none'")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
