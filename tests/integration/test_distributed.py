"""`catsdogs train` under `torchrun --nproc-per-node 2` (CPU, gloo): DDP as a team would run it.

Two processes on this machine stand for two nodes: one MLflow run and one set of checkpoints
(rank 0 only), and validation gathered from both ranks counts every validation image once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from integration_params import write_params

from catsdogs.core.config import load_params
from catsdogs.training.checkpoint import Checkpoint
from support import free_port, use_mlflow_store

pytestmark = pytest.mark.slow


def test_torchrun_two_processes_train_one_model(kaggle_train_dir, tmp_path, monkeypatch):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    use_mlflow_store(monkeypatch, store)
    params_file = write_params(
        tmp_path,
        kaggle_train_dir,
        data={"limit": 120},
        model={"name": "simple_cnn", "image_size": 32, "pretrained": False},
        train={"recipe": "full", "epochs": 2, "batch_size": 16, "threads": 1, "bf16": "off", "device": "cpu"},
    )
    # A cold decode cache on purpose: rank 0 prepares and decodes while rank 1 waits.
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "catsdogs", "train", "--params", str(params_file), "--no-register"]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    params = load_params(params_file)
    out = params.path(params.train.output_dir)
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]  # one set, written by rank 0
    assert not list(out.glob("*.tmp"))
    stats = json.loads((params.path(params.data.prepared_dir) / "stats.json").read_text())
    n_val = sum(stats["counts"]["val"].values())
    n_train = sum(stats["counts"]["train"].values())
    history = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(row["val_n"] == n_val for row in history)  # both ranks' shards gathered: each image once

    experiment = mlflow.get_experiment_by_name("catsdogs")
    runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["world_size"] == "2" and int(run.data.params["n_train"]) == n_train
    assert len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_accuracy")) == 2
    summary = json.loads((out / "run.json").read_text())
    assert summary["world_size"] == 2 and summary["run_id"] == run.info.run_id
    ckpt = Checkpoint.load(out / "last.pt")
    assert ckpt.state.epoch == 2 and ckpt.state.run_id == run.info.run_id
    # the DDP wrapper is not saved: the weights load into a plain model
    assert not any(k.startswith("module.") for k in ckpt.model_state)
    ckpt.build_model()
