"""Filesystem locations, anchored on the package (never on the current directory).

``CATSDOGS_HOME`` overrides the project root, e.g. for an installed (non-editable)
package that is pointed at a checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/catsdogs (this file is core/paths.py)
PROJECT_ROOT = Path(os.environ.get("CATSDOGS_HOME", PACKAGE_DIR.parents[1])).resolve()

PARAMS_FILE = PROJECT_ROOT / "params.yaml"
MODELS_DIR = PROJECT_ROOT / "models"  # the shipped, exported model bundle
ARTIFACTS_DIR = PROJECT_ROOT / "artifacts"  # checkpoints and training outputs (DVC outs)
REPORTS_DIR = PROJECT_ROOT / "reports"
DATA_DIR = PROJECT_ROOT / "data"
# Read-only data shared beside the checkout (tests and the default data source).
SHARED_DATA_DIR = Path(os.environ.get("CATSDOGS_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data")).resolve()
DEFAULT_SOURCE = SHARED_DATA_DIR / "dogs-vs-cats" / "train"
MLFLOW_DB = PROJECT_ROOT / "mlruns.db"


def resolve(path: str | os.PathLike[str], base: Path = PROJECT_ROOT) -> Path:
    """Relative paths in config files are relative to the project root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def tracking_uri() -> str:
    """Where MLflow keeps runs and registered models: ``MLFLOW_TRACKING_URI``, else the project's SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{MLFLOW_DB}"
