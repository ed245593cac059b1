"""Monitoring configs, checked by the upstream tools (promtool, amtool) and against the metric contract:
alert rules and their unit tests, Prometheus and Alertmanager configs, the Grafana dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from opshelpers import (
    ALERTMANAGER_CONFIG,
    API_METRICS,
    APT_TOOLS_HINT,
    DASHBOARD,
    GRAFANA_DIR,
    KUBE_STATE_METRICS,
    PROMETHEUS_CONFIG,
    RULE_TESTS_DIR,
    RULES_DIR,
    alert_rules,
    dashboard_queries,
    iter_panels,
    load_dashboard,
    local_prometheus_config,
    require_binary,
    run,
    selectors,
    substitute,
    template_selectors,
)

# The panels the dashboard must have (titles are what people look for).
REQUIRED_PANELS = [
    "Total Predictions",
    "Total Errors",
    "Avg Latency",
    "Requests/sec",
    "Predictions by Class",
    "Latency Percentiles",
    "CPU Usage",
    "Memory Usage",
    "Disk Usage",
    "CPU by Core",
    "Memory Over Time",
    "Network I/O",
    "Disk I/O",
    "Model Version",
    "Prediction Confidence",
]
REQUIRED_ALERTS = {
    "CatsdogsApiDown",
    "CatsdogsHighErrorRatio",
    "CatsdogsHighLatencyP95",
    "CatsdogsHpaAtMaxReplicas",
    "CatsdogsLowConfidenceSurge",
}
NODE_METRIC = re.compile(r"node_[a-zA-Z0-9_]+")


@pytest.fixture(scope="module")
def promtool(pytestconfig: pytest.Config) -> str:
    return require_binary(pytestconfig, "promtool", APT_TOOLS_HINT)


def test_alert_rules_check(promtool: str) -> None:
    files = sorted(RULES_DIR.glob("*.yml"))
    assert files
    out = run([promtool, "check", "rules", *files]).stdout
    assert "SUCCESS" in out


def test_alert_rules_unit_tests(promtool: str) -> None:
    tests = sorted(RULE_TESTS_DIR.glob("*.yml"))
    assert tests
    run([promtool, "test", "rules", *tests], cwd=RULE_TESTS_DIR)


def test_every_alert_has_a_firing_unit_test() -> None:
    covered = set()
    for path in RULE_TESTS_DIR.glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    covered.add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names >= REQUIRED_ALERTS
    assert names == covered, f"alerts without a firing case in {RULE_TESTS_DIR}: {names - covered}"


def test_rule_unit_tests_fail_on_a_wrong_expectation(promtool: str, tmp_path: Path) -> None:
    """promtool does compare: a test expecting the wrong severity fails (else passing proves nothing)."""
    src = next(RULE_TESTS_DIR.glob("*.yml"))
    data = yaml.safe_load(src.read_text())
    data["rule_files"] = [str(RULES_DIR / Path(f).name) for f in data["rule_files"]]
    mutated = False
    for case in data["tests"]:
        for check in case.get("alert_rule_test", []):
            for alert in check.get("exp_alerts") or []:
                alert["exp_labels"]["severity"] = "nonsense"
                mutated = True
    assert mutated
    bad = tmp_path / "bad.test.yml"
    bad.write_text(yaml.safe_dump(data))
    proc = run([promtool, "test", "rules", bad], check=False)
    assert proc.returncode != 0


def test_prometheus_config_check(promtool: str, tmp_path: Path) -> None:
    """promtool on the cluster config with Kubernetes discovery swapped for file discovery.

    Debian's promtool/prometheus are built without Kubernetes discovery; everything else (relabel
    rules, rule files, globals) is checked as is. The Kubernetes blocks are checked in
    test_k8s_manifests.py, and `make monitoring-check` runs the upstream promtool on the file as is.
    """
    k8s = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    sd_files = {}
    for job in k8s["scrape_configs"]:
        for sd in job.get("kubernetes_sd_configs", []):
            for ns in sd["namespaces"]["names"]:
                path = tmp_path / f"{sd['role']}-{ns}.json"
                path.write_text("[]")
                sd_files[(sd["role"], ns)] = path
    cfg = local_prometheus_config(k8s, sd_files=sd_files, self_address="127.0.0.1:9090")
    assert [j["job_name"] for j in cfg["scrape_configs"]] == [j["job_name"] for j in k8s["scrape_configs"]]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    out = run([promtool, "check", "config", path]).stdout
    assert "SUCCESS" in out
    # And the alerting block that the local rendering drops, with the cluster's rule file glob.
    assert k8s["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager.monitoring.svc:9093"]
    assert k8s["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def test_alertmanager_config_check(pytestconfig: pytest.Config) -> None:
    amtool = require_binary(pytestconfig, "amtool", APT_TOOLS_HINT)
    out = run([amtool, "check-config", ALERTMANAGER_CONFIG]).stdout
    assert "SUCCESS" in out


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


def test_dashboard_has_every_panel_with_a_query(dashboard: dict[str, Any]) -> None:
    panels = list(iter_panels(dashboard))
    titles = [p["title"] for p in panels]
    missing = [t for t in REQUIRED_PANELS if t not in titles]
    assert not missing, f"panels missing from {DASHBOARD.name}: {missing}"
    assert len(set(titles)) == len(titles), "duplicate panel titles"
    for p in panels:
        exprs = [t.get("expr", "").strip() for t in p.get("targets", [])]
        assert exprs and all(exprs), f"panel {p['title']!r} has a target without a query"
    latency = next(p for p in panels if p["title"] == "Latency Percentiles")
    quantiles = {re.search(r"histogram_quantile\(([0-9.]+)", t["expr"]).group(1) for t in latency["targets"]}  # type: ignore[union-attr]
    assert {"0.50", "0.95", "0.99"} <= quantiles
    memory = next(p for p in panels if p["title"] == "Memory Over Time")
    assert {t["legendFormat"] for t in memory["targets"]} >= {"used", "cached", "buffers"}


def test_dashboard_layout_and_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "catsdogs-overview"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: dict[tuple[int, int], str] = {}
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]!r} and {p['title']!r} overlap"
                cells[(x, y)] = p["title"]


def test_dashboard_queries_parse_and_use_known_metrics(dashboard: dict[str, Any]) -> None:
    """Each query, once Grafana's variables are substituted, is valid PromQL over metrics that exist."""
    for where, expr in dashboard_queries(dashboard):
        sels = selectors(substitute(expr))
        assert sels, f"{where}: no metric in {expr!r}"
        for sel in sels:
            assert sel.name in API_METRICS | {"up"} or NODE_METRIC.fullmatch(sel.name), f"{where}: unknown {sel.name}"
            job = {m.name: m.value for m in sel.matchers.matchers}.get("job")
            assert job in ("catsdogs-api", "node-exporter"), f"{where}: {sel} has no job matcher"
    for name, selector, label in template_selectors(dashboard):
        assert selectors(selector), name
        assert label == "instance"


def test_alert_expressions_use_known_metrics() -> None:
    for rule in alert_rules():
        for sel in selectors(rule["expr"]):
            assert sel.name in API_METRICS | KUBE_STATE_METRICS | {"up"}, f"{rule['alert']}: unknown {sel.name}"


def test_dashboard_provisioning_points_at_the_dashboard_dir() -> None:
    providers = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards.yaml").read_text())["providers"]
    assert [p["type"] for p in providers] == ["file"]
    # The JSON is valid and the file provider will pick it up by its extension.
    assert DASHBOARD.suffix == ".json"
    json.loads(DASHBOARD.read_text())
