"""The lineage reproduces on a fresh `git clone`: the committed dvc.lock matches the committed code and params."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from catsdogs.core.paths import PROJECT_ROOT, SHARED_DATA_DIR

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HEAD cloned beside a `shared` folder that links to the real shared data, as on a new machine."""
    root = tmp_path_factory.mktemp("fresh")
    (root / "shared").mkdir()
    (root / "shared" / "data").symlink_to(SHARED_DATA_DIR)
    subprocess.run(["git", "clone", "-q", str(PROJECT_ROOT), str(root / "catsdogs")], check=True, timeout=120)
    return root / "catsdogs"


def run(clone: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(clone / "src")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{clone}/mlruns.db"
    return subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=900, check=False)


def test_dvc_status_shows_no_changed_code_or_params(clone: Path) -> None:
    status = run(clone, "dvc", "status")
    assert status.returncode == 0, status.stderr
    # Outputs that are not in this clone's cache show as "deleted"/"not in cache"; any "modified"
    # dependency (code, params, data) would mean `dvc repro` retrains what the commit already holds.
    modified = [line.strip() for line in status.stdout.splitlines() if "modified:" in line]
    assert modified == [], status.stdout


def test_prepare_recreates_the_locked_data_byte_for_byte(clone: Path) -> None:
    prepared = run(clone, "catsdogs", "data", "prepare")
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    status = run(clone, "dvc", "status", "prepare")
    # Same bytes as the lock: DVC only notes that this clone's cache does not hold them yet.
    # A single differing byte would show as "modified: data/prepared".
    assert status.returncode == 0, status.stderr
    lines = [" ".join(line.split()) for line in status.stdout.splitlines() if line.strip()]
    up_to_date = ["Data and pipelines are up to date."]
    assert lines in (up_to_date, ["prepare:", "changed outs:", "not in cache: data/prepared"]), lines


def test_repro_dry_run_succeeds(clone: Path) -> None:
    dry = run(clone, "dvc", "repro", "--dry")
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]


def test_served_files_and_model_card_are_pipeline_outputs(clone: Path) -> None:
    import yaml

    outs = set()
    for stage in yaml.safe_load((clone / "dvc.lock").read_text())["stages"].values():
        outs |= {o["path"] for o in stage.get("outs", [])}
    meta = yaml.safe_load((clone / "models" / "model.json").read_text())
    served = {f"models/{name}" for key, name in meta["files"].items() if name and key != "torch"}
    assert served | {"models/model.json", "models/MODEL_CARD.md"} <= outs
