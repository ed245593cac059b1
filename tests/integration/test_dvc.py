"""`dvc repro` runs the real pipeline (prepare -> train -> calibrate -> evaluate -> export -> robustness ->
model_card) on tiny params."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from integration_params import write_params

from catsdogs.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow


def test_dvc_repro_runs_the_whole_pipeline(tmp_path, kaggle_train_dir):
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
    }
    shutil.copy(PROJECT_ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    # the stages depend on package sources by relative path
    shutil.copytree(PROJECT_ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    write_params(tmp_path, kaggle_train_dir)

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)

    assert run("git", "init", "-q").returncode == 0
    assert run(str(bin_dir / "dvc"), "init", "-q").returncode == 0
    shutil.copy(PROJECT_ROOT / ".dvc" / "config", tmp_path / ".dvc" / "config")  # the project's default remote...
    remote = tmp_path / "remote"  # ...pointed inside this test's folder
    assert run(str(bin_dir / "dvc"), "remote", "modify", "shared", "url", str(remote)).returncode == 0
    first = run(str(bin_dir / "dvc"), "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    stages = ("prepare", "train", "calibrate", "evaluate", "export", "robustness", "model_card")
    for stage in stages:
        assert f"Running stage '{stage}'" in first.stdout
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(stages)
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    meta = json.loads((tmp_path / "models" / "model.json").read_text())
    assert meta["architecture"] == "simple_cnn" and meta["metrics"]["accuracy"] == metrics["accuracy"]
    assert (tmp_path / "models" / "MODEL_CARD.md").read_text().startswith(f"# Model card: catsdogs {meta['version']}")

    again = run(str(bin_dir / "dvc"), "repro")
    assert again.returncode == 0 and "Running stage" not in again.stdout  # nothing is stale

    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["export"]["quantize"] = True
    params["export"]["int8_max_accuracy_drop"] = 1.0  # keep whatever INT8 gives
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    third = run(str(bin_dir / "dvc"), "repro")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "Running stage 'export'" in third.stdout and "Running stage 'model_card'" in third.stdout
    for upstream in ("train", "calibrate", "evaluate"):
        assert f"Running stage '{upstream}'" not in third.stdout
    assert (tmp_path / "models" / "model.int8.onnx").exists()

    # the default local remote: push, lose the cached outputs, pull them back
    assert run(str(bin_dir / "dvc"), "push").returncode == 0
    assert remote.is_dir() and any(remote.rglob("*"))
    # (the prepared manifest is the cached output; checkpoint and bank are committed: cache: false)
    manifest = tmp_path / "data" / "prepared" / "manifest.csv"
    content = manifest.read_bytes()
    shutil.rmtree(manifest.parent)
    shutil.rmtree(tmp_path / ".dvc" / "cache")
    pulled = run(str(bin_dir / "dvc"), "pull")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert manifest.read_bytes() == content
