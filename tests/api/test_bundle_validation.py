"""Bad bundles: refused at load (never ready) and at reload (400, the old model keeps serving); 500s close."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from apihelpers import RED, encode, solid, write_tiny_bundle
from fastapi.testclient import TestClient

from catsdogs.inference.bundle import onnx_opset
from catsdogs.inference.predictor import ModelLoadError, Predictor

ClientFactory = Callable[..., TestClient]
AUTH = {"Authorization": "Bearer s3cret"}


def _edit_meta(bundle: Path, **preprocess: Any) -> Path:
    meta = json.loads((bundle / "model.json").read_text())
    meta["preprocess"].update(preprocess)
    (bundle / "model.json").write_text(json.dumps(meta))
    return bundle


def _old_opset_bundle(path: Path) -> Path:
    import onnx

    bundle = write_tiny_bundle(path, int8=False)
    model = onnx.load(bundle / "model.onnx")
    model.opset_import[0].version = 11  # every op of the tiny graph exists in opset 11
    onnx.save(model, bundle / "model.onnx")
    return bundle


BAD_BUNDLES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "three class names, two outputs": (
        lambda p: _edit_meta(write_tiny_bundle(p), class_names=["cat", "dog", "fox"]),
        "class_names",
    ),
    "image size differs from the model input": (
        lambda p: _edit_meta(write_tiny_bundle(p), image_size=64),
        "image_size",
    ),
    "zero std": (lambda p: _edit_meta(write_tiny_bundle(p), std=[0.2, 0.0, 0.2]), "std"),
    "two means": (lambda p: _edit_meta(write_tiny_bundle(p), mean=[0.5, 0.5]), "mean"),
    "unknown interpolation": (lambda p: _edit_meta(write_tiny_bundle(p), interpolation="lanczos9"), "interpolation"),
    "duplicate class names": (lambda p: _edit_meta(write_tiny_bundle(p), class_names=["cat", "cat"]), "class_names"),
    "opset below the minimum": (_old_opset_bundle, "opset"),
    "image_size not a number": (lambda p: _edit_meta(write_tiny_bundle(p), image_size="big"), "image_size"),
}


@pytest.fixture(params=sorted(BAD_BUNDLES), ids=lambda name: name.replace(" ", "-"))
def bad_bundle(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    build, problem = BAD_BUNDLES[request.param]
    return build(tmp_path / "bundle"), problem


def test_predictor_load_names_the_problem(bad_bundle: tuple[Path, str]) -> None:
    bundle, problem = bad_bundle
    with pytest.raises(ModelLoadError, match=problem):
        Predictor.load(bundle)


def test_bad_bundle_at_start_never_reports_ready(make_client: ClientFactory, bad_bundle: tuple[Path, str]) -> None:
    bundle, problem = bad_bundle
    client = make_client(wait=False, model_path=str(bundle))
    for _ in range(400):  # the load runs in the background; it ends in "failed", never in "ready"
        r = client.get("/ready")
        assert r.status_code == 503
        if "failed" in r.json()["reason"]:
            break
        import time

        time.sleep(0.05)
    body = r.json()
    assert problem in body["reason"]
    assert str(bundle) not in body["reason"] and "/tmp" not in body["reason"]  # no internal paths
    assert client.get("/health").status_code == 503  # an orchestrator restarts the pod
    assert client.post("/predict", files={"file": ("a.png", encode(solid(RED), "PNG"))}).status_code == 503


def test_reload_to_a_bad_bundle_is_400_and_the_old_model_keeps_serving(
    make_client: ClientFactory, bad_bundle: tuple[Path, str]
) -> None:
    bundle, problem = bad_bundle
    client = make_client(admin_token="s3cret")
    before = client.get("/ready").json()["model_version"]
    r = client.post("/admin/reload", json={"model_path": str(bundle)}, headers=AUTH)
    assert r.status_code == 400, r.text
    assert problem in r.text
    assert client.get("/ready").json()["model_version"] == before
    r = client.post("/predict", files={"file": ("a.png", encode(solid(RED), "PNG"))})
    assert r.status_code == 200 and r.json()["prediction"] == "cat"


def test_opset_is_read_from_the_onnx_file(tiny_bundle: Path, tmp_path: Path) -> None:
    assert onnx_opset(tiny_bundle / "model.onnx") == 18
    assert onnx_opset(_old_opset_bundle(tmp_path / "old") / "model.onnx") == 11
    (tmp_path / "junk.onnx").write_bytes(b"\xff\xfe not protobuf")
    assert onnx_opset(tmp_path / "junk.onnx") is None


def test_reload_checks_the_token_before_reading_the_body(make_client: ClientFactory) -> None:
    client = make_client(admin_token="s3cret")
    r = client.post("/admin/reload", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    r = client.post("/admin/reload", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422
    r = client.post("/admin/reload", content=b"model_path=x", headers={**AUTH, "Content-Type": "text/plain"})
    assert r.status_code == 415


def test_model_info_shows_no_internal_path(client: TestClient, tiny_bundle: Path) -> None:
    text = client.get("/model").text
    assert str(tiny_bundle) not in text and str(tiny_bundle.parent) not in text


def test_a_500_closes_the_connection_and_is_logged_once(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    predictor = client.app.state.service.predictor  # type: ignore[attr-defined]

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom in the model")

    monkeypatch.setattr(predictor, "predict_array", explode)  # every path's model run (batched or not)
    client_no_raise = TestClient(client.app, raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR):
        r = client_no_raise.post("/predict", files={"file": ("a.png", encode(solid(RED), "PNG"))})
    assert r.status_code == 500
    assert r.headers["connection"] == "close"
    assert "boom" not in r.text  # no internals in the body
    logged = [rec for rec in caplog.records if rec.exc_info and "boom in the model" in str(rec.exc_info[1])]
    assert len(logged) == 1
