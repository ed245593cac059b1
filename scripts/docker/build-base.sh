#!/usr/bin/env bash
# Build a local stand-in for the `python:3.11-slim` base image, for machines that cannot
# reach a container registry (CI runners here, sandboxes): Debian bookworm (Python 3.11)
# from Debian's mirror with debootstrap, imported as $CATSDOGS_BASE_IMAGE.
#
# The image is cached as a `docker save` tarball keyed by this script and the CA bundle,
# so a second run (or a CI job with the cache dir restored) loads it in seconds.
# Idempotent: does nothing when the daemon already has the image for the current key.
# Needs a running daemon (dockerd-up.sh), root, and debootstrap.
set -euo pipefail
# shellcheck source=scripts/docker/common.sh
source "$(dirname "$0")/common.sh"

DEBIAN_SUITE="${DEBIAN_SUITE:-bookworm}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# pip inside the build verifies PyPI against this machine's CA bundle (it may hold a
# proxy's CA). It gets its own path in the image: installing ca-certificates there would
# overwrite /etc/ssl/certs/ca-certificates.crt.
HOST_CA_BUNDLE="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
IMAGE_CA_PATH=/etc/ssl/certs/catsdogs-pip-ca.pem

[[ -r $HOST_CA_BUNDLE ]] || die "CA bundle $HOST_CA_BUNDLE not readable (set HOST_CA_BUNDLE)"
key=$(cat "$0" "$HOST_CA_BUNDLE" | sha256sum | cut -c1-12)
keyed_tag="${CATSDOGS_BASE_IMAGE%%:*}:$DEBIAN_SUITE-$key"
cache_tar="$CATSDOGS_CACHE_DIR/base-$DEBIAN_SUITE-$key.tar"

if "$DOCKER" image inspect "$keyed_tag" >/dev/null 2>&1; then
    "$DOCKER" tag "$keyed_tag" "$CATSDOGS_BASE_IMAGE"
    log "$CATSDOGS_BASE_IMAGE is up to date ($keyed_tag)"
    exit 0
fi

if [[ -s $cache_tar ]]; then
    log "loading $cache_tar"
    "$DOCKER" load --quiet --input "$cache_tar" >/dev/null
    "$DOCKER" tag "$keyed_tag" "$CATSDOGS_BASE_IMAGE"
    log "$CATSDOGS_BASE_IMAGE loaded from cache"
    exit 0
fi

command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install -y debootstrap"
[[ $(id -u) -eq 0 ]] || die "debootstrap needs root"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/catsdogs-base.XXXXXX")
cleanup() {
    # debootstrap mounts proc/sys inside the rootfs; never rm -rf through a live mount.
    findmnt -rn -o TARGET | awk -v root="$work" 'index($0, root) == 1' | sort -r | xargs -r -n1 umount -l || true
    rm -rf "$work"
}
trap cleanup EXIT

rootfs="$work/rootfs"
start=$SECONDS
log "debootstrap $DEBIAN_SUITE (minbase + python3) from $DEBIAN_MIRROR"
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv \
    "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    die "debootstrap failed"
}

install -m 0644 "$HOST_CA_BUNDLE" "$rootfs$IMAGE_CA_PATH"
# Keep the base lean, like the official slim image: no package caches or indexes.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*

log "importing as $keyed_tag"
tar --numeric-owner -C "$rootfs" -c . | "$DOCKER" import \
    --change "ENV LANG=C.UTF-8" \
    --change "ENV PIP_CERT=$IMAGE_CA_PATH" \
    --change 'CMD ["python3"]' \
    --message "catsdogs stand-in for python:3.11-slim (debootstrap $DEBIAN_SUITE, key $key)" \
    - "$keyed_tag" >/dev/null
"$DOCKER" tag "$keyed_tag" "$CATSDOGS_BASE_IMAGE"

mkdir -p "$CATSDOGS_CACHE_DIR"
# Only the current key is worth keeping.
rm -f "$CATSDOGS_CACHE_DIR"/base-"$DEBIAN_SUITE"-*.tar
"$DOCKER" save --output "$cache_tar.partial" "$keyed_tag"
mv "$cache_tar.partial" "$cache_tar"
log "built $CATSDOGS_BASE_IMAGE in $((SECONDS - start)) s; cached at $cache_tar ($(du -h "$cache_tar" | cut -f1))"
