#!/usr/bin/env bash
# Start a private Docker daemon (no bridge, no iptables: this works on CI runners and in
# VMs without a network stack for containers; containers use --network host).
# Idempotent: does nothing when the daemon already answers on its socket.
# Prints `export DOCKER_HOST=...` and `export CATSDOGS_DOCKERD_STARTED=0|1` (whether this
# call started it, i.e. whether the caller should stop it) for
# `eval "$(scripts/docker/dockerd-up.sh)"`.
set -euo pipefail
# shellcheck source=scripts/docker/common.sh
source "$(dirname "$0")/common.sh"

command -v "$DOCKER" >/dev/null || die "docker client not found: apt-get install -y docker.io"
if "$DOCKER" version >/dev/null 2>&1; then
    log "daemon already running at $DOCKER_HOST"
    echo "export DOCKER_HOST=$DOCKER_HOST"
    echo "export CATSDOGS_DOCKERD_STARTED=0"
    exit 0
fi
command -v dockerd >/dev/null || die "dockerd not found: apt-get install -y docker.io"
[[ $(id -u) -eq 0 ]] || die "starting dockerd needs root (or point DOCKER_HOST at a running daemon)"

mkdir -p "$DOCKERD_DATA_ROOT" "$DOCKERD_EXEC_ROOT"
rm -f "$DOCKERD_SOCK"
log "starting dockerd (data root $DOCKERD_DATA_ROOT, log $DOCKERD_LOG)"
# setsid: the daemon must outlive this script and the make/pytest process that ran it.
setsid dockerd \
    --data-root "$DOCKERD_DATA_ROOT" \
    --exec-root "$DOCKERD_EXEC_ROOT" \
    --host "unix://$DOCKERD_SOCK" \
    --pidfile "$DOCKERD_PIDFILE" \
    --iptables=false --ip6tables=false --bridge=none \
    >"$DOCKERD_LOG" 2>&1 </dev/null &

for _ in $(seq 1 60); do
    if "$DOCKER" version >/dev/null 2>&1; then
        log "daemon ready ($("$DOCKER" version --format '{{.Server.Version}}'), storage driver $("$DOCKER" info --format '{{.Driver}}'))"
        echo "export DOCKER_HOST=$DOCKER_HOST"
        echo "export CATSDOGS_DOCKERD_STARTED=1"
        exit 0
    fi
    sleep 0.5
done
tail -n 30 "$DOCKERD_LOG" >&2 || true
die "dockerd did not come up within 30 s"
