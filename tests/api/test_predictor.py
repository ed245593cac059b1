"""catsdogs.inference.predictor: bundle loading, backends, session options, CPU quota, batching, preprocessing."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from apihelpers import BLUE, IMAGE_SIZE, RED, RunSpy, encode, model_input_of, png_bomb, solid, write_tiny_bundle
from PIL import Image

from catsdogs.core import cpus as cpus_mod
from catsdogs.inference import predictor as predictor_mod
from catsdogs.inference.predictor import (
    ModelLoadError,
    Prediction,
    PredictionError,
    Predictor,
    available_cpus,
    cgroup_cpu_limit,
)


# --- CPU quota ------------------------------------------------------------------------------------------
def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5


def test_cgroup_v2_unlimited(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    v1 = tmp_path / "cpu,cpuacct"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 3.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_available_cpus_follows_quota_then_affinity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus_mod.os, "sched_getaffinity", lambda _pid: set(range(8)))
    assert available_cpus(tmp_path) == 8  # no cgroup files: the affinity mask
    (tmp_path / "cpu.max").write_text("250000 100000")
    assert available_cpus(tmp_path) == 2  # 2.5 CPUs: 2 threads run without being throttled
    (tmp_path / "cpu.max").write_text("50000 100000")
    assert available_cpus(tmp_path) == 1


# --- loading ----------------------------------------------------------------------------------------------
def test_session_options_threads_and_no_spinning(tiny_bundle: Path) -> None:
    p = Predictor.load(tiny_bundle, threads=3)
    so = p.session.get_session_options()
    assert p.threads == 3
    assert so.intra_op_num_threads == 3
    assert so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_threads_default_to_cpu_quota(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predictor_mod, "available_cpus", lambda: 5)
    p = Predictor.load(tiny_bundle)
    assert p.threads == 5
    assert p.session.get_session_options().intra_op_num_threads == 5


def test_backends(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "b", default_backend="onnx-int8")
    assert Predictor.load(bundle).backend == "onnx-int8"  # auto = the bundle's default
    assert Predictor.load(bundle, backend="onnx").backend == "onnx"
    (bundle / "model.int8.onnx").unlink()
    with pytest.raises(ModelLoadError, match=r"model\.int8\.onnx is missing"):
        Predictor.load(bundle, backend="onnx-int8")
    with pytest.raises(ModelLoadError, match="unknown backend"):
        Predictor.load(bundle, backend="tensorrt")


def test_auto_falls_back_to_fp32_without_int8_file(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "b", default_backend="onnx-int8", int8=False)
    assert Predictor.load(bundle).backend == "onnx"
    with pytest.raises(ModelLoadError, match="no such model file"):
        Predictor.load(bundle, backend="onnx-int8")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("missing_dir", "does not exist"),
        ("no_meta", r"model\.json is missing"),
        ("bad_json", "not a valid bundle description"),
        ("bad_onnx", "onnxruntime cannot load"),
    ],
)
def test_broken_bundles_raise_clear_errors(tmp_path: Path, tiny_bundle: Path, breakage: str, message: str) -> None:
    bundle = tmp_path / "bundle"
    if breakage != "missing_dir":
        shutil.copytree(tiny_bundle, bundle)
    if breakage == "no_meta":
        (bundle / "model.json").unlink()
    elif breakage == "bad_json":
        (bundle / "model.json").write_text(json.dumps({"files": {}}))
    elif breakage == "bad_onnx":
        (bundle / "model.onnx").write_bytes(b"not a protobuf")
        (bundle / "model.int8.onnx").unlink()
    with pytest.raises(ModelLoadError, match=message):
        Predictor.load(bundle, backend="onnx")


def test_registry_uri_without_mlflow_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError, as in the serving image
    with pytest.raises(ModelLoadError, match="mlflow is not installed"):
        Predictor.load("models:/catsdogs@champion")


@pytest.mark.slow
def test_registry_uri_resolves_alias_to_the_bundle(
    tmp_path: Path, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow  # the train extra; `make init` installs it for the tests

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)  # artifacts of the default location land in tmp
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment("api-test")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(tiny_bundle), artifact_path="bundle")
    client = mlflow.MlflowClient()
    client.create_registered_model("catsdogs")
    mv = client.create_model_version("catsdogs", source=f"runs:/{run.info.run_id}/bundle", run_id=run.info.run_id)
    client.set_registered_model_alias("catsdogs", "champion", mv.version)
    p = Predictor.load("models:/catsdogs@champion")
    assert p.version == "1.0.0-test"
    assert p.source == "models:/catsdogs@champion"
    with pytest.raises(ModelLoadError, match="cannot resolve"):
        Predictor.load("models:/catsdogs@nope")


# --- inference --------------------------------------------------------------------------------------------
def test_predict_bytes_one_run_for_the_valid_images_and_errors_in_place(tiny_bundle: Path) -> None:
    p = Predictor.load(tiny_bundle)
    spy = RunSpy(p.session)
    p.session = spy  # type: ignore[assignment]
    images = [encode(solid(RED), "JPEG"), b"", b"not an image", encode(solid(BLUE), "PNG"), png_bomb()]
    results = p.predict_bytes(images)
    assert len(spy.batches) == 1 and spy.batches[0].shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert [type(r) for r in results] == [Prediction, PredictionError, PredictionError, Prediction, PredictionError]
    red, empty, junk, blue, bomb = results
    assert isinstance(red, Prediction) and red.label == "cat" and red.confidence > 0.99
    assert isinstance(blue, Prediction) and blue.label == "dog" and blue.confidence > 0.99
    assert sum(red.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert red.confidence == red.probabilities["cat"]
    assert [e.reason for e in (empty, junk, bomb) if isinstance(e, PredictionError)] == [
        "empty",
        "not_an_image",
        "too_many_pixels",
    ]


def test_predict_bytes_all_invalid_runs_nothing(tiny_bundle: Path) -> None:
    p = Predictor.load(tiny_bundle)
    spy = RunSpy(p.session)
    p.session = spy  # type: ignore[assignment]
    assert [r.reason for r in p.predict_bytes([b"", b"xx"]) if isinstance(r, PredictionError)] == [
        "empty",
        "not_an_image",
    ]
    assert spy.batches == []


def test_warmup_marks_the_predictor_warm(tiny_bundle: Path) -> None:
    p = Predictor.load(tiny_bundle)
    assert not p.warmed
    p.warmup(batch_sizes=(1, 4))
    assert p.warmed


def test_exif_orientation_is_applied_exactly(tiny_bundle: Path, photo: Image.Image) -> None:
    """A PNG stored sideways with EXIF orientation 6 must reach the model as the upright picture."""
    p = Predictor.load(tiny_bundle)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    stored = encode(photo, "PNG", exif=exif.tobytes())
    upright = photo.transpose(Image.Transpose.ROTATE_270)
    got = p.preprocess(stored)
    np.testing.assert_array_equal(got, model_input_of(upright))
    assert not np.array_equal(got, model_input_of(photo.resize(upright.size)))


def test_exif_orientation_on_jpeg(tiny_bundle: Path, photo: Image.Image) -> None:
    p = Predictor.load(tiny_bundle)
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 CCW to display"
    stored = encode(photo, "JPEG", quality=95, exif=exif.tobytes())
    got = p.preprocess(stored)
    rotated = model_input_of(photo.transpose(Image.Transpose.ROTATE_90))
    unrotated = model_input_of(photo)
    # JPEG is lossy: the rotated reference must be far closer than the unrotated one.
    assert np.abs(got - rotated).mean() < 0.1 < np.abs(got - unrotated).mean()


def test_real_photo_is_classified_with_the_shipped_bundle(shipped_bundle: Path, uploads_dir: Path) -> None:
    p = Predictor.load(shipped_bundle)
    files = sorted(uploads_dir.glob("*.jpg"))
    results = p.predict_bytes([f.read_bytes() for f in files])
    assert all(isinstance(r, Prediction) for r in results)
    correct = sum(
        r.label == f.name.split(".")[0] for f, r in zip(files, results, strict=True) if isinstance(r, Prediction)
    )
    assert correct >= 0.8 * len(files)


def test_not_a_pet_and_not_sure_answers_are_counted() -> None:
    from catsdogs.serve.metrics import Metrics
    from catsdogs.serve.routes.predict import record_predictions

    metrics = Metrics()
    probs = {"cat": 0.9, "dog": 0.1}
    record_predictions(
        metrics,
        [
            Prediction("cat", 0.9, probs, 3.0, is_cat_or_dog=False, pet_score=0.1, reason="not a pet"),
            Prediction("cat", 0.6, probs, 3.0, is_cat_or_dog=True, pet_score=0.9, uncertain=True, reason="not sure"),
            Prediction("dog", 0.99, probs, 3.0, is_cat_or_dog=True, pet_score=0.9),
        ],
    )

    def value(name: str) -> float:
        return metrics.registry.get_sample_value(name) or 0.0

    assert value("catsdogs_not_cat_or_dog_total") == 1
    assert value("catsdogs_uncertain_predictions_total") == 1
    assert metrics.registry.get_sample_value("predictions_total", {"predicted_class": "cat"}) == 2
