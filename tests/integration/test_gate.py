"""`catsdogs validate`, the release gate: each failure mode, and the registry it promotes in.

Every test gates a *copy* of the session's tiny bundle (tests/integration/conftest.py) against a
fresh MLflow store of its own, so what one test promotes or breaks no other test sees.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest
import yaml
from typer.testing import CliRunner

from catsdogs.cli import app
from catsdogs.release.registry import BUNDLE_TAG, FORMAT_TAG, PYFUNC_FORMAT, REGISTERED_MODEL
from support import use_mlflow_store

pytestmark = pytest.mark.slow


@pytest.fixture
def bundle(pipeline, tiny_project, tmp_path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_project.path(tiny_project.export.output_dir), copy)
    return copy


@pytest.fixture
def fresh_store(monkeypatch, tmp_path) -> str:
    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    use_mlflow_store(monkeypatch, uri)
    return uri


def _params_file(tiny_project, name: str, **gate) -> Path:
    """A params file beside the project's (its relative paths resolve the same), with gate overrides."""
    raw = yaml.safe_load((tiny_project.base_dir / "params.yaml").read_text())
    raw["gate"].update(gate)
    path = tiny_project.base_dir / f"gate-{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _validate(params: Path, bundle: Path, *extra: str):
    return CliRunner().invoke(app, ["validate", "--params", str(params), "--model-dir", str(bundle), *extra])


def _client() -> mlflow.MlflowClient:
    import os

    return mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])


def _versions() -> list:
    return _client().search_model_versions(f"name = '{REGISTERED_MODEL}'")


def _champion() -> str:
    return str(_client().get_model_version_by_alias(REGISTERED_MODEL, "champion").version)


def _digest(bundle: Path) -> str:
    return json.loads((bundle / "model.json").read_text())["sha256"]["bundle"]


def _failed(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("[FAIL]")]


def test_accuracy_below_the_floor_fails_with_the_reason(tiny_project, bundle, fresh_store):
    result = _validate(_params_file(tiny_project, "accuracy", min_accuracy=1.0), bundle)
    assert result.exit_code == 1, result.output
    assert [line.split(":")[0] for line in _failed(result)] == ["[FAIL] accuracy"]
    assert "vs threshold 1.0000" in result.output and "quality gate failed: test accuracy" in result.output
    assert _versions() == []  # a failing gate registers nothing


@pytest.mark.parametrize("corruption", ["perturbed", "garbage"])
def test_parity_failure_when_model_pt_does_not_match_the_graph(tiny_project, bundle, fresh_store, corruption):
    import torch

    if corruption == "perturbed":
        state = torch.load(bundle / "model.pt", weights_only=True)
        state = {k: v + 0.05 if v.is_floating_point() else v for k, v in state.items()}
        torch.save(state, bundle / "model.pt")
    else:
        (bundle / "model.pt").write_bytes(b"not a checkpoint")
    result = _validate(_params_file(tiny_project, "parity", min_accuracy=0.0), bundle)
    assert result.exit_code == 1, result.output
    assert [line.split(":")[0] for line in _failed(result)] == ["[FAIL] onnx_parity"]
    expected = "max |p_onnx - p_torch|" if corruption == "perturbed" else "model.pt is not this model's weights"
    assert expected in result.output
    assert "Traceback" not in result.output


def test_latency_over_budget_fails_with_the_reason(tiny_project, bundle, fresh_store):
    result = _validate(_params_file(tiny_project, "latency", min_accuracy=0.0, max_latency_ms=0.001), bundle)
    assert result.exit_code == 1, result.output
    assert [line.split(":")[0] for line in _failed(result)] == ["[FAIL] latency"]
    assert "vs budget 0.001 ms" in result.output


def _variant(bundle: Path, dest: Path) -> Path:
    """The same model as a different bundle (one ONNX metadata entry added): a different content hash."""
    import onnx

    from catsdogs.inference.bundle import bundle_digest

    shutil.copytree(bundle, dest)
    model = onnx.load(str(dest / "model.onnx"))
    model.metadata_props.add(key="variant", value="test")
    onnx.save(model, str(dest / "model.onnx"))
    meta = json.loads((dest / "model.json").read_text())
    meta["sha256"]["bundle"] = bundle_digest(dest, meta)
    (dest / "model.json").write_text(json.dumps(meta))
    return dest


def test_fresh_store_registers_the_bundle_and_reuses_it_and_failures_leave_champion(
    tiny_project, bundle, fresh_store, tmp_path, uploads_dir
):
    ok_params = _params_file(tiny_project, "pass", min_accuracy=0.0)
    first = _validate(ok_params, bundle)
    assert first.exit_code == 0, first.output
    versions = _versions()
    assert len(versions) == 1  # the fresh store lacked the bundle: registered
    champion = _champion()
    assert versions[0].tags[BUNDLE_TAG] == _digest(bundle) and str(versions[0].version) == champion
    assert versions[0].tags[FORMAT_TAG] == PYFUNC_FORMAT  # the pyfunc over image bytes (test_mlflow_pyfunc.py)
    assert f"alias champion -> version {champion}" in first.output
    meta = json.loads((bundle / "model.json").read_text())
    assert versions[0].tags["git_commit"] == meta["git_commit"] and versions[0].tags["data_hash"] == meta["data_hash"]

    again = _validate(ok_params, bundle)  # the same bundle: found by content hash, no new version
    assert again.exit_code == 0, again.output
    assert len(_versions()) == 1 and _champion() == champion

    other = _variant(bundle, tmp_path / "variant")
    failing = _validate(_params_file(tiny_project, "strict", min_accuracy=1.0), other)  # promotion not disabled
    assert failing.exit_code == 1
    assert _champion() == champion and len(_versions()) == 1  # champion untouched, nothing registered

    promoted = _validate(ok_params, other)
    assert promoted.exit_code == 0, promoted.output
    new = _champion()
    assert new != champion and len(_versions()) == 2
    tags = _client().get_model_version(REGISTERED_MODEL, new).tags
    assert tags[BUNDLE_TAG] == _digest(other)

    # what the registry serves is that bundle
    image = sorted(uploads_dir.glob("cat.*.jpg"))[0]
    predicted = CliRunner().invoke(
        app, ["predict", "--model", f"models:/{REGISTERED_MODEL}@champion", "--format", "json", str(image)]
    )
    assert predicted.exit_code == 0, predicted.output
    lines = predicted.stdout.splitlines()
    rows = json.loads("\n".join(lines[lines.index("[") :]))  # the JSON document, after any log lines
    assert [r["file"] for r in rows] == [str(image)] and rows[0]["prediction"] in ("cat", "dog")


def test_no_promote_leaves_the_registry_alone(tiny_project, bundle, fresh_store):
    result = _validate(_params_file(tiny_project, "nopromote", min_accuracy=0.0), bundle, "--no-promote")
    assert result.exit_code == 0, result.output
    assert "quality gate passed" in result.output and "alias champion" not in result.output
    assert _versions() == []


def test_missing_bundle_is_a_failed_check(tiny_project, tmp_path, fresh_store):
    result = _validate(tiny_project.base_dir / "params.yaml", tmp_path / "nothing")
    assert result.exit_code == 1
    assert "[FAIL] bundle" in result.output and "catsdogs export" in result.output
