#!/usr/bin/env bash
# Installs what is missing, and only that: system packages (apt, as root), node_modules
# (npm ci), the worker's venv, and the gateway build. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
# Tests only (npm test sets SETUP_TEST_TOOLS=1): docker-compose validates the compose file,
# promtool the alert rules, and the observability e2e test runs a real Prometheus. None of them
# needs a container engine.
if [ "${SETUP_TEST_TOOLS:-0}" = 1 ]; then
  command -v docker-compose >/dev/null || need+=(docker-compose)
  command -v prometheus >/dev/null || need+=(prometheus)
  # The browser tests drive Debian's Chromium (playwright-core never downloads one).
  command -v chromium >/dev/null || need+=(chromium)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need[*]} with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # The packages start system services; we run our own on other ports.
    for svc in redis-server nginx prometheus; do
      if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then systemctl stop "$svc" || true; fi
      if command -v service >/dev/null; then service "$svc" stop >/dev/null 2>&1 || true; fi
    done
  else
    echo "setup: missing ${need[*]}. Run this once, then try again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi
export PATH="$PATH:/usr/sbin"

# npm ci only when the lockfile changed since the last install.
stamp=node_modules/.td-lock-hash
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi

bash apps/ai-worker/scripts/setup.sh

export NX_NO_CLOUD=true NX_DAEMON=false
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  npx nx build gateway --skip-nx-cache=false --output-style=static >/dev/null
fi
