"""catsdogs.inference.backends: OpenVINO beside ONNX Runtime, the same answers, choice and fallback."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from apihelpers import IMAGE_SIZE, write_tiny_bundle

from catsdogs.core.transforms import PreprocessConfig
from catsdogs.inference import predictor as predictor_mod
from catsdogs.inference.backends import native_bf16
from catsdogs.inference.predictor import ModelLoadError, Predictor
from catsdogs.release import export as export_mod
from catsdogs.release.calibrate import Calibration
from catsdogs.release.export import check_bf16, fastest_backend, served_answers


def _inputs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)


def test_openvino_gives_onnx_runtime_answers(tiny_bundle: Path) -> None:
    ort_p = Predictor.load(tiny_bundle, backend="onnx")
    ov_p = Predictor.load(tiny_bundle, backend="openvino", threads=1)
    assert ov_p.backend == "openvino" and ov_p.info()["backend"] == "openvino"
    x = _inputs(5)  # a batch: the ONNX file's batch dimension stays dynamic in OpenVINO
    p_ort, _ = ort_p.run(x)
    p_ov, _ = ov_p.run(x)
    assert p_ov.shape == (5, 2)
    np.testing.assert_allclose(p_ov, p_ort, atol=1e-5)
    assert not np.allclose(p_ov[0], p_ov[1])  # the inputs differ, so do the answers


def test_openvino_reports_the_model_io_like_onnx_runtime(tiny_bundle: Path) -> None:
    session = Predictor.load(tiny_bundle, backend="openvino").session
    (inp,) = session.get_inputs()
    assert inp.name == "input" and inp.type == "tensor(float)"
    assert inp.shape[1:] == [3, IMAGE_SIZE, IMAGE_SIZE] and isinstance(inp.shape[0], str)  # symbolic batch
    assert [o.name for o in session.get_outputs()] == ["logits"]


def test_openvino_is_safe_from_several_threads(tiny_bundle: Path) -> None:
    """The API runs the model from a thread pool: each thread must get its own input's answer."""
    ov_p = Predictor.load(tiny_bundle, backend="openvino", threads=2)
    ort_p = Predictor.load(tiny_bundle, backend="onnx")
    xs = [_inputs(1, seed) for seed in range(40)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda x: ov_p.run(x)[0], xs))
    for x, p in zip(xs, got, strict=True):
        np.testing.assert_allclose(p, ort_p.run(x)[0], atol=1e-5)


def test_openvino_threads_follow_the_setting(tiny_bundle: Path) -> None:
    p = Predictor.load(tiny_bundle, backend="openvino", threads=1)
    assert p.threads == 1
    assert int(p.session._compiled.get_property("INFERENCE_NUM_THREADS")) == 1


def test_auto_uses_the_bundles_openvino_default(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "b", default_backend="openvino")
    assert Predictor.load(bundle).backend == "openvino"


def test_auto_falls_back_to_onnx_runtime_without_openvino(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = write_tiny_bundle(tmp_path / "b", default_backend="openvino")
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    assert Predictor.load(bundle).backend == "onnx"
    with pytest.raises(ModelLoadError, match="needs the openvino package"):
        Predictor.load(bundle, backend="openvino")


def test_without_onnxruntime_the_fp32_file_runs_on_openvino(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The serving image ships only the runtime its bundle defaults to: any fp32 bundle still loads."""
    bundle = write_tiny_bundle(tmp_path / "b", default_backend="onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    p = Predictor.load(bundle)
    assert p.backend == "openvino"
    assert p.run(_inputs(2))[0].shape == (2, 2)
    with pytest.raises(ModelLoadError, match="need the onnxruntime package"):
        Predictor.load(bundle, backend="onnx")


def test_an_unknown_default_backend_is_a_clear_error(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "b")
    meta = json.loads((bundle / "model.json").read_text())
    (bundle / "model.json").write_text(json.dumps(meta | {"default_backend": "tensorrt"}))
    with pytest.raises(
        ModelLoadError, match="default_backend 'tensorrt' is not one of onnx, onnx-int8, openvino, openvino-bf16"
    ):
        Predictor.load(bundle)


def test_a_bad_bundle_fails_its_load_on_openvino_too(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "b")
    meta = json.loads((bundle / "model.json").read_text())
    meta["preprocess"]["class_names"] = ["cat", "dog", "rabbit"]
    (bundle / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="does not match"):
        Predictor.load(bundle, backend="openvino")


def test_a_corrupt_model_file_names_the_runtime(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "b")
    (bundle / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ModelLoadError, match="openvino cannot load"):
        Predictor.load(bundle, backend="openvino")


def _bf16_report(parity: bool, kept: bool) -> dict:
    lat = {"onnx": {"p50": 9.0}, "openvino": {"p50": 6.0}, "openvino-bf16": {"p50": 3.0}}
    return {"openvino": {"parity": parity}, "openvino-bf16": {"kept": kept}, "latency_ms": lat}


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        # OpenVINO fastest and with parity: chosen
        ({"openvino": {"parity": True}, "latency_ms": {"onnx": {"p50": 9.0}, "openvino": {"p50": 6.0}}}, "openvino"),
        # fastest but its answers differ: never chosen
        ({"openvino": {"parity": False}, "latency_ms": {"onnx": {"p50": 9.0}, "openvino": {"p50": 6.0}}}, "onnx"),
        # slower: not chosen
        ({"openvino": {"parity": True}, "latency_ms": {"onnx": {"p50": 5.0}, "openvino": {"p50": 6.0}}}, "onnx"),
        # INT8 fastest but discarded on val accuracy
        ({"int8": {"kept": False}, "latency_ms": {"onnx": {"p50": 9.0}, "onnx-int8": {"p50": 3.0}}}, "onnx"),
        ({"int8": {"kept": True}, "latency_ms": {"onnx": {"p50": 9.0}, "onnx-int8": {"p50": 3.0}}}, "onnx-int8"),
        # bf16 fastest and kept on val answers: chosen; discarded, or f32 OpenVINO itself off: never
        (_bf16_report(True, True), "openvino-bf16"),
        (_bf16_report(True, False), "openvino"),
        (_bf16_report(False, True), "onnx"),
    ],
)
def test_export_picks_the_fastest_backend_that_keeps_the_answers(report: dict, expected: str) -> None:
    assert fastest_backend(report) == expected


def test_available_backends_are_the_ones_documented() -> None:
    assert predictor_mod.BACKENDS == ("auto", "onnx", "onnx-int8", "openvino", "openvino-bf16")


def test_the_bf16_backend_computes_in_bf16_only_where_the_cpu_has_it(tiny_bundle: Path) -> None:
    """Native bf16 (AMX / AVX512-BF16) is used; elsewhere emulated bf16 would be slower, so it runs f32."""
    p = Predictor.load(tiny_bundle, backend="openvino-bf16", threads=1)
    expected = "bf16" if native_bf16() else "f32"
    assert p.backend == "openvino-bf16" and p.session.precision == expected
    assert p.session._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == expected
    f32 = Predictor.load(tiny_bundle, backend="openvino", threads=1)
    assert (
        f32.session._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    )  # never bf16 by itself
    x = _inputs(8)
    np.testing.assert_allclose(p.run(x)[0], f32.run(x)[0], atol=0.02)  # bf16 keeps ~3 significant digits


def _check_bf16(bundle: Path, max_changed: float, unsure_below: float) -> tuple[dict, np.ndarray]:
    meta = json.loads((bundle / "model.json").read_text())
    x = {"val": _inputs(64, 1), "test": _inputs(32, 2)}
    labels = {s: np.zeros(len(v), dtype=np.int64) for s, v in x.items()}
    report: dict = {"latency_ms": {}}
    cal = Calibration(unsure_below=unsure_below)
    check_bf16(
        bundle / "model.onnx", x, labels, PreprocessConfig.from_dict(meta["preprocess"]), cal, report, max_changed
    )
    return report, x["val"]


def test_export_keeps_bf16_only_if_val_answers_hold(tiny_bundle: Path) -> None:
    if not native_bf16():
        report, _ = _check_bf16(tiny_bundle, 1.0, 0.0)
        assert (
            "openvino-bf16" not in report and fastest_backend(report | {"latency_ms": {"onnx": {"p50": 1}}}) == "onnx"
        )
        return
    # an "unsure" threshold in the middle of the answers' confidences: some sit close enough to move under bf16
    report, x_val = _check_bf16(tiny_bundle, 1.0, 0.8)
    bf16 = report["openvino-bf16"]
    assert bf16["kept"] is True and report["latency_ms"]["openvino-bf16"]["p50"] > 0
    meta = json.loads((tiny_bundle / "model.json").read_text())
    meta["thresholds"] = {"pet_score": None, "unsure_below": 0.8}
    answers = {}
    for backend in ("openvino", "openvino-bf16"):
        p = Predictor.load(tiny_bundle, backend=backend, threads=1)
        p.unsure_below = 0.8
        answers[backend] = served_answers(p, x_val)
    flips = answers["openvino"] != answers["openvino-bf16"]
    changed = float(flips[:, :2].any(axis=1).mean())  # label or not-a-pet; "not sure" flips are reported apart
    assert bf16["val_changed_answers"] == pytest.approx(changed)
    assert bf16["val_changed_unsure"] == pytest.approx(float(flips[:, 2].mean()))
    assert bf16["val_accuracy"] == pytest.approx(float((answers["openvino-bf16"][:, 0] == 0).mean()))
    strict, _ = _check_bf16(tiny_bundle, 0.0, 0.8)
    assert strict["openvino-bf16"]["kept"] is (changed == 0.0)


def test_export_skips_bf16_without_native_support(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_mod, "native_bf16", lambda: False)
    report, _ = _check_bf16(tiny_bundle, 1.0, 0.0)
    assert report == {"latency_ms": {}}
