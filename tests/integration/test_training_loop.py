"""The training loop on tiny real data (120 Kaggle images at 32 px, simple_cnn, CPU, 1-5 epochs).

Early stopping, best-checkpoint selection, seeded reproducibility, resume, CLI overrides and the
linear-probe recipe, each checked against what the run itself recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from integration_params import write_params
from typer.testing import CliRunner

from catsdogs.core.config import Params, load_params
from catsdogs.training.checkpoint import Checkpoint
from support import use_mlflow_store

pytestmark = pytest.mark.slow

# No dropout and no augmentation: the only randomness left is the seeded init and shuffle.
DETERMINISTIC = {
    "scale": [1.0, 1.0],
    "ratio": [1.0, 1.0],
    "hflip": 0.0,
    "brightness": 0.0,
    "contrast": 0.0,
    "saturation": 0.0,
}


@pytest.fixture(scope="module")
def loop_params(tmp_path_factory, kaggle_train_dir) -> Params:
    root = tmp_path_factory.mktemp("loop")
    path = write_params(
        root,
        kaggle_train_dir,
        data={"limit": 120},
        model={"name": "simple_cnn", "image_size": 32, "pretrained": False, "dropout": 0.0},
        train={
            "recipe": "full",
            "epochs": 2,
            "batch_size": 16,
            "lr": 0.003,
            "patience": 5,
            "bf16": "off",
            "device": "cpu",
            "early_stopping": "val_loss",
            "augment": DETERMINISTIC,
        },
    )
    return load_params(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _isolated_mlflow(monkeypatch, store):
    use_mlflow_store(monkeypatch, store)


def _with(params: Params, out: Path, **train) -> Params:
    return params.model_copy(
        update={"train": params.train.model_copy(update={"output_dir": str(out), **train})}, deep=True
    )


def _train(params: Params, **kwargs):
    from catsdogs.training.train import run_training

    return run_training(params, register=False, **kwargs)


@pytest.fixture(scope="module")
def reference(loop_params, tmp_path_factory, store):
    """An uninterrupted 2-epoch run: the baseline for the seed and resume tests."""
    with pytest.MonkeyPatch.context() as mp:
        use_mlflow_store(mp, store)
        out = tmp_path_factory.mktemp("reference")
        return _train(_with(loop_params, out)), out


def _state(path: Path) -> dict[str, torch.Tensor]:
    return Checkpoint.load(path).model_state


def _metrics(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in history]


def _expected_stop(history: list[dict], key: str, patience: int, epochs: int) -> int:
    """The epoch the loop must stop after, replaying the early-stopping rule on the recorded history."""
    best, stale = None, 0
    for row in history:
        value = row[key] if key == "val_loss" else -row[key]
        if best is None or value < best:
            best, stale = value, 0
        else:
            stale += 1
        if stale >= patience:
            return int(row["epoch"])
    return epochs


def _best_epoch(history: list[dict], key: str) -> int:
    values = [row[key] if key == "val_loss" else -row[key] for row in history]
    return int(history[int(np.argmin(values))]["epoch"])  # argmin: the first of equals, as `improved` keeps it


def test_early_stopping_stops_where_the_history_says(loop_params, tmp_path):
    # val accuracy on 12 images plateaus within a few epochs: patience 1 must cut the run short
    params = _with(loop_params, tmp_path, epochs=6, patience=1, early_stopping="val_accuracy")
    result = _train(params)
    history = result.history
    assert [row["epoch"] for row in history] == list(range(1, len(history) + 1))
    assert len(history) == _expected_stop(history, "val_accuracy", 1, 6) < 6
    assert result.best_epoch == _best_epoch(history, "val_accuracy")
    assert json.loads((tmp_path / "history.json").read_text()) == history
    assert Checkpoint.load(tmp_path / "last.pt").state.epoch == len(history)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["epochs_run"] == len(history) and run["best_epoch"] == result.best_epoch


def test_best_checkpoint_is_the_best_epoch_by_the_watched_metric(reference, loop_params):
    from catsdogs.core.transforms import create_transform
    from catsdogs.data.loaders import ArrayLoader, load_splits
    from catsdogs.data.prepare import ensure_prepared
    from catsdogs.training.loop import validate

    result, out = reference
    best = Checkpoint.load(out / "best.pt")
    assert best.state.best_epoch == result.best_epoch == _best_epoch(result.history, "val_loss")
    assert best.optimizer_state is None  # best.pt is for inference; last.pt carries the optimizer
    assert Checkpoint.load(out / "last.pt").optimizer_state is not None
    # best.pt's weights reproduce the validation metrics recorded for that epoch
    cfg = best.preprocess_config
    prepared = ensure_prepared(loop_params, fallback_dir=out / "prepared")
    val = load_splits(loop_params, prepared, cfg, progress=False)["val"]
    again = validate(
        best.build_model(), ArrayLoader(val, 64, shuffle=False), create_transform(cfg), torch.device("cpu"), bf16=False
    )
    row = result.history[best.state.best_epoch - 1]
    assert again["loss"] == pytest.approx(row["val_loss"], rel=1e-4)
    assert again["accuracy"] == row["val_accuracy"] and again["n"] == row["val_n"]


def test_same_seed_gives_the_same_weights_and_metrics(reference, loop_params, tmp_path):
    first, first_dir = reference
    second = _train(_with(loop_params, tmp_path))
    assert _metrics(second.history) == _metrics(first.history)
    a, b = _state(first_dir / "last.pt"), _state(tmp_path / "last.pt")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    other = _train(_with(loop_params, tmp_path / "seed7", seed=7, epochs=1))
    assert not torch.equal(_state(tmp_path / "seed7" / "last.pt")["classifier.3.weight"], a["classifier.3.weight"])
    assert other.history[0]["train_loss"] != first.history[0]["train_loss"]


def test_resume_after_one_epoch_equals_an_uninterrupted_run(reference, loop_params, tmp_path, monkeypatch):
    from catsdogs.training import train

    full, full_dir = reference
    params = _with(loop_params, tmp_path)
    real_epoch, calls = train.train_one_epoch, []

    def crash_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated crash after epoch 1")
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "train_one_epoch", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        _train(params)
    assert Checkpoint.load(tmp_path / "last.pt").state.epoch == 1
    monkeypatch.setattr(train, "train_one_epoch", real_epoch)

    resumed = _train(params, resume=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    for got, want in zip(_metrics(resumed.history), _metrics(full.history), strict=True):
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
    a, b = _state(full_dir / "last.pt"), _state(tmp_path / "last.pt")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)
    # the crashed run is continued, not duplicated
    client = mlflow.MlflowClient()
    assert len(client.get_metric_history(resumed.run_id, "val_loss")) == 2


def test_cli_flags_override_params_yaml(loop_params, tmp_path):
    from catsdogs.cli import app

    params_file = loop_params.base_dir / "params.yaml"
    assert load_params(params_file).train.epochs == 2 and load_params(params_file).model.image_size == 32
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--params",
            str(params_file),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--image-size",
            "40",
            "--lr",
            "0.002",
            "--dropout",
            "0.1",
            "--output-dir",
            str(out),
            "--no-register",
            "--bf16",
            "off",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    ckpt = Checkpoint.load(out / "best.pt")
    assert ckpt.params["train"]["epochs"] == 1 and len(ckpt.state.history) == 1
    assert ckpt.params["train"]["batch_size"] == 8 and ckpt.params["train"]["lr"] == 0.002
    assert ckpt.params["model"]["image_size"] == 40 and ckpt.preprocess["image_size"] == 40
    assert ckpt.dropout == 0.1 and ckpt.params["train"]["output_dir"] == str(out)
    assert ckpt.params["train"]["patience"] == loop_params.train.patience  # untouched values come from the file
    run = mlflow.MlflowClient().get_run(ckpt.state.run_id)
    assert run.data.params["train.epochs"] == "1" and run.data.params["model.image_size"] == "40"
    # the train split has 96 images: 12 steps of 8
    assert run.data.params["train.batch_size"] == "8"


def _probe_settings() -> tuple[dict, dict]:
    """(model, train) settings of a linear probe: ``linear_probe``, or ``cached_features`` with no tuned block."""
    from typing import get_args

    from catsdogs.core.config import ModelParams, TrainParams

    if "linear_probe" in get_args(TrainParams.model_fields["recipe"].annotation):
        return {}, {"recipe": "linear_probe"}
    assert "tuned_blocks" in ModelParams.model_fields, "no linear-probe setting found in config.py"
    return {"tuned_blocks": 0}, {"recipe": "cached_features"}


def test_linear_probe_trains_only_the_head(kaggle_train_dir, tmp_path):
    from catsdogs.models.architectures import create_model

    model_extra, train_extra = _probe_settings()
    params = load_params(
        write_params(
            tmp_path,
            kaggle_train_dir,
            data={"limit": 60},
            model={"name": "efficientnet_lite0", "image_size": 64, "pretrained": True, "dropout": 0.2, **model_extra},
            train={"epochs": 2, "batch_size": 16, "lr": 0.01, "bf16": "off", "device": "cpu", **train_extra},
        )
    )
    result = _train(params)
    trained = _state(tmp_path / "artifacts" / "train" / "last.pt")
    torch.manual_seed(params.train.seed)  # run_training seeds before it builds the model
    initial = create_model("efficientnet_lite0", dropout=0.2, pretrained=True).state_dict()
    assert trained.keys() == initial.keys()
    changed = {name for name in initial if not torch.equal(initial[name], trained[name])}
    assert changed == {"head.weight", "head.bias"}  # backbone, BN statistics and the ImageNet head are frozen
    assert len(result.history) == 2 and result.history[0]["val_n"] > 0
