"""NetworkPolicies: every namespace of ours denies all traffic by default, and exactly the connections
the system needs get through (clients to the API and the UIs, Prometheus' scrapes and discovery,
Grafana's queries, a Ray cluster's own traffic), evaluated on the rendered manifests with the
semantics of networking.k8s.io/v1 (tests/ops/netpolhelpers.py)."""

from __future__ import annotations

from typing import Any

import pytest
from crdhelpers import as_pod_template_objects, is_custom
from netpolhelpers import OUTSIDE, Peer, connection_allowed, pod_peer
from opshelpers import CRD_KUSTOMIZATIONS, KUSTOMIZATIONS, find, kustomize, load_docs

OUR_NAMESPACES = {"mlops", "monitoring", "catsdogs-batch"}


@pytest.fixture(scope="module")
def docs(pytestconfig: pytest.Config) -> list[dict[str, Any]]:
    """Every rendered object, the pods of custom resources as PodTemplates."""
    out: list[dict[str, Any]] = []
    for path in [*KUSTOMIZATIONS.values(), *CRD_KUSTOMIZATIONS.values()]:
        for doc in load_docs(kustomize(pytestconfig, path)):
            out.extend(as_pod_template_objects(doc) if is_custom(doc) else [doc])
    return out


@pytest.fixture(scope="module")
def policies(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "NetworkPolicy"]


@pytest.fixture(scope="module")
def peers(docs: list[dict[str, Any]]) -> dict[str, Peer]:
    def pods(kind: str, name: str) -> Peer:
        return pod_peer(find(docs, kind, name))

    return {
        "outside": OUTSIDE,  # a client behind a NodePort, a node, the API server, the internet
        "dns": Peer("kube-system", {"k8s-app": "kube-dns"}),
        "kuberay-operator": Peer("ray-system", {"app.kubernetes.io/name": "kuberay-operator"}),
        "api": pods("Deployment", "catsdogs-api"),
        "kserve": pods("PodTemplate", "catsdogs-predictor"),
        "prometheus": pods("Deployment", "prometheus"),
        "grafana": pods("Deployment", "grafana"),
        "alertmanager": pods("Deployment", "alertmanager"),
        "kube-state-metrics": pods("Deployment", "kube-state-metrics"),
        "node-exporter": pods("DaemonSet", "node-exporter"),
        "metrics-server": pods("Deployment", "metrics-server"),
        "ray-head": pods("PodTemplate", "catsdogs-score-head"),
        "ray-worker": pods("PodTemplate", "catsdogs-score-worker-scorers"),
        "ray-submitter": pods("PodTemplate", "catsdogs-score-submitter"),
    }


def test_every_namespace_of_ours_denies_by_default(docs: list[dict[str, Any]], policies: list[dict[str, Any]]) -> None:
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    assert namespaces == OUR_NAMESPACES
    for ns in namespaces:
        deny = [
            p
            for p in policies
            if p["metadata"]["namespace"] == ns
            and p["spec"]["podSelector"] == {}
            and sorted(p["spec"]["policyTypes"]) == ["Egress", "Ingress"]
            and not p["spec"].get("ingress")
            and not p["spec"].get("egress")
        ]
        assert len(deny) == 1, f"namespace {ns}: no default-deny NetworkPolicy"


def test_node_exporter_is_outside_the_pod_network(peers: dict[str, Peer]) -> None:
    """hostNetwork: policies do not apply to it, Prometheus reaches it on a node address (an ipBlock rule)."""
    assert peers["node-exporter"] == OUTSIDE


NEEDED = [
    ("outside", "api", 8000, "TCP"),  # clients through the Service / NodePort
    ("outside", "kserve", 8000, "TCP"),
    ("prometheus", "api", 8000, "TCP"),  # the catsdogs-api scrape job
    ("prometheus", "kserve", 8000, "TCP"),
    ("prometheus", "kube-state-metrics", 8080, "TCP"),
    ("prometheus", "alertmanager", 9093, "TCP"),
    ("prometheus", "node-exporter", 9100, "TCP"),
    ("prometheus", "outside", 443, "TCP"),  # the Kubernetes API (service discovery)
    ("prometheus", "outside", 6443, "TCP"),
    ("prometheus", "dns", 53, "UDP"),
    ("outside", "prometheus", 9090, "TCP"),  # the UI (NodePort 30090)
    ("grafana", "prometheus", 9090, "TCP"),  # its datasource
    ("grafana", "dns", 53, "UDP"),
    ("outside", "grafana", 3000, "TCP"),  # the UI (NodePort 30030)
    ("kube-state-metrics", "outside", 443, "TCP"),
    ("outside", "metrics-server", 10250, "TCP"),  # the API server's aggregated metrics API
    ("metrics-server", "outside", 10250, "TCP"),  # kubelets
    ("ray-worker", "ray-head", 6379, "TCP"),  # GCS
    ("ray-head", "ray-worker", 40000, "TCP"),  # Ray's many worker ports
    ("ray-worker", "ray-worker", 40000, "TCP"),
    ("ray-submitter", "ray-head", 8265, "TCP"),  # ray job submit
    ("ray-submitter", "dns", 53, "UDP"),
    ("kuberay-operator", "ray-head", 8265, "TCP"),  # job status
]

DENIED = [
    ("api", "outside", 443, "TCP"),  # the API needs no outgoing connection
    ("api", "prometheus", 9090, "TCP"),
    ("api", "dns", 53, "UDP"),
    ("outside", "api", 9000, "TCP"),  # only the HTTP port
    ("prometheus", "api", 22, "TCP"),
    ("outside", "alertmanager", 9093, "TCP"),  # Prometheus only
    ("grafana", "alertmanager", 9093, "TCP"),
    ("outside", "kube-state-metrics", 8080, "TCP"),
    ("alertmanager", "outside", 443, "TCP"),  # no receiver sends anything
    ("grafana", "outside", 443, "TCP"),
    ("grafana", "api", 8000, "TCP"),
    ("outside", "ray-head", 8265, "TCP"),  # the dashboard: the job's pods and the operator only
    ("api", "ray-head", 8265, "TCP"),
    ("ray-worker", "outside", 443, "TCP"),
    ("ray-head", "api", 8000, "TCP"),
]


@pytest.mark.parametrize(("src", "dst", "port", "protocol"), NEEDED, ids=[f"{s}->{d}:{p}" for s, d, p, _ in NEEDED])
def test_needed_connection_is_allowed(
    src: str, dst: str, port: int, protocol: str, policies: list[dict[str, Any]], peers: dict[str, Peer]
) -> None:
    assert connection_allowed(policies, peers[src], peers[dst], port, protocol)


@pytest.mark.parametrize(("src", "dst", "port", "protocol"), DENIED, ids=[f"{s}->{d}:{p}" for s, d, p, _ in DENIED])
def test_other_connection_is_denied(
    src: str, dst: str, port: int, protocol: str, policies: list[dict[str, Any]], peers: dict[str, Peer]
) -> None:
    assert not connection_allowed(policies, peers[src], peers[dst], port, protocol)


def test_scrape_ports_are_the_annotated_ones(docs: list[dict[str, Any]]) -> None:
    """The allowed scrape port is the one Prometheus uses: the pods' prometheus.io/port annotation."""
    for kind, name in (("Deployment", "catsdogs-api"), ("PodTemplate", "catsdogs-predictor")):
        obj = find(docs, kind, name)
        template = obj["template"] if kind == "PodTemplate" else obj["spec"]["template"]
        port = int(template["metadata"]["annotations"]["prometheus.io/port"])
        assert port == 8000
        assert port in {p["containerPort"] for c in template["spec"]["containers"] for p in c["ports"]}


def test_without_policies_everything_is_allowed(peers: dict[str, Peer]) -> None:
    """The evaluator's baseline (else the denials above prove nothing about the policies)."""
    for src, dst, port, protocol in DENIED:
        assert connection_allowed([], peers[src], peers[dst], port, protocol)
