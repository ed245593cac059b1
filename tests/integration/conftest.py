"""A tiny but real pipeline run (about 200 images, 1 epoch, small images) shared by the integration tests."""

from __future__ import annotations

import os

import pytest
from integration_params import write_params

from catsdogs.config import Params, load_params


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
