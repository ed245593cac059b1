"""params.yaml: typed, validated on load, CLI overrides."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from catsdogs.core.config import load_params
from catsdogs.core.paths import PARAMS_FILE, PROJECT_ROOT


def test_project_params_load_and_resolve_paths():
    p = load_params()
    assert p.base_dir == PARAMS_FILE.parent
    assert p.path(p.data.prepared_dir) == PROJECT_ROOT / "data" / "prepared"
    from catsdogs.models.architectures import MODELS

    assert p.model.name in MODELS
    assert 0 < p.gate.min_accuracy <= 1


def test_overrides_apply_and_none_keeps_value():
    p = load_params(overrides={"train.epochs": 3, "train.lr": None, "model.image_size": 96})
    assert p.train.epochs == 3 and p.model.image_size == 96
    assert p.train.lr == load_params().train.lr


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("train: {epochs: 0}", "epochs"),
        ("train: {bf16: maybe}", "bf16"),
        ("data: {val_fraction: 0.3, test_fraction: 0.3}", "below 0.5"),
        ("model: {unknown_key: 1}", "unknown_key"),
        ("inference: {image_size: 8}", "image_size"),
        ("inference: {tta: rotate}", "tta"),
    ],
)
def test_invalid_params_are_rejected_with_the_field_named(tmp_path, yaml_text, message):
    f = tmp_path / "params.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ValidationError, match=message):
        load_params(f)


@pytest.mark.parametrize(("yaml_value", "expected"), [("off", "off"), ("on", "on"), ("'off'", "off"), ("auto", "auto")])
def test_bf16_on_off_are_words_even_where_yaml_reads_booleans(tmp_path, yaml_value, expected):
    f = tmp_path / "params.yaml"
    f.write_text(f"train: {{bf16: {yaml_value}}}")
    assert load_params(f).train.bf16 == expected


def test_relative_paths_are_relative_to_the_params_file(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("data: {prepared_dir: out/prepared}")
    p = load_params(f)
    assert p.path(p.data.prepared_dir) == tmp_path / "out" / "prepared"


def test_data_source_comes_only_from_the_params_file(monkeypatch, tmp_path):
    """params.yaml is the one definition: the removed environment overrides change nothing (DVC could not see them)."""
    expected = load_params().data.source
    monkeypatch.setenv("CATSDOGS_DATA_SOURCE", str(tmp_path / "raw"))
    monkeypatch.setenv("CATSDOGS_SHARED_DATA", str(tmp_path / "shared"))
    p = load_params()
    assert p.data.source == expected
    assert p.path(p.data.source) != tmp_path / "raw"
    assert load_params(overrides={"data.source": "/elsewhere"}).data.source == "/elsewhere"


def test_unknown_model_name_fails_at_load(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("model: {name: vgg16}")
    with pytest.raises(ValidationError, match="unknown model 'vgg16'"):
        load_params(f)
    with pytest.raises(ValidationError, match="unknown model 'vgg16'"):
        load_params(overrides={"model.name": "vgg16"})
