"""Custom resources of the deployment (KServe InferenceService, KubeRay RayJob, Kubeflow PyTorchJob).

kubernetes-validate has no schemas for custom resources. ``crd_errors`` validates one against a strict
JSON Schema of its CRD's own fields (tests/ops/crd_schemas/, each file says where its fields come from)
whose Kubernetes types (pod templates, containers, Services, ...) are ``$ref`` s into
kubernetes-validate's strict schemas of the target Kubernetes version: a misspelt or misplaced field
anywhere in the object is an error. ``pod_templates`` gives the pods a custom resource makes, as
PodTemplates for the NetworkPolicy tests and as Pods for the policy scan (checkov only knows built-in
kinds, and only Pods get all of its pod- and container-level checks).
"""

from __future__ import annotations

import copy
import functools
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from opshelpers import KUBERNETES_VERSION
from referencing import Registry, Resource

SCHEMAS = Path(__file__).parent / "crd_schemas"
CRD_SCHEMAS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): SCHEMAS / "inferenceservice-serving.kserve.io-v1beta1.yaml",
    ("ray.io/v1", "RayJob"): SCHEMAS / "rayjob-ray.io-v1.yaml",
}
K8S_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"  # the $id of kubernetes-validate's definitions
PODSPEC = "io.k8s.api.core.v1.PodSpec"


@functools.cache
def k8s_definitions() -> dict[str, Any]:
    """kubernetes-validate's strict definitions (additionalProperties: false) for KUBERNETES_VERSION."""
    path = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict"
    defs: dict[str, Any] = json.loads((path / "_definitions.json").read_text())
    assert defs["$id"] == K8S_DEFINITIONS, defs["$id"]
    return defs


def podspec_fields() -> set[str]:
    return set(k8s_definitions()["$defs"][PODSPEC]["properties"])


def _inline_podspecs(node: Any) -> None:
    """Give every schema marked ``x-inline-podspec`` the PodSpec's fields (refs into the PodSpec definition)."""
    if isinstance(node, dict):
        if node.pop("x-inline-podspec", False):
            for field in podspec_fields():
                ref = f"{K8S_DEFINITIONS}#/$defs/{PODSPEC}/properties/{field}"
                node["properties"].setdefault(field, {"$ref": ref})
        for value in node.values():
            _inline_podspecs(value)
    elif isinstance(node, list):
        for value in node:
            _inline_podspecs(value)


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    path = CRD_SCHEMAS.get((api_version, kind))
    assert path is not None, f"no schema for {api_version} {kind} in {SCHEMAS}"
    schema = yaml.safe_load(path.read_text())
    _inline_podspecs(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    registry: Registry[Any] = Registry().with_resource(K8S_DEFINITIONS, Resource.from_contents(k8s_definitions()))
    return jsonschema.Draft202012Validator(schema, registry=registry)


def crd_errors(doc: dict[str, Any]) -> list[str]:
    """Every schema violation of a custom resource, as 'path.to.field: message'."""
    validator = crd_validator(doc["apiVersion"], doc["kind"])
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def is_custom(doc: dict[str, Any]) -> bool:
    return doc["kind"] in {"InferenceService", "RayJob", "PyTorchJob"}


def pod_templates(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pod templates (metadata + spec) of a custom resource, by part name."""
    spec = doc["spec"]
    if doc["kind"] == "InferenceService":
        # A predictor is a PodSpec plus KServe's fields; its labels and annotations go on the pods.
        predictor = spec["predictor"]
        meta = {k: predictor[k] for k in ("labels", "annotations") if k in predictor}
        pod = {k: v for k, v in predictor.items() if k in podspec_fields()}
        return {"predictor": {"metadata": meta, "spec": pod}}
    if doc["kind"] == "RayJob":
        cluster = spec["rayClusterSpec"]
        parts = {"head": cluster["headGroupSpec"]["template"]}
        parts |= {f"worker-{g['groupName']}": g["template"] for g in cluster.get("workerGroupSpecs", [])}
        if "submitterPodTemplate" in spec:
            parts["submitter"] = spec["submitterPodTemplate"]
        return parts
    if doc["kind"] == "PyTorchJob":
        return {role.lower(): r["template"] for role, r in spec["pytorchReplicaSpecs"].items()}
    raise AssertionError(f"not a custom resource of the deployment: {doc['kind']}")


def as_pod_template_objects(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod templates of a custom resource as v1 PodTemplate objects (same namespace, name-part)."""
    meta = doc["metadata"]
    return [
        {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"{meta['name']}-{part}", "namespace": meta.get("namespace", "default")},
            "template": copy.deepcopy(template),
        }
        for part, template in pod_templates(doc).items()
    ]


def as_pods(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The pods of a custom resource as v1 Pod objects (same namespace, named <name>-<part>), for checkov."""
    meta = doc["metadata"]
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                **copy.deepcopy(template.get("metadata", {})),
                "name": f"{meta['name']}-{part}",
                "namespace": meta.get("namespace", "default"),
            },
            "spec": copy.deepcopy(template["spec"]),
        }
        for part, template in pod_templates(doc).items()
    ]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container and init container anywhere in an object (any kind, custom resources included)."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    found.extend(c for c in value if isinstance(c, dict) and "image" in c)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return found
