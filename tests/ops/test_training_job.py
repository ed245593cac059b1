"""deploy/k8s/training/pytorchjob.yaml, the distributed training job, validated statically.

PyTorchJob is a custom resource (Kubeflow Training Operator), so its own fields are checked here;
the pod templates inside it are validated strictly against the Kubernetes schema as Pods, and the
container command is parsed by torchrun's and `catsdogs train`'s own argument parsers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from opshelpers import KUBERNETES_VERSION, run

from catsdogs.core.paths import PROJECT_ROOT

JOB = PROJECT_ROOT / "deploy" / "k8s" / "training" / "pytorchjob.yaml"
VENV_BIN = PROJECT_ROOT / ".venv" / "bin"


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(JOB.read_text()) if d]
    assert len(docs) == 1
    return docs[0]


def _replicas(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return job["spec"]["pytorchReplicaSpecs"]


def _container(spec: dict[str, Any]) -> dict[str, Any]:
    containers = spec["template"]["spec"]["containers"]
    # the operator finds the training container by this name (and injects MASTER_ADDR etc. into it)
    return next(c for c in containers if c["name"] == "pytorch")


def test_is_a_pytorchjob_with_master_and_workers(job):
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    assert job["metadata"]["name"]
    replicas = _replicas(job)
    assert set(replicas) == {"Master", "Worker"}
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] >= 1
    for spec in replicas.values():
        assert spec["restartPolicy"] in ("OnFailure", "Never", "ExitCode", "Always")
        assert _container(spec)["image"]
    assert job["spec"]["runPolicy"]["backoffLimit"] >= 0


def test_every_replica_runs_the_same_torchrun_command(job):
    from torch.distributed.run import get_args_parser

    replicas = _replicas(job)
    commands = {name: _container(spec)["command"] + _container(spec).get("args", []) for name, spec in replicas.items()}
    assert commands["Master"] == commands["Worker"]
    cmd = commands["Master"]
    assert cmd[0] == "torchrun"
    args = get_args_parser().parse_args(cmd[1:])  # torchrun's own parser: every flag is one it knows
    assert args.module and args.training_script == "catsdogs" and args.training_script_args[0] == "train"
    nodes = sum(spec["replicas"] for spec in replicas.values())
    assert args.nnodes == str(nodes)  # one torchrun agent per pod
    assert args.rdzv_backend == "c10d" and args.rdzv_endpoint == "$(MASTER_ADDR):$(MASTER_PORT)"
    env = {e["name"] for e in _container(replicas["Master"]).get("env", [])}
    assert "MLFLOW_TRACKING_URI" in env  # rank 0 logs to a shared tracking server, not a pod-local file


def test_catsdogs_train_accepts_the_job_arguments(job):
    from typer.testing import CliRunner

    from catsdogs.cli import app

    cmd = _container(_replicas(job)["Master"])["command"]
    train_args = cmd[cmd.index("train") :]
    help_text = CliRunner().invoke(app, ["train", "--help"]).output
    for flag in (a for a in train_args if a.startswith("--")):
        assert flag in help_text, flag


def test_pod_templates_validate_strictly_as_pods(job, tmp_path: Path):
    validate = VENV_BIN / "kubernetes-validate"
    assert validate.is_file(), f"{validate} missing: make init (kubernetes-validate is in the dev extra)"
    for name, spec in _replicas(job).items():
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"train-{name.lower()}",
               **spec["template"].get("metadata", {})}, "spec": spec["template"]["spec"]}  # fmt: skip
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(pod))
        proc = run([validate, "--strict", "-k", KUBERNETES_VERSION, "--quiet", path], check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pods_are_locked_down(job):
    for spec in _replicas(job).values():
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        container = _container(spec)
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["resources"]["limits"]["memory"]


def test_training_job_is_not_part_of_the_serving_kustomizations():
    for kustomization in (PROJECT_ROOT / "deploy").rglob("kustomization.yaml"):
        text = kustomization.read_text()
        assert "training" not in text and "pytorchjob" not in text.lower(), kustomization


def test_yamllint():
    run([VENV_BIN / "yamllint", "-s", "-c", PROJECT_ROOT / ".yamllint.yaml", JOB], cwd=PROJECT_ROOT)
