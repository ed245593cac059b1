#!/usr/bin/env bash
# Smoke test one API pod of a cluster: `kubectl port-forward` to the Service (which picks one
# pod, so the /metrics counter check of deploy/smoke-test.sh is exact), then run the smoke test.
#   KUBECTL="kubectl --context kind-catsdogs" NAMESPACE=mlops LOCAL_PORT=18080 scripts/ops/k8s-smoke-test.sh
set -euo pipefail

KUBECTL="${KUBECTL:-kubectl}"
NAMESPACE="${NAMESPACE:-mlops}"
SERVICE="${SERVICE:-catsdogs-api}"
LOCAL_PORT="${LOCAL_PORT:-18080}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOG="$(mktemp)"

# shellcheck disable=SC2086  # KUBECTL may carry flags (--context ...)
$KUBECTL -n "$NAMESPACE" port-forward "service/$SERVICE" "127.0.0.1:$LOCAL_PORT:8000" >"$LOG" 2>&1 &
PF_PID=$!
trap 'kill "$PF_PID" 2>/dev/null || true; rm -f "$LOG"' EXIT

for _ in $(seq 1 30); do
    if grep -q "Forwarding from" "$LOG"; then
        break
    fi
    if ! kill -0 "$PF_PID" 2>/dev/null; then
        echo "kubectl port-forward failed:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    sleep 1
done
grep -q "Forwarding from" "$LOG" || { echo "kubectl port-forward did not start in 30s" >&2; cat "$LOG" >&2; exit 1; }

"$ROOT/deploy/smoke-test.sh" "http://127.0.0.1:$LOCAL_PORT"
