"""The monitoring stack against the real API: a real Prometheus runs the project's scrape config and
rule files (Kubernetes discovery replaced by file discovery carrying the same meta labels the
cluster would give, built from the rendered manifests), scrapes two real `catsdogs serve` processes
(one healthy, one whose model failed to load) and a real node exporter. After real traffic, every
query of the Grafana dashboard and every alert expression runs against it: metric names, labels
and label values that do not exist fail here. The smoke test script runs against the same API."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from opshelpers import (
    APT_TOOLS_HINT,
    K8S_OVERLAY_KIND,
    KUBE_STATE_METRICS,
    MONITORING,
    PROMETHEUS_CONFIG,
    SMOKE_TEST,
    Server,
    alert_rules,
    dashboard_queries,
    endpoints_meta,
    equality_selector,
    find,
    free_port,
    kustomize,
    load_dashboard,
    load_docs,
    local_prometheus_config,
    matcher_labels,
    pod_meta,
    require_binary,
    run,
    selectors,
    start_server,
    substitute,
    template_selectors,
)
from prometheus_client.parser import text_string_to_metric_families

from catsdogs.core.paths import MODELS_DIR, PROJECT_ROOT
from support import wait_until

pytestmark = pytest.mark.slow

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CATSDOGS = PROJECT_ROOT / ".venv" / "bin" / "catsdogs"


@dataclass
class Stack:
    api: Server
    broken_api: Server
    node_exporter: Server
    prometheus: Server
    sent: dict[str, int]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; a PromQL error (bad syntax, unknown function) fails with Prometheus' message."""
        r = httpx.post(f"{self.prometheus.url}/api/v1/query", data={"query": expr}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{expr!r}: {body.get('error', body)}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def api_get(self, path: str) -> Any:
        return httpx.get(f"{self.prometheus.url}{path}", timeout=10).json()["data"]


def clean_env() -> dict[str, str]:
    """The API's environment without settings leaking in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATSDOGS_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env["CATSDOGS_LOG_FORMAT"] = "text"
    return env


def metric_total(text: str, family: str) -> float:
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        if f.name == family
        for s in f.samples
        if s.name.endswith("_total")
    )


def send_traffic(api: Server, broken: Server, uploads_dir: Path) -> dict[str, int]:
    """Real requests: photos, a batch, bad uploads (4xx) and requests to the API without a model (5xx)."""
    photos = sorted(uploads_dir.glob("cat.*.jpg"))[:4] + sorted(uploads_dir.glob("dog.*.jpg"))[:4]
    sent = {"predictions": 0, "client_errors": 0, "server_errors": 0}
    with httpx.Client(base_url=api.url, timeout=30) as c:
        for p in photos:
            r = c.post("/predict", files={"file": (p.name, p.read_bytes(), "image/jpeg")})
            assert r.status_code == 200, r.text
            sent["predictions"] += 1
        batch = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[:2]]
        batch.append(("files", ("notes.jpg", b"not an image at all", "image/jpeg")))
        r = c.post("/predict/batch", files=batch)
        assert r.status_code == 200, r.text
        sent["predictions"] += 2
        truncated = photos[0].read_bytes()[:600]
        for name, data in (("text.jpg", b"hello"), ("empty.jpg", b""), ("cut.jpg", truncated)):
            r = c.post("/predict", files={"file": (name, data, "image/jpeg")})
            assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
            sent["client_errors"] += 1
        r = c.post("/predict", files={"image": ("a.jpg", photos[0].read_bytes(), "image/jpeg")})  # wrong field name
        assert r.status_code == 422, r.text
    with httpx.Client(base_url=broken.url, timeout=30) as c:
        for _ in range(3):
            assert (
                c.post("/predict", files={"file": ("a.jpg", photos[0].read_bytes(), "image/jpeg")}).status_code == 503
            )
            assert c.get("/ready").status_code == 503
            sent["server_errors"] += 2
    return sent


@pytest.fixture(scope="module")
def stack(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory, uploads_dir: Path) -> Iterator[Stack]:
    prometheus_bin = require_binary(pytestconfig, "prometheus", APT_TOOLS_HINT)
    node_exporter_bin = require_binary(pytestconfig, "prometheus-node-exporter", APT_TOOLS_HINT)
    if not (MODELS_DIR / "model.json").is_file():
        message = f"no model bundle in {MODELS_DIR}: run `make export`"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    api_docs = load_docs(kustomize(pytestconfig, K8S_OVERLAY_KIND))
    mon_docs = load_docs(kustomize(pytestconfig, MONITORING))
    work = tmp_path_factory.mktemp("monitoring-live")

    servers: list[Server] = []
    try:
        ports = {name: free_port() for name in ("api", "broken", "node", "prometheus", "ksm")}
        api = start_server(
            "api", [CATSDOGS, "serve", "--host", "127.0.0.1", "--port", ports["api"]], ports["api"], work, clean_env()
        )
        servers.append(api)
        # A bundle that fails to load (a missing one is refused by `catsdogs serve` before it starts).
        broken_model = work / "broken-bundle"
        broken_model.mkdir()
        (broken_model / "model.json").write_text("{}")
        broken = start_server(
            "broken-api",
            [CATSDOGS, "serve", "--host", "127.0.0.1", "--port", ports["broken"], "--model", broken_model],
            ports["broken"],
            work,
            clean_env(),
        )
        servers.append(broken)
        node = start_server(
            "node-exporter", [node_exporter_bin, f"--web.listen-address=127.0.0.1:{ports['node']}"], ports["node"], work
        )
        servers.append(node)

        # Discovery: what Kubernetes SD would give for the rendered objects, plus targets the relabelling must drop.
        dep = find(api_docs, "Deployment", "catsdogs-api")
        template = dep["spec"]["template"]
        http_port = template["spec"]["containers"][0]["ports"][0]
        manifest_port = template["metadata"]["annotations"]["prometheus.io/port"]

        def api_pod(pod: str, port: int, **overrides: Any) -> dict[str, Any]:
            t = json.loads(json.dumps(template))
            # The pod listens on the manifest's port in the cluster; here on a free port of 127.0.0.1.
            t["metadata"]["annotations"]["prometheus.io/port"] = str(port)
            t["metadata"]["labels"].update(overrides.pop("labels", {}))
            t["metadata"]["annotations"].update(overrides.pop("annotations", {}))
            return pod_meta(
                t,
                namespace="mlops",
                pod=pod,
                container_port=overrides.pop("container_port", http_port),
                address=f"127.0.0.1:{manifest_port}",
                **overrides,
            )

        pods = [
            api_pod("catsdogs-api-5d8f7-healthy", ports["api"]),
            api_pod("catsdogs-api-5d8f7-broken", ports["broken"]),
            # To be dropped: another port of the pod, another app, scraping disabled, a pod not running.
            api_pod(
                "catsdogs-api-5d8f7-healthy", ports["api"], container_port={"name": "debug", "containerPort": 5678}
            ),
            api_pod("other-app-1", ports["api"], labels={"app.kubernetes.io/name": "other-app"}),
            api_pod("catsdogs-api-noscrape", ports["api"], annotations={"prometheus.io/scrape": "false"}),
            api_pod("catsdogs-api-pending", ports["api"], phase="Pending"),
        ]
        endpoints = [
            endpoints_meta(
                find(mon_docs, "Service", "node-exporter"), port_name="metrics", address=f"127.0.0.1:{ports['node']}"
            ),
            # kube-state-metrics needs a cluster: nothing listens there, only its discovery is checked.
            endpoints_meta(
                find(mon_docs, "Service", "kube-state-metrics"),
                port_name="http-metrics",
                address=f"127.0.0.1:{ports['ksm']}",
            ),
            endpoints_meta(
                find(mon_docs, "Service", "kube-state-metrics"), port_name="telemetry", address="127.0.0.1:9"
            ),
            endpoints_meta(find(mon_docs, "Service", "grafana"), port_name="http", address="127.0.0.1:9"),
            endpoints_meta(
                find(mon_docs, "Service", "prometheus"), port_name="web", address=f"127.0.0.1:{ports['prometheus']}"
            ),
        ]
        sd_files = {
            ("pod", "mlops"): work / "pods-mlops.json",
            ("endpoints", "monitoring"): work / "endpoints-monitoring.json",
        }
        sd_files[("pod", "mlops")].write_text(json.dumps(pods))
        sd_files[("endpoints", "monitoring")].write_text(json.dumps(endpoints))
        cfg = local_prometheus_config(
            yaml.safe_load(PROMETHEUS_CONFIG.read_text()),
            sd_files=sd_files,
            self_address=f"127.0.0.1:{ports['prometheus']}",
        )
        (work / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        prometheus = start_server(
            "prometheus",
            [
                prometheus_bin,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                "--log.level=warn",
            ],
            ports["prometheus"],
            work,
        )
        servers.append(prometheus)

        api.wait_http("/ready", timeout=90)
        broken.wait_http("/health", status=503, timeout=90)
        node.wait_http("/metrics")
        prometheus.wait_http("/-/ready")
        stack = Stack(api, broken, node, prometheus, {})
        wait_until(lambda: len(stack.query('up{job="catsdogs-api"} == 1')) == 2, "both API targets up in Prometheus")
        wait_until(lambda: stack.query('up{job="node-exporter"} == 1'), "node-exporter up in Prometheus")

        stack.sent = send_traffic(api, broken, uploads_dir)
        served = metric_total(httpx.get(api.url + "/metrics").text, "predictions")
        assert served >= stack.sent["predictions"]

        def scraped() -> bool:
            got = stack.query('sum(predictions_total{job="catsdogs-api"})')
            return bool(got) and float(got[0]["value"][1]) >= served

        wait_until(scraped, f"Prometheus to scrape {served} predictions")
        time.sleep(2.5)  # a few more scrapes and rule evaluations after the traffic
        yield stack
    finally:
        for s in reversed(servers):
            s.stop()


def targets_by_job(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for t in stack.api_get("/api/v1/targets")["activeTargets"]:
        out.setdefault(t["labels"]["job"], []).append(t)
    return out


def test_discovery_and_relabelling_keep_exactly_the_intended_targets(stack: Stack) -> None:
    jobs = targets_by_job(stack)
    api = sorted(jobs["catsdogs-api"], key=lambda t: t["labels"]["pod"])
    assert [t["labels"]["instance"] for t in api] == [stack.broken_api.url[7:], stack.api.url[7:]]
    for t in api:
        assert t["labels"]["namespace"] == "mlops"
        assert t["labels"]["node"] == "kind-control-plane"
        assert t["scrapeUrl"].endswith("/metrics")
        assert t["health"] == "up", t
    assert [t["labels"]["pod"] for t in api] == ["catsdogs-api-5d8f7-broken", "catsdogs-api-5d8f7-healthy"]
    [node] = jobs["node-exporter"]
    assert node["labels"]["instance"] == "kind-control-plane"
    assert node["health"] == "up"
    [ksm] = jobs["kube-state-metrics"]
    assert ksm["discoveredLabels"]["__meta_kubernetes_endpoint_port_name"] == "http-metrics"
    assert set(jobs) == {"prometheus", "catsdogs-api", "node-exporter", "kube-state-metrics"}


def test_every_rule_is_loaded_and_evaluates_without_error(stack: Stack) -> None:
    groups = stack.api_get("/api/v1/rules")["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(loaded) == {r["alert"] for r in alert_rules()}
    for name, rule in loaded.items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))


def check_selectors(stack: Stack, where: str, expr: str) -> list[str]:
    """Problems with the series selectors of EXPR: a metric, label name or `=` label value with no series."""
    problems = []
    for sel in selectors(expr):
        if sel.name in KUBE_STATE_METRICS:
            continue  # needs a cluster; covered by the promtool unit tests
        series = stack.query(equality_selector(sel))
        if not series:
            problems.append(f"{where}: no series for {equality_selector(sel)} (from {sel})")
            continue
        have = {label for s in series for label in s["metric"]}
        if missing := matcher_labels(sel) - have:
            problems.append(f"{where}: {sel.name} has no label {sorted(missing)}")
    return problems


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    problems = []
    queries = dashboard_queries(load_dashboard())
    assert len(queries) >= 20
    for where, raw in queries:
        expr = substitute(raw)
        if not stack.query(expr):
            problems.append(f"{where}: no data for {expr}")
        problems += check_selectors(stack, where, expr)
    assert not problems, "\n".join(problems)


def test_dashboard_variables_list_the_node(stack: Stack) -> None:
    for name, selector, label in template_selectors(load_dashboard()):
        values = {s["metric"].get(label) for s in stack.query(selector)}
        assert values == {"kind-control-plane"}, (name, values)


def test_every_alert_expression_evaluates_over_real_series(stack: Stack) -> None:
    problems = []
    for rule in alert_rules():
        stack.query(rule["expr"])  # must be accepted by Prometheus
        problems += check_selectors(stack, rule["alert"], rule["expr"])
    assert not problems, "\n".join(problems)


def test_model_info_and_traffic_are_visible(stack: Stack) -> None:
    [info] = stack.query('model_info{job="catsdogs-api"} == 1')
    meta = json.loads((MODELS_DIR / "model.json").read_text())
    assert info["metric"]["version"] == meta["version"]
    errors = {s["metric"]["reason"] for s in stack.query('prediction_errors_total{job="catsdogs-api"}')}
    assert {"not_an_image", "empty"} <= errors
    five_xx = stack.query('sum(http_requests_total{job="catsdogs-api",status="503"})')
    assert float(five_xx[0]["value"][1]) >= stack.sent["server_errors"]


def test_smoke_test_passes_against_the_api(stack: Stack) -> None:
    proc = run(
        ["make", "--no-print-directory", "smoke-test", f"BASE_URL={stack.api.url}"], cwd=PROJECT_ROOT, timeout=120
    )
    assert "PASS" in proc.stdout
    assert "predictions_total" in proc.stdout


def test_smoke_test_fails_against_an_api_without_model(stack: Stack) -> None:
    env = {**os.environ, "SMOKE_READY_TIMEOUT": "2"}
    proc = run([SMOKE_TEST, stack.broken_api.url], check=False, env=env, timeout=60)
    assert proc.returncode != 0
    assert "GET /health" in proc.stderr
