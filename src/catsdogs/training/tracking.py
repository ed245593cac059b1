"""MLflow wiring: one place decides where runs, artifacts and registered models live
(``catsdogs.release.registry`` finds and promotes bundles in that registry).

Default: a SQLite store in the project (no server needed) with artifacts under
``mlartifacts/``; ``MLFLOW_TRACKING_URI`` points everything at a server instead.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from catsdogs.core.paths import PROJECT_ROOT, tracking_uri

EXPERIMENT = "catsdogs"
REGISTERED_MODEL = "catsdogs"  # the one name of the model in the registry

log = logging.getLogger(__name__)


def setup_mlflow(experiment: str = EXPERIMENT) -> Any:
    """Point MLflow at the configured store and return the experiment (created if needed)."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        location = os.environ.get("MLFLOW_ARTIFACT_ROOT")
        if location is None and uri.startswith("sqlite:///"):
            # Without this, MLflow puts artifacts under the *current directory*.
            location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
        mlflow.create_experiment(experiment, artifact_location=location)
    return mlflow.set_experiment(experiment)


def known_run(run_id: str | None) -> bool:
    """Whether ``run_id`` is a run in the configured store: a model trained on another machine has a run id
    that this store never saw, and its later stages then log nothing instead of failing."""
    if not run_id:
        return False
    import mlflow
    from mlflow.exceptions import MlflowException

    setup_mlflow()
    try:
        mlflow.get_run(run_id)
    except MlflowException:
        log.warning("MLflow run %s is not in %s (trained elsewhere?): not logged there", run_id, tracking_uri())
        return False
    return True


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
        # The pipeline's own outputs (DVC deletes them before a stage re-creates them) are not code.
        outputs = [f":(exclude){d}" for d in ("artifacts", "models", "reports", "data")]
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *outputs],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def set_alias(version: str | int, alias: str, name: str = REGISTERED_MODEL) -> None:
    import mlflow

    mlflow.MlflowClient().set_registered_model_alias(name, alias, str(version))
