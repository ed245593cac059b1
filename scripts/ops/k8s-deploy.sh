#!/usr/bin/env bash
# Apply a kustomize overlay, optionally with another image (one rollout, not apply + set image),
# and wait for the rollout.
#   K8S_KUBECTL="kubectl --context prod" scripts/ops/k8s-deploy.sh OVERLAY NAMESPACE [IMAGE] [TIMEOUT]
# IMAGE (e.g. ghcr.io/owner/catsdogs-api:1.0.0) replaces the image catsdogs-api of the overlay.
set -euo pipefail

OVERLAY="${1:?usage: k8s-deploy.sh OVERLAY NAMESPACE [IMAGE] [TIMEOUT]}"
NAMESPACE="${2:?usage: k8s-deploy.sh OVERLAY NAMESPACE [IMAGE] [TIMEOUT]}"
IMAGE="${3:-}"
TIMEOUT="${4:-300s}"
KUBECTL="${K8S_KUBECTL:-kubectl}"

[[ -f "$OVERLAY/kustomization.yaml" ]] || { echo "no kustomization.yaml in $OVERLAY" >&2; exit 2; }
if [[ -n "$IMAGE" && ( "$IMAGE" != *:* || "${IMAGE##*:}" == */* ) ]]; then
    echo "IMAGE must be NAME:TAG (got '$IMAGE')" >&2
    exit 2
fi

# shellcheck disable=SC2086  # KUBECTL may carry flags (--context ...)
if [[ -z "$IMAGE" ]]; then
    $KUBECTL apply -k "$OVERLAY"
else
    # A throwaway kustomization on top of the overlay that only swaps the image.
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    # kustomize refuses absolute paths to other kustomizations: refer to it relatively.
    overlay_rel="$(realpath --relative-to="$work" "$OVERLAY")"
    cat >"$work/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $overlay_rel
images:
  - name: catsdogs-api
    newName: ${IMAGE%:*}
    newTag: ${IMAGE##*:}
YAML
    $KUBECTL kustomize "$work" >"$work/rendered.yaml"
    $KUBECTL apply -f "$work/rendered.yaml"
fi
# shellcheck disable=SC2086
$KUBECTL -n "$NAMESPACE" rollout status deployment/catsdogs-api --timeout="$TIMEOUT"
