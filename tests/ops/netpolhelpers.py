"""What rendered NetworkPolicies (networking.k8s.io/v1) allow, evaluated as Kubernetes defines it.

A pod that no policy of a direction selects allows everything in that direction; a pod that some do
allows only what a rule of one of them allows (policies add up). A connection needs both the
source's egress and the destination's ingress. Peers outside every pod network (a node address,
the API server, a client behind a NodePort, hostNetwork pods) match `ipBlock` rules only; the
policies here use 0.0.0.0/0 and nothing narrower, which is all this evaluator supports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Policy = dict[str, Any]


@dataclass(frozen=True)
class Peer:
    """A pod (namespace, labels, named container ports) or, with namespace None, an address outside."""

    namespace: str | None
    labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)


OUTSIDE = Peer(None)


def pod_peer(workload: dict[str, Any], namespace: str | None = None) -> Peer:
    """The pods of a Deployment/DaemonSet (or a PodTemplate): hostNetwork pods are outside."""
    template = workload["template"] if workload["kind"] == "PodTemplate" else workload["spec"]["template"]
    spec = template["spec"]
    if spec.get("hostNetwork"):
        return OUTSIDE
    ports = {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", []) if "name" in p}
    ns = namespace or workload["metadata"]["namespace"]
    return Peer(ns, dict(template["metadata"].get("labels", {})), ports)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions); {} selects everything."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def policy_types(policy: Policy) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])]


def _peer_matches(rule_peer: dict[str, Any], peer: Peer, policy_namespace: str) -> bool:
    if "ipBlock" in rule_peer:
        block = rule_peer["ipBlock"]
        assert block["cidr"] == "0.0.0.0/0" and not block.get("except"), f"unsupported ipBlock {block}"
        return peer.namespace is None
    if peer.namespace is None:
        return False
    ns_selector = rule_peer.get("namespaceSelector")
    if ns_selector is None:
        ns_ok = peer.namespace == policy_namespace
    else:
        ns_ok = selects(ns_selector, {"kubernetes.io/metadata.name": peer.namespace})
    return ns_ok and selects(rule_peer.get("podSelector", {}), peer.labels)


def _port_matches(rule_ports: list[dict[str, Any]] | None, port: int, protocol: str, named: dict[str, int]) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        number = named.get(p["port"]) if isinstance(p.get("port"), str) else p.get("port")
        if number is None and "port" not in p:
            return True
        if number is not None and number <= port <= p.get("endPort", number):
            return True
    return False


def _allowed(policies: list[Policy], direction: str, pod: Peer, peer: Peer, port: int, protocol: str) -> bool:
    """Whether POD's policies of DIRECTION let it talk to PEER on PORT (the destination's port)."""
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and direction in policy_types(p)
        and selects(p["spec"]["podSelector"], pod.labels)
    ]
    if not selecting:
        return True
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    named = pod.ports if direction == "Ingress" else peer.ports
    for policy in selecting:
        for rule in policy["spec"].get(rules_key, []):
            peers = rule.get(peers_key)
            peer_ok = not peers or any(_peer_matches(x, peer, policy["metadata"]["namespace"]) for x in peers)
            if peer_ok and _port_matches(rule.get("ports"), port, protocol, named):
                return True
    return False


def connection_allowed(policies: list[Policy], src: Peer, dst: Peer, port: int, protocol: str = "TCP") -> bool:
    """Whether SRC may open a connection to DST's PORT: SRC's egress and DST's ingress both allow it."""
    egress = src.namespace is None or _allowed(policies, "Egress", src, dst, port, protocol)
    ingress = dst.namespace is None or _allowed(policies, "Ingress", dst, src, port, protocol)
    return egress and ingress
