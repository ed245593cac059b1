#!/bin/sh
# Entrypoint of the serving image: `catsdogs serve --host 0.0.0.0 --port 8000` with
# CATSDOGS_HOST / CATSDOGS_PORT / CATSDOGS_WORKERS from the environment; arguments are
# passed on (the last --port/--model/... given wins).
# The root filesystem may be read-only (Kubernetes readOnlyRootFilesystem): everything the
# server writes (multipart upload spool files, PROMETHEUS_MULTIPROC_DIR, which `catsdogs
# serve` creates and wipes) goes to /tmp, so that must be a writable mount.
set -eu

tmp="${TMPDIR:-/tmp}"
if ! [ -d "$tmp" ] || ! [ -w "$tmp" ]; then
    echo "entrypoint: $tmp is not writable; the server needs a writable $tmp" \
        "(Kubernetes: an emptyDir volume; docker run: --tmpfs /tmp)" >&2
    exit 1
fi

exec catsdogs serve --host "${CATSDOGS_HOST:-0.0.0.0}" --port "${CATSDOGS_PORT:-8000}" \
    --workers "${CATSDOGS_WORKERS:-1}" "$@"
