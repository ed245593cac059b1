"""Tiny pipeline parameters for integration tests."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_params(root: Path, source: Path, **sections) -> Path:
    params = {
        "data": {"source": str(source), "limit": 200},
        "model": {"name": "simple_cnn", "image_size": 48},
        "train": {"epochs": 1, "batch_size": 32, "patience": 3},
        "export": {"calibration_images": 32},
        "gate": {"min_accuracy": 0.3, "max_latency_ms": 200.0},
    }
    for section, values in sections.items():
        params.setdefault(section, {}).update(values)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path
