"""Tiny pipeline parameters for integration tests: the project's params.yaml with small overrides."""

from __future__ import annotations

from pathlib import Path

import yaml

from catsdogs.core.paths import PARAMS_FILE

TINY = {
    "data": {"limit": 200},
    "model": {"name": "simple_cnn", "image_size": 48, "pretrained": False},
    "inference": {"image_size": 56},  # served larger than trained, as the shipped model is
    "train": {"recipe": "full", "epochs": 1, "batch_size": 32, "patience": 3, "bf16": "off", "device": "cpu"},
    "export": {"calibration_images": 32},
    "gate": {"min_accuracy": 0.3, "max_latency_ms": 200.0},
    "distill": {"image_size": 64, "alpha": [0.0, 1.0], "l2": [0.001]},
    "teacher": {"tuned_blocks": 0},  # simple_cnn from scratch: no pretrained blocks; the stage still runs whole
}


def write_params(root: Path, source: Path, **sections: dict) -> Path:
    """Write ``root/params.yaml``; every key of the real file stays present (dvc.yaml interpolates them)."""
    params = yaml.safe_load(PARAMS_FILE.read_text())
    for overrides in (TINY, {"data": {"source": str(source)}}, sections):
        for section, values in overrides.items():
            params[section].update(values)
    if "tuned_blocks" in params["model"] and "tuned_blocks" not in sections.get("model", {}):
        params["model"]["tuned_blocks"] = 0  # tiny runs train small models from scratch: no pretrained blocks to tune
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path
