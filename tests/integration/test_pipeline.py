"""Real tiny runs: training tracked in MLflow and registered, resume, evaluation, export + parity, gate."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
from typer.testing import CliRunner

from catsdogs.cli import app
from catsdogs.config import load_params
from catsdogs.train import METRIC_NAMES

pytestmark = pytest.mark.slow


def test_training_run_is_fully_tracked(trained, tiny_project):
    client = mlflow.MlflowClient()
    run = client.get_run(trained.run_id)
    # the seven per-epoch metrics
    for name in METRIC_NAMES:
        history = client.get_metric_history(trained.run_id, name)
        assert len(history) == 1 and np.isfinite(history[0].value), name
    assert run.data.params["train.epochs"] == "1" and run.data.params["model.name"] == "simple_cnn"
    assert sum(int(run.data.params[f"n_{s}"]) for s in ("train", "val", "test")) == 200
    assert run.data.tags["git_commit"] and len(run.data.tags["data_hash"]) == 64
    artifacts = {a.path for a in client.list_artifacts(trained.run_id)}
    assert {"plots", "reports", "config", "data"} <= artifacts
    plots = {a.path for a in client.list_artifacts(trained.run_id, "plots")}
    assert {"plots/learning_curves.png", "plots/val_confusion_matrix.png"} <= plots
    reports = {a.path for a in client.list_artifacts(trained.run_id, "reports")}
    assert "reports/val_classification_report.txt" in reports
    assert "data/manifest_hash.txt" in {a.path for a in client.list_artifacts(trained.run_id, "data")}
    resolved = mlflow.artifacts.load_dict(f"runs:/{trained.run_id}/config/resolved_config.json")
    assert resolved["train"]["epochs"] == 1 and resolved["data"]["limit"] == 200
    out_dir = tiny_project.path(tiny_project.train.output_dir)
    assert json.loads((out_dir / "config.json").read_text()) == resolved


def test_model_is_registered_with_alias_challenger(trained):
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("catsdogs", "challenger")
    assert version.run_id == trained.run_id and str(version.version) == trained.registered_version
    model = mlflow.pytorch.load_model("models:/catsdogs@challenger")
    info = mlflow.models.get_model_info("models:/catsdogs@challenger")
    assert info.signature is not None and list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [
        -1,
        3,
        48,
        48,
    ]
    import torch

    assert model(torch.zeros(2, 3, 48, 48)).shape == (2, 2)


def test_evaluate_export_and_gate(trained, tiny_project):
    from catsdogs.evaluate import run_evaluation
    from catsdogs.export import run_export
    from catsdogs.validate import run_gate

    metrics = run_evaluation(tiny_project)
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert 0.0 <= metrics[key] <= 1.0
    cm = metrics["confusion_matrix"]["rows_true_cols_predicted"]
    assert sum(map(sum, cm)) == metrics["n_test"] > 0
    reports = tiny_project.path("reports")
    assert json.loads((reports / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]
    assert (reports / "plots" / "test_confusion_matrix.png").stat().st_size > 1000
    assert (reports / "plots" / "test_roc_curve.png").stat().st_size > 1000

    report = run_export(tiny_project)
    assert report["onnx"]["max_prob_diff_vs_torch"] < 1e-4
    bundle = tiny_project.path("models")
    meta = json.loads((bundle / "model.json").read_text())
    # trained at 48 px, evaluated, exported and served at inference.image_size = 56 px
    assert metrics["image_size"] == 56 and metrics["train_image_size"] == 48
    assert meta["architecture"] == "simple_cnn" and meta["preprocess"]["image_size"] == 56
    assert meta["metrics"]["accuracy"] == metrics["accuracy"]
    import onnx

    dims = onnx.load(str(bundle / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, 56, 56]
    card = (bundle / "MODEL_CARD.md").read_text()
    assert card.startswith("# Model card") and "Trained at 48x48, served at 56x56" in card
    int8 = report["int8"]
    assert (bundle / "model.int8.onnx").exists() == int8["kept"]
    assert int8["kept"] == (int8["accuracy_drop"] <= tiny_project.export.int8_max_accuracy_drop)
    # the bundle is attached to the run, where `models:/` URIs find it
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(trained.run_id, "bundle")}
    assert "bundle/model.onnx" in files and "bundle/model.json" in files

    passed = run_gate(tiny_project)
    assert passed.passed, passed.checks
    assert str(mlflow.MlflowClient().get_model_version_by_alias("catsdogs", "champion").version) == passed.promoted


def test_tune_inference_sweeps_the_validation_split(trained, tiny_project, tmp_path):
    from catsdogs.evaluate import sweep_inference

    params_file = tiny_project.base_dir / "params.yaml"
    out = tmp_path / "sweep.json"
    result = CliRunner().invoke(
        app, ["tune-inference", "--params", str(params_file), "--sizes", "48,64", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    sweep = json.loads(out.read_text())
    rows = {(r["image_size"], r["tta"]): r for r in sweep["rows"]}
    assert set(rows) == {(48, "none"), (48, "flip"), (64, "none"), (64, "flip")}
    assert rows[(48, "none")]["relative_cost"] == 1.0 and rows[(64, "flip")]["relative_cost"] == round(
        (64 / 48) ** 2 * 2, 2
    )
    stats = json.loads((tiny_project.path(tiny_project.data.prepared_dir) / "stats.json").read_text())
    n_val = sum(stats["counts"]["val"].values())
    assert all(r["n"] == n_val and 0.0 <= r["accuracy"] <= 1.0 for r in rows.values())
    assert sweep["best"] == max(sweep["rows"], key=lambda r: (r["accuracy"], -r["log_loss"]))
    with pytest.raises(ValueError, match="never on test"):
        sweep_inference(tiny_project, [48], ["none"], split="test")
    bad = CliRunner().invoke(app, ["tune-inference", "--params", str(params_file), "--sizes", "big"])
    assert bad.exit_code == 2 and "comma-separated integers" in bad.output
    tiny = CliRunner().invoke(app, ["tune-inference", "--params", str(params_file), "--sizes", "8,48"])
    assert tiny.exit_code == 2 and "between 32 and 1024" in tiny.output


def test_gate_fails_with_the_reason(trained, tiny_project, tmp_path):
    strict = tiny_project.model_copy(update={"gate": tiny_project.gate.model_copy(update={"min_accuracy": 0.999})})
    from catsdogs.validate import run_gate

    result = run_gate(strict, promote=False)
    assert not result.passed
    failed = [c for c in result.checks if not c.passed]
    assert [c.name for c in failed] == ["accuracy"] and "threshold 0.9990" in failed[0].detail
    missing = run_gate(tiny_project, model_dir=tmp_path)
    assert not missing.passed and "no model.json" in missing.checks[0].detail


def test_cli_validate_exit_code(trained, tiny_project, tmp_path):
    params_file = tiny_project.base_dir / "params.yaml"
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", "--params", str(params_file), "--no-promote"])
    assert ok.exit_code == 0, ok.output
    assert "[PASS] accuracy" in ok.output
    # a stricter copy of the params (its relative paths resolve next to it, so name the bundle explicitly)
    strict = tmp_path / "params.yaml"
    strict.write_text(params_file.read_text().replace("min_accuracy: 0.3", "min_accuracy: 0.999"))
    bundle = load_params(params_file).path("models")
    bad = runner.invoke(app, ["validate", "--params", str(strict), "--no-promote", "--model-dir", str(bundle)])
    assert bad.exit_code == 1
    assert "quality gate failed" in bad.output and "accuracy" in bad.output


def test_cli_help_for_every_command():
    runner = CliRunner()
    for cmd in (
        ["--help"],
        ["data", "--help"],
        ["data", "prepare", "--help"],
        ["data", "download", "--help"],
        ["train", "--help"],
        ["evaluate", "--help"],
        ["export", "--help"],
        ["tune-inference", "--help"],
        ["validate", "--help"],
    ):
        result = runner.invoke(app, cmd)
        assert result.exit_code == 0 and "Usage" in result.output, cmd


def test_validate_model_script_is_the_gate(trained, tiny_project):
    """scripts/validate_model.py (what CI calls) runs the same gate with the same exit codes."""
    import subprocess
    import sys

    from catsdogs.paths import PROJECT_ROOT

    params_file = tiny_project.base_dir / "params.yaml"
    script = PROJECT_ROOT / "scripts" / "validate_model.py"
    ok = subprocess.run(
        [sys.executable, str(script), "--params", str(params_file), "--no-promote"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "quality gate passed" in ok.stdout


def test_resume_continues_from_the_last_epoch(trained, tiny_project):
    """Last in the file: it rewrites the run's checkpoints, which the tests above read."""
    from catsdogs.train import run_training

    params = tiny_project.model_copy(update={"train": tiny_project.train.model_copy(update={"epochs": 2})})
    resumed = run_training(params, resume=True, register=False)
    assert resumed.run_id == trained.run_id
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert len(mlflow.MlflowClient().get_metric_history(trained.run_id, "val_accuracy")) == 2
