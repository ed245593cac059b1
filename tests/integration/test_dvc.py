"""`dvc repro` runs the real pipeline (prepare -> train -> evaluate -> export) on tiny params."""

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
    shutil.copy(PROJECT_ROOT / ".dvc" / "config", tmp_path / ".dvc" / "config")  # the project's default remote
    first = run(str(bin_dir / "dvc"), "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    for stage in ("prepare", "train", "evaluate", "export"):
        assert f"Running stage '{stage}'" in first.stdout
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", "train", "evaluate", "export"}
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1
    assert json.loads((tmp_path / "models" / "model.json").read_text())["architecture"] == "simple_cnn"

    again = run(str(bin_dir / "dvc"), "repro")
    assert again.returncode == 0 and "Running stage" not in again.stdout  # nothing is stale

    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["export"]["quantize"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    third = run(str(bin_dir / "dvc"), "repro")
    assert third.returncode == 0
    assert "Running stage 'export'" in third.stdout and "Running stage 'train'" not in third.stdout
    assert not (tmp_path / "models" / "model.int8.onnx").exists()

    # the default local remote: push, lose the cached outputs, pull them back
    assert run(str(bin_dir / "dvc"), "push").returncode == 0
    assert (tmp_path / "dvc-storage").is_dir()
    best = tmp_path / "artifacts" / "train" / "best.pt"
    digest = best.read_bytes()
    best.unlink()
    shutil.rmtree(tmp_path / ".dvc" / "cache")
    pulled = run(str(bin_dir / "dvc"), "pull")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert best.read_bytes() == digest
