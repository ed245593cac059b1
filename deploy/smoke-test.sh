#!/usr/bin/env bash
# Smoke test of a running catsdogs API: health, readiness, a real prediction, a rejected
# bad upload, and the prediction counter increasing in /metrics. Exits non-zero on any failure.
#
#   deploy/smoke-test.sh [BASE_URL]            (default: $BASE_URL or http://localhost:8000)
#
# Environment: SMOKE_IMAGE (JPEG to classify; default deploy/samples/cat.jpg),
#   SMOKE_READY_TIMEOUT (seconds to wait for /ready; default 60),
#   SMOKE_METRICS (1: check the /metrics counter, the default; 0: skip that check).
# The /metrics check compares two scrapes of BASE_URL, so BASE_URL must reach one API
# process (docker run, `kubectl port-forward`): behind a load balancer the two scrapes may
# come from different pods (use SMOKE_METRICS=0 there). `make k8s-smoke-test` port-forwards
# to one pod for that reason.
# Needs only bash, curl, grep and awk.
set -euo pipefail

BASE_URL="${1:-${BASE_URL:-http://localhost:8000}}"
BASE_URL="${BASE_URL%/}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE="${SMOKE_IMAGE:-$SCRIPT_DIR/samples/cat.jpg}"
READY_TIMEOUT="${SMOKE_READY_TIMEOUT:-60}"
CHECK_METRICS="${SMOKE_METRICS:-1}"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
BODY="$WORK/body"

fail() {
    echo "FAIL: $*" >&2
    if [[ -s "$BODY" ]]; then
        echo "--- last response body ---" >&2
        head -c 2000 "$BODY" >&2
        echo >&2
    fi
    exit 1
}
ok() { echo "ok:   $*"; }

# request METHOD PATH [curl args...] -> prints the HTTP status; the body goes to $BODY.
request() {
    local method="$1" path="$2"
    shift 2
    local code
    # No connection: curl fails and -w gives 000, which the callers report.
    code="$(curl -s --max-time 30 -o "$BODY" -w '%{http_code}' -X "$method" "$@" "$BASE_URL$path")" || true
    echo "${code:-000}"
}

# Sum of every predictions_total{...} sample of one /metrics scrape (0 when none yet).
prediction_count() {
    local status
    status="$(request GET /metrics)"
    [[ "$status" == 200 ]] || fail "GET /metrics returned HTTP $status"
    awk '$1 ~ /^predictions_total(\{|$)/ { total += $2 } END { printf "%d\n", total }' "$BODY"
}

[[ -r "$IMAGE" ]] || fail "sample image $IMAGE not found (set SMOKE_IMAGE)"
echo "Smoke testing $BASE_URL"

# A server that was just started may not listen yet: wait for /health, then for /ready.
deadline=$((SECONDS + READY_TIMEOUT))
while :; do
    status="$(request GET /health)"
    [[ "$status" == 200 ]] && break
    ((SECONDS < deadline)) || fail "GET /health still HTTP $status after ${READY_TIMEOUT}s"
    sleep 1
done
grep -Eq '"status" *: *"healthy"' "$BODY" || fail "GET /health did not report status healthy"
ok "GET /health -> 200 healthy"

while :; do
    status="$(request GET /ready)"
    [[ "$status" == 200 ]] && break
    ((SECONDS < deadline)) || fail "GET /ready still HTTP $status after ${READY_TIMEOUT}s"
    sleep 1
done
grep -Eq '"status" *: *"ready"' "$BODY" || fail "GET /ready did not report status ready"
ok "GET /ready -> 200 ready"

if [[ "$CHECK_METRICS" == 1 ]]; then
    before="$(prediction_count)"
    ok "GET /metrics -> predictions_total = $before"
fi

status="$(request POST /predict -H 'X-Request-ID: smoke-test' -F "file=@$IMAGE;type=image/jpeg")"
[[ "$status" == 200 ]] || fail "POST /predict of $IMAGE returned HTTP $status"
grep -Eq '"prediction" *: *"(cat|dog)"' "$BODY" || fail "POST /predict answered no cat/dog prediction"
grep -Eq '"probability" *: *(0(\.[0-9]+)?|1(\.0+)?)([eE]-?[0-9]+)?[,}]' "$BODY" ||
    fail "POST /predict answered no probability in [0, 1]"
prediction="$(grep -Eo '"prediction" *: *"(cat|dog)"' "$BODY" | grep -Eo '(cat|dog)"$' | tr -d '"')"
ok "POST /predict $(basename "$IMAGE") -> 200 $prediction"

printf 'this is not an image' >"$WORK/not-an-image.jpg"
status="$(request POST /predict -F "file=@$WORK/not-an-image.jpg;type=image/jpeg")"
[[ "$status" =~ ^4[0-9][0-9]$ ]] || fail "POST /predict of a non-image returned HTTP $status, expected a 4xx"
grep -Eq '"code" *:' "$BODY" || fail "the 4xx for a non-image carries no error code"
ok "POST /predict non-image -> $status with an error code"

if [[ "$CHECK_METRICS" == 1 ]]; then
    after="$(prediction_count)"
    ((after > before)) || fail "predictions_total did not increase in /metrics ($before -> $after)"
    ok "GET /metrics -> predictions_total $before -> $after"
else
    status="$(request GET /metrics)"
    [[ "$status" == 200 ]] || fail "GET /metrics returned HTTP $status"
    grep -q 'predictions_total' "$BODY" || fail "GET /metrics does not expose predictions_total"
    ok "GET /metrics -> predictions_total present (increase not checked: SMOKE_METRICS=0)"
fi

echo "PASS: smoke test of $BASE_URL"
