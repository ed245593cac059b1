#!/usr/bin/env bash
# Stop the private Docker daemon started by dockerd-up.sh and unmount whatever it left
# under its root (overlay layers, shm, netns). Idempotent; safe when nothing runs.
# CATSDOGS_DOCKER_PURGE=1 also deletes the daemon's data (images, build cache).
set -euo pipefail
# shellcheck source=scripts/docker/common.sh
source "$(dirname "$0")/common.sh"

if [[ -f $DOCKERD_PIDFILE ]]; then
    pid=$(cat "$DOCKERD_PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
        # Stop containers first so dockerd's own shutdown is quick and clean.
        ids=$("$DOCKER" ps -q 2>/dev/null || true)
        if [[ -n $ids ]]; then
            # shellcheck disable=SC2086  # one id per word
            "$DOCKER" stop -t 5 $ids >/dev/null 2>&1 || true
        fi
        log "stopping dockerd (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "dockerd did not exit after 30 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$DOCKERD_PIDFILE"
fi

# The containerd that dockerd started (it records its pid under the exec root).
cpid_file="$DOCKERD_EXEC_ROOT/containerd/containerd.pid"
if [[ -f $cpid_file ]]; then
    cpid=$(cat "$cpid_file")
    if kill -0 "$cpid" 2>/dev/null; then
        kill -TERM "$cpid" 2>/dev/null || true
        for _ in $(seq 1 20); do
            kill -0 "$cpid" 2>/dev/null || break
            sleep 0.5
        done
    fi
fi

# Deepest mount points first; a lazy unmount as a fallback for a busy one.
if [[ -d $CATSDOGS_DOCKER_ROOT ]]; then
    mapfile -t mounts < <(findmnt -rn -o TARGET | awk -v root="$CATSDOGS_DOCKER_ROOT" 'index($0, root) == 1' | sort -r)
    for m in "${mounts[@]}"; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
    done
    [[ ${#mounts[@]} -eq 0 ]] || log "unmounted ${#mounts[@]} mount(s) under $CATSDOGS_DOCKER_ROOT"
fi
rm -f "$DOCKERD_SOCK"

if [[ ${CATSDOGS_DOCKER_PURGE:-0} == 1 ]]; then
    log "purging $CATSDOGS_DOCKER_ROOT"
    rm -rf "$CATSDOGS_DOCKER_ROOT"
fi
