"""`dvc repro` runs the real pipeline (prepare -> train -> calibrate -> evaluate -> export -> robustness ->
model_card, distill and teacher) on tiny params."""

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

from catsdogs.core.paths import PROJECT_ROOT

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
    shutil.copy(PROJECT_ROOT / ".dvcignore", tmp_path / ".dvcignore")  # bytecode is no part of the stage folders
    remote = tmp_path / "remote"  # ...pointed inside this test's folder
    assert run(str(bin_dir / "dvc"), "remote", "modify", "shared", "url", str(remote)).returncode == 0
    first = run(str(bin_dir / "dvc"), "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    stages = ("prepare", "train", "calibrate", "evaluate", "export", "robustness", "model_card", "distill", "teacher")
    for stage in stages:
        assert f"Running stage '{stage}'" in first.stdout
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(stages)
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    meta = json.loads((tmp_path / "models" / "model.json").read_text())
    assert meta["architecture"] == "simple_cnn" and meta["metrics"]["accuracy"] == metrics["accuracy"]
    assert (tmp_path / "models" / "MODEL_CARD.md").read_text().startswith(f"# Model card: catsdogs {meta['version']}")
    check_student(tmp_path, meta)
    check_teacher(tmp_path)

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
    # (the prepared manifest is the cached output; checkpoint and calibration are committed: cache: false)
    manifest = tmp_path / "data" / "prepared" / "manifest.csv"
    content = manifest.read_bytes()
    shutil.rmtree(manifest.parent)
    shutil.rmtree(tmp_path / ".dvc" / "cache")
    pulled = run(str(bin_dir / "dvc"), "pull")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert manifest.read_bytes() == content


def check_student(root: Path, teacher: dict) -> None:
    """The distill stage leaves a servable student bundle and a report that sets it beside the teacher."""
    from catsdogs.inference.predictor import Predictor

    report = json.loads((root / "reports" / "student.json").read_text())
    student = json.loads((root / "models" / "student" / "model.json").read_text())
    assert student["architecture"] == "efficientnet_lite0" and student["preprocess"]["image_size"] == 64
    assert student["metrics"]["accuracy"] == report["student"]["test_accuracy"]
    assert report["teacher"]["test_accuracy"] == teacher["metrics"]["accuracy"]
    assert {r["alpha"] for r in report["student"]["training"]["grid"]} == {0.0, 1.0}
    assert report["student"]["latency_ms"][student["default_backend"]]["p50"] > 0
    assert set(report["student"]["robustness"]) >= {"clean", "jpeg_q20", "center_crop_60pct"}
    # it is served like the teacher: a pet score and thresholds fitted on the student's own val scores
    predictor = Predictor.load(root / "models" / "student")
    assert predictor.meta["thresholds"]["pet_score"] is not None


def check_teacher(root: Path) -> None:
    """The teacher stage leaves its own servable bundle, trained and judged apart from the shipped model."""
    from catsdogs.inference.predictor import Predictor

    report = json.loads((root / "reports" / "teacher.json").read_text())
    bundle = root / "models" / "teacher"
    meta = json.loads((bundle / "model.json").read_text())
    assert report["bundle"] == "models/teacher" and meta["metrics"]["accuracy"] == report["test_accuracy"]
    own = json.loads((root / "artifacts" / "teacher" / "metrics.json").read_text())
    assert own["accuracy"] == report["test_accuracy"] and (root / "artifacts" / "teacher" / "best.pt").is_file()
    assert report["training"]["train_seconds"] > 0 and report["latency_ms"][meta["default_backend"]]["p50"] > 0
    # served like the shipped bundle (a tiny simple_cnn has no ImageNet head, so no pet score here)
    [answer] = Predictor.load(bundle).predict_bytes([(PROJECT_ROOT / "deploy" / "samples" / "cat.jpg").read_bytes()])
    assert answer.label in {"cat", "dog"} and abs(sum(answer.probabilities.values()) - 1.0) < 1e-4
    assert meta["params"]["model"]["tuned_blocks"] == report["tuned_blocks"]
