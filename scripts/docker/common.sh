# shellcheck shell=bash
# shellcheck disable=SC2034  # variables used by the scripts that source this file
# Shared settings for the scripts in scripts/docker/ (sourced, not executed).
# Everything the private Docker daemon writes lives under CATSDOGS_DOCKER_ROOT, so a
# machine that already runs Docker is never touched and cleanup is one directory.

CATSDOGS_DOCKER_ROOT="${CATSDOGS_DOCKER_ROOT:-/var/tmp/catsdogs-docker}"
CATSDOGS_CACHE_DIR="${CATSDOGS_CACHE_DIR:-/var/cache/catsdogs}"
CATSDOGS_BASE_IMAGE="${CATSDOGS_BASE_IMAGE:-catsdogs-base:bookworm}"
DOCKERD_DATA_ROOT="$CATSDOGS_DOCKER_ROOT/data"
DOCKERD_EXEC_ROOT="$CATSDOGS_DOCKER_ROOT/exec"
DOCKERD_SOCK="$CATSDOGS_DOCKER_ROOT/docker.sock"
DOCKERD_PIDFILE="$CATSDOGS_DOCKER_ROOT/dockerd.pid"
DOCKERD_LOG="$CATSDOGS_DOCKER_ROOT/dockerd.log"
export DOCKER_HOST="${DOCKER_HOST:-unix://$DOCKERD_SOCK}"
# The Dockerfile needs no BuildKit feature; the classic builder works with every client
# (Debian's docker.io 20.10 and newer clients that lack the buildx plugin).
export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}"
DOCKER="${DOCKER:-docker}"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }
