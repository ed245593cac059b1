#!/usr/bin/env bash
# After `make kind-full`: Prometheus scrapes the API, node-exporter and kube-state-metrics,
# and Grafana is up with its provisioned datasource and dashboard. Needs curl, grep, base64.
#   KUBECTL="kubectl --context kind-catsdogs" PROMETHEUS_URL=http://localhost:9090 \
#   GRAFANA_URL=http://localhost:3000 scripts/ops/check-monitoring.sh
set -euo pipefail

KUBECTL="${KUBECTL:-kubectl}"
NAMESPACE="${MONITORING_NAMESPACE:-monitoring}"
PROMETHEUS_URL="${PROMETHEUS_URL:-http://localhost:9090}"
GRAFANA_URL="${GRAFANA_URL:-http://localhost:3000}"
TIMEOUT="${CHECK_TIMEOUT:-120}"

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok:   $*"; }

# Value of a scalar-like PromQL query (first sample), empty when there is none.
prom_value() {
    curl -fsS --max-time 10 --get --data-urlencode "query=$1" "$PROMETHEUS_URL/api/v1/query" |
        grep -o '"value":\[[^]]*\]' | head -n 1 | sed -E 's/.*,"([^"]*)"\]/\1/' || true
}

# Wait until `sum(up{job=JOB})` is at least 1 (scrapes happen every 15 s).
wait_up() {
    local job="$1" deadline=$((SECONDS + TIMEOUT)) value
    while :; do
        value="$(prom_value "sum(up{job=\"$job\"})")"
        if [[ -n "$value" && "$value" != "0" ]]; then
            ok "Prometheus scrapes job $job ($value targets up)"
            return 0
        fi
        ((SECONDS < deadline)) || fail "no target of job $job is up in Prometheus after ${TIMEOUT}s"
        sleep 5
    done
}

curl -fsS --max-time 10 "$PROMETHEUS_URL/-/ready" >/dev/null || fail "Prometheus at $PROMETHEUS_URL is not ready"
ok "Prometheus ready at $PROMETHEUS_URL"
wait_up catsdogs-api
wait_up node-exporter
wait_up kube-state-metrics
value="$(prom_value 'count(kube_horizontalpodautoscaler_spec_max_replicas{namespace="mlops"})')"
[[ -n "$value" ]] || fail "kube-state-metrics exports no HPA metrics for namespace mlops"
ok "kube-state-metrics exports the HPA metrics"
value="$(prom_value 'count(ALERTS{alertname=~"Catsdogs.*",alertstate="firing"}) or vector(0)')"
ok "firing catsdogs alerts: ${value:-0}"

curl -fsS --max-time 10 "$GRAFANA_URL/api/health" | grep -q '"database": *"ok"' || fail "Grafana at $GRAFANA_URL is not healthy"
ok "Grafana healthy at $GRAFANA_URL"
# shellcheck disable=SC2086  # KUBECTL may carry flags (--context ...)
user="$($KUBECTL -n "$NAMESPACE" get secret grafana-admin -o jsonpath='{.data.admin-user}' | base64 -d)"
# shellcheck disable=SC2086
password="$($KUBECTL -n "$NAMESPACE" get secret grafana-admin -o jsonpath='{.data.admin-password}' | base64 -d)"
curl -fsS --max-time 10 -u "$user:$password" "$GRAFANA_URL/api/datasources/uid/prometheus/health" |
    grep -q '"status": *"OK"' || fail "Grafana's Prometheus datasource is not healthy"
ok "Grafana datasource Prometheus healthy"
curl -fsS --max-time 10 -u "$user:$password" "$GRAFANA_URL/api/dashboards/uid/catsdogs-overview" |
    grep -q '"title": *"Cats vs Dogs' || fail "the catsdogs dashboard is not provisioned in Grafana"
ok "Grafana dashboard catsdogs-overview provisioned"
echo "PASS: monitoring stack"
