"""Kubernetes manifests: every kustomization renders, passes strict schema validation for the
target Kubernetes version, and carries the settings the deployment relies on (probes, security,
scaling, ports that match the kind config, metrics discovery, secrets kept out of the manifests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from opshelpers import (
    ALERTMANAGER_CONFIG,
    DASHBOARD,
    GRAFANA_DIR,
    KIND_CONFIG,
    KUBERNETES_VERSION,
    KUSTOMIZATIONS,
    PACKAGE_VERSION,
    PROMETHEUS_CONFIG,
    RULES_DIR,
    find,
    kustomize,
    load_docs,
    run,
)

from catsdogs.core.paths import PROJECT_ROOT
from catsdogs.serve.settings import Settings

VALIDATE = PROJECT_ROOT / ".venv" / "bin" / "kubernetes-validate"


@pytest.fixture(scope="module")
def rendered(pytestconfig: pytest.Config) -> dict[str, list[dict[str, Any]]]:
    return {name: load_docs(kustomize(pytestconfig, path)) for name, path in KUSTOMIZATIONS.items()}


@pytest.fixture(scope="module")
def api(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered["api-kind"]


@pytest.fixture(scope="module")
def mon(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered["monitoring"]


def kubernetes_validate(path: Path) -> Any:
    assert VALIDATE.is_file(), f"{VALIDATE} missing: make init (kubernetes-validate is in the dev extra)"
    return run([VALIDATE, "--strict", "-k", KUBERNETES_VERSION, "--quiet", path], check=False)


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_kustomization_validates_strictly(name: str, pytestconfig: pytest.Config, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.yaml"
    out.write_text(kustomize(pytestconfig, KUSTOMIZATIONS[name]))
    proc = kubernetes_validate(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert load_docs(out.read_text()), f"{name} renders no object"


def test_strict_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    """The validator used above does catch a misspelt field (else the test above proves nothing)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "x"},
                "spec": {"ports": [{"port": 80, "targetPortt": 80}]},
            }
        )
    )
    proc = kubernetes_validate(bad)
    assert proc.returncode != 0
    assert "targetPortt" in proc.stdout + proc.stderr


def container(deployment: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def test_api_deployment(api: list[dict[str, Any]]) -> None:
    dep = find(api, "Deployment", "catsdogs-api")
    spec = dep["spec"]
    assert dep["metadata"]["namespace"] == "mlops"
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    c = container(dep, "api")
    assert c["image"] == f"catsdogs-api:{PACKAGE_VERSION}"  # pinned: what `make docker-build` tags, never latest
    assert c["imagePullPolicy"] == "IfNotPresent"
    port = next(p for p in c["ports"] if p["name"] == "http")
    assert port["containerPort"] == 8000

    probes = {kind: c[kind]["httpGet"]["path"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes == {"startupProbe": "/health", "livenessProbe": "/health", "readinessProbe": "/ready"}
    # The startup probe gives the model time to load before liveness may kill the pod.
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60

    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}, kind

    threads = next(e for e in c["env"] if e["name"] == "CATSDOGS_INFERENCE_THREADS")
    assert threads["valueFrom"]["resourceFieldRef"] == {
        "containerName": "api",
        "resource": "limits.cpu",
        "divisor": "1",
    }


def test_api_pod_security(api: list[dict[str, Any]]) -> None:
    dep = find(api, "Deployment", "catsdogs-api")
    pod = dep["spec"]["template"]["spec"]
    c = container(dep, "api")
    sc = c["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # A read-only root needs a writable /tmp (uploads, Prometheus multiprocess files).
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume
    ns = find(api, "Namespace", "mlops")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_api_settings_configmap_matches_the_settings_class(api: list[dict[str, Any]]) -> None:
    """Every CATSDOGS_* key is a real setting, and the app accepts the values (a typo would be ignored silently)."""
    dep = find(api, "Deployment", "catsdogs-api")
    c = container(dep, "api")
    ref = c["envFrom"][0]["configMapRef"]["name"]
    cm = find(api, "ConfigMap", ref)
    data = cm["data"]
    assert data, "empty settings ConfigMap"
    fields = {f"CATSDOGS_{name.upper()}" for name in Settings.model_fields}
    unknown = set(data) - fields
    assert not unknown, f"keys that are not settings of catsdogs.serve.settings.Settings: {unknown}"
    settings = Settings(**{k.removeprefix("CATSDOGS_").lower(): v for k, v in data.items()})
    assert settings.port == 8000
    assert settings.workers == 1


def test_api_service_hpa_pdb(api: list[dict[str, Any]]) -> None:
    dep = find(api, "Deployment", "catsdogs-api")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    svc = find(api, "Service", "catsdogs-api")
    assert svc["spec"]["type"] == "NodePort"
    port = svc["spec"]["ports"][0]
    assert (port["port"], port["targetPort"], port["nodePort"]) == (8000, "http", 30080)
    assert svc["spec"]["selector"].items() <= pod_labels.items()

    hpa = find(api, "HorizontalPodAutoscaler", "catsdogs-api")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "catsdogs-api"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 5)
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]

    pdb = find(api, "PodDisruptionBudget", "catsdogs-api")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_standard_labels_and_scrape_annotations(api: list[dict[str, Any]]) -> None:
    for obj in api:
        labels = obj["metadata"].get("labels", {})
        assert {"app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by"} <= set(labels), (
            obj["kind"],
            labels,
        )
    dep = find(api, "Deployment", "catsdogs-api")
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(container(dep, "api")["ports"][0]["containerPort"])


def test_kind_config_publishes_every_node_port(api: list[dict[str, Any]], mon: list[dict[str, Any]]) -> None:
    kind = yaml.safe_load(KIND_CONFIG.read_text())
    mappings = {m["containerPort"]: m["hostPort"] for node in kind["nodes"] for m in node.get("extraPortMappings", [])}
    expected = {
        ("mlops", "catsdogs-api"): 8000,
        ("monitoring", "prometheus"): 9090,
        ("monitoring", "grafana"): 3000,
    }
    for (namespace, name), host_port in expected.items():
        svc = find(api if namespace == "mlops" else mon, "Service", name)
        assert svc["metadata"]["namespace"] == namespace
        node_port = svc["spec"]["ports"][0]["nodePort"]
        assert mappings.get(node_port) == host_port, f"{name}: nodePort {node_port} is not published on {host_port}"


def test_grafana_admin_password_comes_from_a_secret(mon: list[dict[str, Any]]) -> None:
    """Grafana reads GF_<SETTING>__FILE from a file: the credentials stay in the mounted Secret, out of the env."""
    deployment = find(mon, "Deployment", "grafana")
    grafana = container(deployment)
    env = {e["name"]: e for e in grafana["env"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in grafana["volumeMounts"]}
    for var, key in (("GF_SECURITY_ADMIN_USER", "admin-user"), ("GF_SECURITY_ADMIN_PASSWORD", "admin-password")):
        assert var not in env
        directory, _, file = env[f"{var}__FILE"]["value"].rpartition("/")
        assert file == key
        mount = mounts[directory]
        assert mount["readOnly"] is True
        assert volumes[mount["name"]]["secret"]["secretName"] == "grafana-admin"
    # No Secret with data, and no literal password anywhere in what gets applied.
    assert not [d for d in mon if d["kind"] == "Secret"]
    for d in mon:
        if d["kind"] in ("Deployment", "DaemonSet"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                for e in c.get("env", []):
                    literal = "value" in e and not e["name"].endswith("__FILE")  # a __FILE value is a path
                    assert "PASSWORD" not in e["name"] or not literal, (d["metadata"]["name"], e)


def configmap_files(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    data: dict[str, str] = find(docs, "ConfigMap", name)["data"]
    return data


def test_monitoring_configmaps_hold_the_committed_files(mon: list[dict[str, Any]]) -> None:
    """What Prometheus, Alertmanager and Grafana load is exactly the files the tests check."""
    assert configmap_files(mon, "prometheus-config") == {"prometheus.yml": PROMETHEUS_CONFIG.read_text()}
    assert configmap_files(mon, "prometheus-rules") == {p.name: p.read_text() for p in RULES_DIR.glob("*.yml")}
    assert configmap_files(mon, "alertmanager-config") == {"alertmanager.yml": ALERTMANAGER_CONFIG.read_text()}
    assert configmap_files(mon, "grafana-dashboards") == {DASHBOARD.name: DASHBOARD.read_text()}
    datasources = yaml.safe_load(configmap_files(mon, "grafana-datasources")["datasources.yaml"])
    ds = datasources["datasources"][0]
    assert ds["type"] == "prometheus"
    assert ds["url"] == "http://prometheus.monitoring.svc:9090"
    uids = {t["datasource"]["uid"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])}
    assert uids == {ds["uid"]}
    providers = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards.yaml").read_text())
    grafana = find(mon, "Deployment", "grafana")
    mounts = {m["mountPath"]: m["name"] for m in container(grafana)["volumeMounts"]}
    volumes = {v["name"]: v for v in grafana["spec"]["template"]["spec"]["volumes"]}
    dash_volume = volumes[mounts[providers["providers"][0]["options"]["path"]]]
    assert dash_volume["configMap"]["name"] == find(mon, "ConfigMap", "grafana-dashboards")["metadata"]["name"]


def test_every_mounted_configmap_exists(mon: list[dict[str, Any]]) -> None:
    names = {d["metadata"]["name"] for d in mon if d["kind"] == "ConfigMap"}
    for d in mon:
        if d["kind"] in ("Deployment", "DaemonSet"):
            for v in d["spec"]["template"]["spec"].get("volumes", []):
                if "configMap" in v:
                    assert v["configMap"]["name"] in names, (d["metadata"]["name"], v)


def test_prometheus_rbac_and_exporters(mon: list[dict[str, Any]]) -> None:
    prom = find(mon, "Deployment", "prometheus")
    sa = prom["spec"]["template"]["spec"]["serviceAccountName"]
    find(mon, "ServiceAccount", sa)
    binding = find(mon, "ClusterRoleBinding", "catsdogs-prometheus")
    assert {"kind": "ServiceAccount", "name": sa, "namespace": "monitoring"} in binding["subjects"]
    role = find(mon, "ClusterRole", binding["roleRef"]["name"])
    core = next(r for r in role["rules"] if r.get("apiGroups") == [""])
    assert {"pods", "endpoints", "services"} <= set(core["resources"])
    assert {"list", "watch"} <= set(core["verbs"])

    ds = find(mon, "DaemonSet", "node-exporter")
    assert ds["spec"]["template"]["spec"]["hostNetwork"] is True
    ksm = container(find(mon, "Deployment", "kube-state-metrics"))
    resources = next(a for a in ksm["args"] if a.startswith("--resources=")).split("=", 1)[1].split(",")
    assert "horizontalpodautoscalers" in resources
    ksm_role = find(mon, "ClusterRole", "catsdogs-kube-state-metrics")
    assert any("horizontalpodautoscalers" in r["resources"] for r in ksm_role["rules"])


def scrape_job(name: str) -> dict[str, Any]:
    cfg = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    job: dict[str, Any] = next(j for j in cfg["scrape_configs"] if j["job_name"] == name)
    return job


# Fields of Prometheus' kubernetes_sd_config (Debian's promtool is built without Kubernetes discovery,
# so these blocks are checked here; the rest of the file by promtool in test_monitoring_config.py).
KUBERNETES_SD_FIELDS = {"api_server", "role", "kubeconfig_file", "namespaces", "selectors", "attach_metadata"}
KUBERNETES_SD_ROLES = {"node", "service", "pod", "endpoints", "endpointslice", "ingress"}


@pytest.mark.parametrize(
    ("job", "role", "namespace"),
    [
        ("catsdogs-api", "pod", "mlops"),
        ("node-exporter", "endpoints", "monitoring"),
        ("kube-state-metrics", "endpoints", "monitoring"),
    ],
)
def test_scrape_jobs_discover_the_deployed_namespaces(
    job: str, role: str, namespace: str, api: list[dict[str, Any]], mon: list[dict[str, Any]]
) -> None:
    sds = scrape_job(job)["kubernetes_sd_configs"]
    for sd in sds:
        assert set(sd) <= KUBERNETES_SD_FIELDS, sd
        assert sd["role"] in KUBERNETES_SD_ROLES
        assert set(sd["namespaces"]) <= {"names", "own_namespace"}
    assert [(sd["role"], sd["namespaces"]["names"]) for sd in sds] == [(role, [namespace])]
    namespaces = {d["metadata"]["name"] for d in api + mon if d["kind"] == "Namespace"}
    assert namespace in namespaces


def test_api_shutdown_fits_in_the_grace_period(api: list[dict[str, Any]]) -> None:
    """preStop sleep + drain delay + in-flight timeout end before the kubelet's SIGKILL."""
    dep = find(api, "Deployment", "catsdogs-api")
    c = container(dep, "api")
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0].startswith("/opt/venv/bin/python")  # the image has no shell or sleep binary to rely on
    pre_stop = float(command[-1].rsplit("sleep(", 1)[1].rstrip(")"))
    cm = find(api, "ConfigMap", c["envFrom"][0]["configMapRef"]["name"])
    settings = Settings(**{k.removeprefix("CATSDOGS_").lower(): v for k, v in cm["data"].items()})
    needed = pre_stop + settings.drain_delay_s + settings.shutdown_timeout_s
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert pre_stop > 0 and needed + 3 <= grace, (pre_stop, settings.drain_delay_s, settings.shutdown_timeout_s, grace)
