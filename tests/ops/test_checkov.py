"""The policy scan: checkov (its own venv, .cache/checkov-venv, pinned by requirements/checkov.txt) on
every rendered kustomization of deploy/, the training PyTorchJob, the pods of the custom resources (as
Pods: checkov only knows built-in kinds) and the Dockerfile. Any finding that is not listed, with its
reason, in deploy/checkov-skips.yaml fails; so does a listed skip that matches no finding. The tests
named by each skip's `checked_by` check what its reason says."""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from crdhelpers import as_pods, is_custom
from opshelpers import (
    CRD_KUSTOMIZATIONS,
    DEPLOY,
    DOCKERFILE,
    KUSTOMIZATIONS,
    PACKAGE_VERSION,
    PROMETHEUS_CONFIG,
    TRAINING_JOB,
    kustomize,
    load_docs,
)

from catsdogs.core.paths import PROJECT_ROOT, REPORTS_DIR
from support import IN_CI

CHECKOV = PROJECT_ROOT / ".cache" / "checkov-venv" / "bin" / "checkov"
SKIPS_FILE = DEPLOY / "checkov-skips.yaml"
OPS_TESTS = Path(__file__).parent
WORKLOAD_KINDS = {"Deployment", "DaemonSet", "StatefulSet", "Job", "CronJob", "Pod"}
# Bound by metrics-server, defined by Kubernetes itself (read-only / token and access reviews).
BUILTIN_ROLES = {"system:auth-delegator", "extension-apiserver-authentication-reader"}
OUR_IMAGES = ("catsdogs-api", "catsdogs-ray", "catsdogs-train")


@dataclass
class Scan:
    """What one checkov run found: failed (check, resource) -> check name, and every resource it checked."""

    failed: dict[tuple[str, str], str] = field(default_factory=dict)
    checked: set[str] = field(default_factory=set)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)


def _checkov() -> Path:
    if not CHECKOV.is_file():
        message = f"{CHECKOV} is missing: make checkov-venv (make test-tools installs it)"
        if IN_CI:
            pytest.fail(f"CI must install every tool the tests need: {message}")
        pytest.skip(message)
    return CHECKOV


def _resource(result: dict[str, Any], dockerfile: Path) -> str:
    """checkov's resource id; a Dockerfile's is <its path>.<INSTRUCTION>: Dockerfile.<INSTRUCTION> here."""
    resource: str = result["resource"]
    prefix = f"{dockerfile}."
    return "Dockerfile." + resource.removeprefix(prefix) if resource.startswith(prefix) else resource


def run_checkov(manifests: list[Path], dockerfile: Path, cwd: Path) -> Scan:
    args = [str(_checkov()), "--framework", "kubernetes", "dockerfile", "--output", "json", "--skip-download"]
    for path in [*manifests, dockerfile]:
        args += ["--file", str(path)]
    # Offline and quiet: no guideline download, no update check, no API key (no upload).
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"}
    env.pop("BC_API_KEY", None)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180, cwd=cwd, env=env, check=False)
    assert proc.returncode in (0, 1), f"checkov exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    reports = json.loads(proc.stdout)
    scan = Scan()
    for report in reports if isinstance(reports, list) else [reports]:
        scan.summaries[report["check_type"]] = report["summary"]
        results = report["results"]
        for result in results["failed_checks"]:
            scan.failed[(result["check_id"], _resource(result, dockerfile))] = result["check_name"]
        for result in results["failed_checks"] + results["passed_checks"]:
            scan.checked.add(_resource(result, dockerfile))
    return scan


def scanned_docs(config: pytest.Config) -> dict[str, list[dict[str, Any]]]:
    """Every kustomization rendered, and the training job, with custom resources replaced by their Pods."""
    sources = {name: kustomize(config, path) for name, path in {**KUSTOMIZATIONS, **CRD_KUSTOMIZATIONS}.items()}
    sources["training"] = TRAINING_JOB.read_text()
    return {
        name: [pod for doc in load_docs(text) for pod in (as_pods(doc) if is_custom(doc) else [doc])]
        for name, text in sources.items()
    }


def write_manifests(docs: dict[str, list[dict[str, Any]]], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, objects in docs.items():
        path = directory / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def docs(pytestconfig: pytest.Config) -> dict[str, list[dict[str, Any]]]:
    return scanned_docs(pytestconfig)


@pytest.fixture(scope="module")
def objects(docs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [doc for group in docs.values() for doc in group]


@pytest.fixture(scope="module")
def scan(docs: dict[str, list[dict[str, Any]]], tmp_path_factory: pytest.TempPathFactory) -> Scan:
    root = tmp_path_factory.mktemp("checkov")
    return run_checkov(write_manifests(docs, root / "manifests"), DOCKERFILE, root)


@pytest.fixture(scope="module")
def skips() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = yaml.safe_load(SKIPS_FILE.read_text())["skips"]
    return entries


def skipped(skips: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(s["check"], r): s for s in skips for r in s["resources"]}


def by_id(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Objects by checkov's resource id, Kind.namespace.name."""
    return {f"{d['kind']}.{d['metadata'].get('namespace', 'default')}.{d['metadata']['name']}": d for d in objects}


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]
    return spec


# --- the scan and the skip file -------------------------------------------------------------------------------


def test_checkov_scans_every_workload_and_the_dockerfile(scan: Scan, objects: list[dict[str, Any]]) -> None:
    assert not any(is_custom(d) for d in objects)  # custom resources are scanned as their Pods
    workloads = {rid for rid, d in by_id(objects).items() if d["kind"] in WORKLOAD_KINDS}
    assert len(workloads) >= 13, sorted(workloads)
    assert workloads <= scan.checked, sorted(workloads - scan.checked)
    assert "Dockerfile.FROM" in scan.checked and "Dockerfile.USER" in scan.checked
    for check_type in ("kubernetes", "dockerfile"):
        summary = scan.summaries[check_type]
        assert summary["parsing_errors"] == 0, summary
        assert summary["skipped"] == 0, f"{check_type}: inline `checkov:skip` is not allowed: use {SKIPS_FILE.name}"
        assert summary["passed"] > 100, summary


def test_every_finding_is_fixed_or_a_reviewed_skip(scan: Scan, skips: list[dict[str, Any]]) -> None:
    unlisted = sorted(set(scan.failed) - set(skipped(skips)))
    listing = "\n".join(f"  {check} {resource}: {scan.failed[(check, resource)]}" for check, resource in unlisted)
    assert not unlisted, f"checkov findings not in {SKIPS_FILE.name} (fix them, or list them with a reason):\n{listing}"


def test_every_skip_matches_a_finding(scan: Scan, skips: list[dict[str, Any]]) -> None:
    """A skip whose finding is gone (fixed, renamed) is deleted, so the file lists only what is still true."""
    stale = sorted(set(skipped(skips)) - set(scan.failed))
    assert not stale, f"skips in {SKIPS_FILE.name} that match no finding: {stale}"


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_skip_is_reviewed_and_checked(skips: list[dict[str, Any]]) -> None:
    pairs = [(s["check"], r) for s in skips for r in s["resources"]]
    assert len(pairs) == len(set(pairs)), "a (check, resource) is listed twice"
    for s in skips:
        assert set(s) == {"check", "resources", "reason", "checked_by"}, s
        assert re.fullmatch(r"CKV2?_(K8S|DOCKER)_\d+", s["check"]), s["check"]
        assert s["resources"] and all(re.fullmatch(r"[A-Za-z]+\.[\w.-]+", r) for r in s["resources"]), s
        assert "*" not in "".join(s["resources"]), "no wildcards: every resource is reviewed by name"
        assert len(s["reason"].split()) >= 20, f"{s['check']}: a reason says why, in a sentence or more"
        for ref in s["checked_by"]:
            file, _, name = ref.partition("::")
            assert name in _test_functions(OPS_TESTS / file), f"{s['check']}: checked_by {ref} is not a test"


def test_checkov_catches_regressions(
    docs: dict[str, list[dict[str, Any]]], scan: Scan, tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    """The same scan on broken copies: an unpinned image, a writable root, a privileged Ray worker, an
    image running as root without a health check. Each is a new finding (none of them is skipped)."""
    broken = copy.deepcopy(docs)
    api = next(d for d in broken["api-kind"] if d["kind"] == "Deployment")
    container = api["spec"]["template"]["spec"]["containers"][0]
    container["image"] = "catsdogs-api:latest"
    container["securityContext"]["readOnlyRootFilesystem"] = False
    job = next(d for d in load_docs(kustomize(pytestconfig, CRD_KUSTOMIZATIONS["ray"])) if d["kind"] == "RayJob")
    worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    worker["securityContext"] = {**worker["securityContext"], "privileged": True}
    broken["ray"] = [d for d in broken["ray"] if d["kind"] != "Pod"] + as_pods(job)
    dockerfile = tmp_path / "Dockerfile"
    lines = DOCKERFILE.read_text().splitlines()
    dockerfile.write_text("\n".join(x for x in lines if not x.startswith(("USER ", "HEALTHCHECK ", "    CMD "))))
    found = run_checkov(write_manifests(broken, tmp_path / "manifests"), dockerfile, tmp_path)
    new = set(found.failed) - set(scan.failed)
    expected = {
        ("CKV_K8S_14", "Deployment.mlops.catsdogs-api"),  # Image Tag should be fixed - not latest or blank
        ("CKV_K8S_22", "Deployment.mlops.catsdogs-api"),  # read-only root filesystem
        ("CKV_K8S_16", "Pod.catsdogs-batch.catsdogs-score-worker-scorers"),  # privileged container
        ("CKV_DOCKER_3", "Dockerfile."),  # no USER: runs as root
        ("CKV_DOCKER_2", "Dockerfile."),  # no HEALTHCHECK
    }
    assert expected <= new, sorted(new)


# --- what the reasons of the skips say --------------------------------------------------------------------------


def _containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(resource id, container) of every container and init container of every workload."""
    return [
        (rid, c)
        for rid, d in by_id(objects).items()
        if d["kind"] in WORKLOAD_KINDS
        for c in pod_spec(d).get("initContainers", []) + pod_spec(d)["containers"]
    ]


def test_images_are_pinned_release_tags(objects: list[dict[str, Any]]) -> None:
    containers = _containers(objects)
    assert len(containers) >= 13
    for rid, c in containers:
        name, _, tag = c["image"].partition("@")[0].rpartition(":")
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{rid}: {c['image']} is not pinned to a release tag"
        if name in OUR_IMAGES:  # no registry in the name: loaded onto the nodes, tagged with our version
            assert tag == PACKAGE_VERSION, f"{rid}: {c['image']}"
        else:
            assert "/" in name, f"{rid}: {c['image']}"  # a publisher's image, not one of ours
        assert c.get("imagePullPolicy") == "IfNotPresent", rid


def _subjects(binding: dict[str, Any]) -> set[tuple[str, str]]:
    return {(s.get("namespace", binding["metadata"].get("namespace", "")), s["name"]) for s in binding["subjects"]}


def test_token_mounting_pods_use_the_kubernetes_api(objects: list[dict[str, Any]], skips: list[dict[str, Any]]) -> None:
    mounting = {r for s in skips if s["check"] == "CKV_K8S_38" for r in s["resources"]}
    assert mounting == {
        "Deployment.monitoring.prometheus",
        "Deployment.monitoring.kube-state-metrics",
        "Deployment.kube-system.metrics-server",
    }
    objs = by_id(objects)
    for rid, d in objs.items():
        if d["kind"] in WORKLOAD_KINDS and rid not in mounting:
            assert pod_spec(d).get("automountServiceAccountToken") is False, rid
    roles = {(d["kind"], d["metadata"]["name"]): d for d in objects if d["kind"] in ("Role", "ClusterRole")}
    bindings = [d for d in objects if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    for rid in mounting:
        namespace, account = objs[rid]["metadata"]["namespace"], pod_spec(objs[rid]).get("serviceAccountName")
        assert account and account != "default", rid
        bound = [b["roleRef"] for b in bindings if (namespace, account) in _subjects(b)]
        assert bound, f"{rid}: its ServiceAccount {account} is bound to no role"
        for ref in bound:
            role = roles.get((ref["kind"], ref["name"]))
            if role is None:
                assert ref["name"] in BUILTIN_ROLES, f"{rid}: {ref} is neither ours nor a known built-in role"
                continue
            verbs = {v for rule in role.get("rules", []) for v in rule["verbs"]}
            assert verbs <= {"get", "list", "watch"}, f"{rid}: {ref['name']} allows {verbs}"
    prometheus = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert any("kubernetes_sd_configs" in job for job in prometheus["scrape_configs"])


def test_node_exporter_is_unprivileged_on_the_host(objects: list[dict[str, Any]]) -> None:
    pod = pod_spec(by_id(objects)["DaemonSet.monitoring.node-exporter"])
    assert pod["hostNetwork"] is True and pod["hostPID"] is True and not pod.get("hostIPC")
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    (c,) = pod["containers"]
    assert [(p["containerPort"], p["hostPort"]) for p in c["ports"]] == [(9100, 9100)]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and not sc.get("privileged")
    host_volumes = {v["name"] for v in pod["volumes"] if "hostPath" in v}
    assert host_volumes and all(m["readOnly"] for m in c["volumeMounts"] if m["name"] in host_volumes)


def test_unprobed_pods_are_batch_pods(objects: list[dict[str, Any]], skips: list[dict[str, Any]]) -> None:
    objs = by_id(objects)
    for check in ("CKV_K8S_8", "CKV_K8S_9"):
        unprobed = {r for s in skips if s["check"] == check for r in s["resources"]}
        assert unprobed == {
            "Pod.catsdogs-batch.catsdogs-score-submitter",
            "Pod.catsdogs.catsdogs-train-master",
            "Pod.catsdogs.catsdogs-train-worker",
        }
        for rid in unprobed:
            (c,) = pod_spec(objs[rid])["containers"]
            assert not c.get("ports"), rid  # serves nothing of its own
    # The long-running pods of the same jobs do have both probes.
    for rid in ("Pod.catsdogs-batch.catsdogs-score-head", "Pod.catsdogs-batch.catsdogs-score-worker-scorers"):
        (c,) = pod_spec(objs[rid])["containers"]
        assert "livenessProbe" in c and "readinessProbe" in c, rid


def test_training_writes_outside_its_volumes(objects: list[dict[str, Any]]) -> None:
    reports = "/app/" + REPORTS_DIR.relative_to(PROJECT_ROOT).as_posix()
    for part in ("master", "worker"):
        (c,) = pod_spec(by_id(objects)[f"Pod.catsdogs.catsdogs-train-{part}"])["containers"]
        assert c["workingDir"] == "/app"
        mounts = [m["mountPath"] for m in c["volumeMounts"]]
        assert not any(reports == m or reports.startswith(m + "/") for m in mounts), (part, mounts)
    for rid, d in by_id(objects).items():
        if d["kind"] in WORKLOAD_KINDS and "catsdogs-train" not in rid:
            for c in pod_spec(d)["containers"]:
                assert c["securityContext"]["readOnlyRootFilesystem"] is True, (rid, c["name"])


def test_dockerfile_base_is_pinned() -> None:
    text = DOCKERFILE.read_text()
    (default,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", default), default
    stages: set[str] = set()
    for line in re.findall(r"^FROM (.+)$", text, re.M):
        image, _, stage = line.partition(" AS ")
        assert image == "${BASE_IMAGE}" or image in stages, line
        stages.add(stage.strip())
    make = subprocess.run(["make", "-s", "-n", "--no-print-directory", "docker-build"], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, check=True)  # fmt: skip
    assert f"--build-arg BASE_IMAGE={default}" in make.stdout
