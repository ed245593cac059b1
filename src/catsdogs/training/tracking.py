"""MLflow wiring: one place decides where runs, artifacts and registered models live.

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
from catsdogs.inference.bundle import bundle_digest

EXPERIMENT = "catsdogs"
REGISTERED_MODEL = "catsdogs"  # the one name of the model in the registry
BUNDLE_TAG = "bundle_sha256"
BUNDLE_ARTIFACT = "bundle"

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


# --- the registry holds bundles by content ------------------------------------------------------
# A version number is only meaningful in the registry that issued it, so a bundle is found by
# the sha256 of its model files (tag ``bundle_sha256``), never by a number written on another machine.


def find_bundle_version(digest: str, name: str = REGISTERED_MODEL) -> str | None:
    """The local version whose tag ``bundle_sha256`` is ``digest`` (the newest if several)."""
    import mlflow

    versions = mlflow.MlflowClient().search_model_versions(f"name = '{name}'")
    matching = [int(v.version) for v in versions if v.tags.get(BUNDLE_TAG) == digest]
    return str(max(matching)) if matching else None


def register_bundle(bundle: Path, meta: dict[str, Any], digest: str, name: str = REGISTERED_MODEL) -> str:
    """Register ``bundle`` as a new version: logged into an "import" run of this store, tagged with its digest."""
    import mlflow

    tags = {BUNDLE_TAG: digest, "git_commit": str(meta.get("git_commit")), "data_hash": str(meta.get("data_hash"))}
    with mlflow.start_run(
        run_name=f"bundle {digest[:8]}", tags=tags | {"source_run": str(meta.get("mlflow_run_id"))}
    ) as run:
        mlflow.log_artifacts(str(bundle), BUNDLE_ARTIFACT)
    client = mlflow.MlflowClient()
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    source = f"{run.info.artifact_uri}/{BUNDLE_ARTIFACT}"
    version = client.create_model_version(name, source, run_id=run.info.run_id, tags=tags)
    return str(version.version)


def promote_bundle(bundle: Path, meta: dict[str, Any], alias: str, name: str = REGISTERED_MODEL) -> str | None:
    """Point ``alias`` at the local version holding exactly this bundle (registering it if needed)."""
    digest = bundle_digest(bundle, meta)  # recomputed from the files, not read from model.json
    try:
        setup_mlflow()
        version = find_bundle_version(digest, name) or register_bundle(bundle, meta, digest, name)
        set_alias(version, alias, name)
    except ImportError:
        log.warning("mlflow is not installed: alias %s not set", alias)
        return None
    log.info("alias %s -> %s version %s (bundle %s)", alias, name, version, digest[:12])
    return version
