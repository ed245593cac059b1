"""A tiny but real pipeline run (about 200 images, 1 epoch, small images) shared by the integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from catsdogs.config import Params, load_params


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


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    """An isolated SQLite MLflow store (the project's own store is never touched by tests)."""
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    uri = f"sqlite:///{db}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory, kaggle_train_dir, mlflow_uri) -> Params:
    root = tmp_path_factory.mktemp("project")
    return load_params(write_params(root, kaggle_train_dir))


@pytest.fixture(scope="module")
def trained(tiny_project):
    from catsdogs.train import run_training

    return run_training(tiny_project)
