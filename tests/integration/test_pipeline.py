"""Real tiny runs: training tracked in MLflow and registered, calibration, evaluation checked against
scikit-learn on the same predictions, export + parity, a real static INT8 export, the gate.

Every test reads the session's shared run (conftest ``trained``/``pipeline``) and never changes it,
so the tests pass in any order and alone.
"""

from __future__ import annotations

import dataclasses
import json

import mlflow
import numpy as np
import pytest
from typer.testing import CliRunner

from catsdogs.cli import app
from catsdogs.release.export import fastest_backend

pytestmark = pytest.mark.slow

EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_precision", "val_recall", "val_f1",
                 "val_n", "images_per_s", "seconds", "lr")  # fmt: skip


def test_training_run_is_fully_tracked(trained, tiny_project):
    client = mlflow.MlflowClient()
    run = client.get_run(trained.run_id)
    assert set(EPOCH_METRICS) == set(trained.history[0]) - {"epoch"}
    for name in EPOCH_METRICS:
        history = client.get_metric_history(trained.run_id, name)
        assert len(history) == 1 and history[0].value == pytest.approx(trained.history[0][name]), name
    assert run.data.params["train.epochs"] == "1" and run.data.params["model.name"] == "simple_cnn"
    assert run.data.params["world_size"] == "1"
    assert sum(int(run.data.params[f"n_{s}"]) for s in ("train", "val", "test")) == 200
    assert trained.history[0]["val_n"] == int(run.data.params["n_val"])
    out_dir = tiny_project.path(tiny_project.train.output_dir)
    summary = json.loads((out_dir / "run.json").read_text())
    assert run.data.tags["git_commit"] == summary["git_commit"] and run.data.tags["data_hash"] == summary["data_hash"]
    from catsdogs.data.prepare import file_sha256

    prepared = tiny_project.path(tiny_project.data.prepared_dir)
    assert summary["data_hash"] == file_sha256(prepared / "manifest.csv")
    artifacts = {a.path for a in client.list_artifacts(trained.run_id)}
    assert {"plots", "reports", "config"} <= artifacts
    plots = {a.path for a in client.list_artifacts(trained.run_id, "plots")}
    assert {"plots/learning_curves.png", "plots/val_confusion_matrix.png"} <= plots
    reports = {a.path for a in client.list_artifacts(trained.run_id, "reports")}
    assert {"reports/val_classification_report.txt", "reports/history.json"} <= reports
    resolved = mlflow.artifacts.load_dict(f"runs:/{trained.run_id}/config/resolved_config.json")
    assert resolved["train"]["epochs"] == 1 and resolved["data"]["limit"] == 200
    from catsdogs.training.checkpoint import Checkpoint

    assert Checkpoint.load(out_dir / "best.pt").params == resolved


def test_model_is_registered_with_alias_challenger(trained):
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("catsdogs", "challenger")
    assert version.run_id == trained.run_id and str(version.version) == trained.registered_version
    model = mlflow.pytorch.load_model("models:/catsdogs@challenger")
    info = mlflow.models.get_model_info("models:/catsdogs@challenger")
    shape = info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]
    assert list(shape) == [-1, 3, 48, 48]
    import torch

    assert model(torch.zeros(2, 3, 48, 48)).shape == (2, 2)


def _test_predictions(tiny_project, temperature: float):
    """Probabilities of best.pt on the test split at the inference size, computed here, not read from a report."""
    from catsdogs.data.loaders import load_split
    from catsdogs.data.prepare import ensure_prepared
    from catsdogs.release.scoring import load_for_inference, predict_split
    from catsdogs.training.metrics import softmax

    model, cfg, _, prepared = load_for_inference(tiny_project)
    test = load_split(tiny_project, ensure_prepared(tiny_project, prepared), cfg, "test")
    logits = predict_split(model, cfg, test, tiny_project.inference.tta).logits
    return softmax(logits, temperature), test.labels


def test_evaluation_metrics_match_scikit_learn_on_the_same_predictions(pipeline, tiny_project, trained):
    from sklearn import metrics as skm

    m = pipeline.metrics
    probs, labels = _test_predictions(tiny_project, pipeline.calibration.temperature)
    pred = probs.argmax(1)
    assert m["n_test"] == len(labels) > 0
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred), abs=1e-6)
    assert m["precision"] == pytest.approx(skm.precision_score(labels, pred, zero_division=0), abs=1e-6)
    assert m["recall"] == pytest.approx(skm.recall_score(labels, pred), abs=1e-6)
    assert m["f1"] == pytest.approx(skm.f1_score(labels, pred, zero_division=0), abs=1e-6)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, probs[:, 1]), abs=1e-6)
    assert m["log_loss"] == pytest.approx(skm.log_loss(labels, probs, labels=[0, 1]), abs=1e-5)
    cm = skm.confusion_matrix(labels, pred, labels=[0, 1]).tolist()
    assert m["confusion_matrix"]["rows_true_cols_predicted"] == cm
    # trained at 48 px, evaluated at inference.image_size = 56 px
    assert m["image_size"] == 56 and m["train_image_size"] == 48
    saved = json.loads(tiny_project.path("reports/metrics.json").read_text())
    assert saved["accuracy"] == m["accuracy"]
    for plot in ("test_confusion_matrix.png", "test_roc_curve.png"):
        assert (tiny_project.path("reports/plots") / plot).stat().st_size > 1000
    # the test_* metrics logged to the training run are the same numbers
    logged = mlflow.MlflowClient().get_run(trained.run_id).data.metrics
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert logged[f"test_{key}"] == pytest.approx(m[key]), key


def test_calibration_is_fitted_on_val(pipeline, tiny_project):
    from catsdogs.release.calibrate import Calibration

    cal = pipeline.calibration
    saved = Calibration.load(tiny_project.path(tiny_project.train.output_dir) / "calibration.json")
    assert dataclasses.replace(saved, directory="") == dataclasses.replace(cal, directory="")  # where it was read from
    assert cal.temperature > 0 and cal.image_size == 56
    assert cal.val["n"] == trained_val_n(tiny_project)
    assert cal.val["nll_after"] <= cal.val["nll_before"] + 1e-9  # the fitted temperature never makes NLL worse
    assert cal.pet_threshold is None  # simple_cnn has no pet score


def trained_val_n(params) -> int:
    stats = json.loads((params.path(params.data.prepared_dir) / "stats.json").read_text())
    return sum(stats["counts"]["val"].values())


def test_export_bundle_parity_and_lineage(pipeline, tiny_project, trained):
    import onnx

    report = pipeline.export
    assert report["onnx"]["max_prob_diff_vs_torch"] < 1e-4
    assert "int8" not in report  # export.quantize is false in params.yaml
    bundle = tiny_project.path("models")
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["architecture"] == "simple_cnn" and meta["preprocess"]["image_size"] == 56
    assert meta["metrics"]["accuracy"] == pipeline.metrics["accuracy"]
    assert "registered_version" not in meta  # a version number is only meaningful in its own registry
    summary = json.loads((tiny_project.path(tiny_project.train.output_dir) / "run.json").read_text())
    assert meta["git_commit"] == summary["git_commit"] and meta["data_hash"] == summary["data_hash"]
    assert meta["mlflow_run_id"] == trained.run_id
    assert meta["calibration"]["temperature"] == pipeline.calibration.temperature
    assert not (bundle / "model.int8.onnx").exists() and meta["files"]["onnx_int8"] is None
    dims = onnx.load(str(bundle / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, 56, 56]
    card = (bundle / "MODEL_CARD.md").read_text()
    assert card.startswith(f"# Model card: catsdogs {meta['version']}") and meta["git_commit"] in card
    from catsdogs.inference.bundle import bundle_digest

    assert meta["sha256"]["bundle"] == bundle_digest(bundle, meta)
    # the bundle is attached to the run, where `models:/` URIs find it
    client = mlflow.MlflowClient()
    files = {a.path for a in client.list_artifacts(trained.run_id, "bundle")}
    assert {"bundle/model.onnx", "bundle/model.json"} <= files
    assert client.get_run(trained.run_id).data.tags["bundle_sha256"] == meta["sha256"]["bundle"]


@pytest.fixture
def private_checkpoint(pipeline, tiny_project, tmp_path):
    """best.pt + calibration.json copied, detached from the MLflow run (exports of it log nothing to the shared run)."""
    import shutil

    from catsdogs.training.checkpoint import Checkpoint

    out = tiny_project.path(tiny_project.train.output_dir)
    ckpt = Checkpoint.load(out / "best.pt")
    ckpt.state.run_id = None
    ckpt.save(tmp_path / "best.pt", with_optimizer=False)
    shutil.copy(out / "calibration.json", tmp_path / "calibration.json")
    return tmp_path / "best.pt"


def _onnx_accuracy(path, x: np.ndarray, labels: np.ndarray) -> float:
    from catsdogs.release.export import ort_proba, ort_session

    return float((ort_proba(ort_session(path), x).argmax(1) == labels).mean())


def test_static_int8_export_is_compared_with_fp32_on_val(private_checkpoint, tiny_project, tmp_path):
    import onnx
    import torch

    from catsdogs.core.transforms import PreprocessConfig, create_transform
    from catsdogs.data.loaders import load_split
    from catsdogs.data.prepare import ensure_prepared
    from catsdogs.release.export import run_export

    def export(budget: float, name: str) -> tuple[dict, object]:
        params = tiny_project.model_copy(
            update={
                "export": tiny_project.export.model_copy(update={"quantize": True, "int8_max_accuracy_drop": budget})
            }
        )
        out = tmp_path / name
        return run_export(params, checkpoint=private_checkpoint, output_dir=out), out

    kept_report, kept_dir = export(1.0, "generous")  # any drop is within budget
    int8 = kept_report["int8"]
    assert int8["kept"] is True and (kept_dir / "model.int8.onnx").exists()
    graph = onnx.load(str(kept_dir / "model.int8.onnx")).graph
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)  # really quantised, not an fp32 copy
    assert any(i.data_type == onnx.TensorProto.INT8 for i in graph.initializer)
    # the drop is fp32 minus INT8 on val, recomputed here from both ONNX files on the serving preprocessing
    cfg = PreprocessConfig.from_dict(json.loads((kept_dir / "model.json").read_text())["preprocess"])
    val = load_split(tiny_project, ensure_prepared(tiny_project, tmp_path / "prepared"), cfg, "val")
    x = create_transform(cfg).batch(torch.from_numpy(np.array(val.pixels))).numpy()
    fp32_acc = _onnx_accuracy(kept_dir / "model.onnx", x, val.labels)
    int8_acc = _onnx_accuracy(kept_dir / "model.int8.onnx", x, val.labels)
    assert kept_report["onnx"]["val_accuracy"] == pytest.approx(fp32_acc)
    assert int8["val_accuracy"] == pytest.approx(int8_acc)
    assert int8["val_accuracy_drop"] == pytest.approx(fp32_acc - int8_acc)
    meta = json.loads((kept_dir / "model.json").read_text())
    assert meta["files"]["onnx_int8"] == "model.int8.onnx" and "onnx-int8" in meta["export"]["latency_ms"]

    discarded_report, discarded_dir = export(-1.0, "strict")  # no drop (not even 0) is within a negative budget
    assert discarded_report["int8"]["kept"] is False
    assert discarded_report["int8"]["val_accuracy_drop"] == pytest.approx(int8["val_accuracy_drop"])
    assert not (discarded_dir / "model.int8.onnx").exists()
    meta = json.loads((discarded_dir / "model.json").read_text())
    # a discarded INT8 file is never the default; which fp32 runtime is faster is a timing, not asserted
    assert meta["files"]["onnx_int8"] is None and meta["default_backend"] in {"onnx", "openvino", "openvino-bf16"}
    assert meta["default_backend"] == fastest_backend(discarded_report)


def test_tune_inference_sweeps_the_validation_split(pipeline, tiny_project, tmp_path):
    from catsdogs.release.evaluate import sweep_inference

    params_file = tiny_project.base_dir / "params.yaml"
    out = tmp_path / "sweep.json"
    result = CliRunner().invoke(
        app, ["tune-inference", "--params", str(params_file), "--sizes", "48,64", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    sweep = json.loads(out.read_text())
    rows = {(r["image_size"], r["tta"]): r for r in sweep["rows"]}
    assert set(rows) == {(48, "none"), (48, "flip"), (64, "none"), (64, "flip")}
    assert rows[(48, "none")]["relative_cost"] == 1.0
    assert rows[(64, "flip")]["relative_cost"] == round((64 / 48) ** 2 * 2, 2)
    assert all(r["n"] == trained_val_n(tiny_project) for r in rows.values())
    assert sweep["best"] == max(sweep["rows"], key=lambda r: (r["accuracy"], -r["log_loss"]))
    with pytest.raises(ValueError, match="never on test"):
        sweep_inference(tiny_project, [48], ["none"], split="test")
    bad = CliRunner().invoke(app, ["tune-inference", "--params", str(params_file), "--sizes", "big"])
    assert bad.exit_code == 2 and "comma-separated integers" in bad.output
    tiny = CliRunner().invoke(app, ["tune-inference", "--params", str(params_file), "--sizes", "8,48"])
    assert tiny.exit_code == 2 and "between 32 and 1024" in tiny.output


def test_cli_help_for_every_command():
    runner = CliRunner()
    for cmd in ("data", "data prepare", "data download", "train", "calibrate", "evaluate", "export", "robustness",
                "model-card", "tune-inference", "validate", "predict", "serve"):  # fmt: skip
        result = runner.invoke(app, [*cmd.split(), "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, cmd


def test_validate_model_script_is_the_gate(pipeline, tiny_project):
    """scripts/validate_model.py (what CI calls) runs the same gate with the same exit codes."""
    import subprocess
    import sys

    from catsdogs.core.paths import PROJECT_ROOT

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
