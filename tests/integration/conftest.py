"""A tiny but real pipeline run (200 images, 1 epoch, small images) shared by the integration tests.

It is built once per session, in its own MLflow store. Environment changes are scoped: the
fixtures that build it set ``MLFLOW_TRACKING_URI`` only while they run, and every integration
test gets the same store through ``monkeypatch`` (restored after the test). Tests treat the
shared project as read-only: a test that changes a bundle or the registry works on a copy or a
store of its own, so the tests pass in any order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from integration_params import write_params

from catsdogs.core.config import Params, load_params
from support import use_mlflow_store


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """An isolated SQLite MLflow store (the project's own store is never touched by tests)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _mlflow_store(monkeypatch, mlflow_uri) -> None:
    use_mlflow_store(monkeypatch, mlflow_uri)


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory, kaggle_train_dir) -> Params:
    root = tmp_path_factory.mktemp("project")
    return load_params(write_params(root, kaggle_train_dir))


@pytest.fixture(scope="session")
def trained(tiny_project, mlflow_uri):
    from catsdogs.training.train import run_training

    with pytest.MonkeyPatch.context() as mp:
        use_mlflow_store(mp, mlflow_uri)
        return run_training(tiny_project)


@dataclass
class Pipeline:
    calibration: Any
    metrics: dict[str, Any]
    export: dict[str, Any]


@pytest.fixture(scope="session")
def pipeline(trained, tiny_project, mlflow_uri) -> Pipeline:
    """calibrate -> evaluate -> export -> model card, as `dvc repro` runs them after train."""
    from catsdogs.release.calibrate import run_calibration
    from catsdogs.release.card import write_model_card
    from catsdogs.release.evaluate import run_evaluation
    from catsdogs.release.export import run_export

    with pytest.MonkeyPatch.context() as mp:
        use_mlflow_store(mp, mlflow_uri)
        cal = run_calibration(tiny_project)
        metrics = run_evaluation(tiny_project)
        report = run_export(tiny_project)
        write_model_card(tiny_project, tiny_project.path(tiny_project.export.output_dir))
    return Pipeline(cal, metrics, report)
