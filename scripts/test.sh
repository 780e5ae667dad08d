#!/usr/bin/env bash
# npm test: set up what is missing, then every tier: lint (with the module-boundary check and
# scripts/check-infra.sh: compose, promtool, nginx -t),
# typecheck, unit, integration (real Redis), e2e (nginx + 2 gateways + Redis + worker), pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_TEST_TOOLS=1 bash scripts/setup.sh
export PATH="$PATH:/usr/sbin" NX_NO_CLOUD=true NX_DAEMON=false
# Every tier has a time limit, so a hung test fails the run instead of stalling it.
nx() { local limit=$1; shift; timeout --kill-after=30s "$limit" npx nx "$@" --output-style=stream --skip-nx-cache; }

echo "== lint and typecheck"
nx 10m run-many -t lint typecheck --parallel=2
bash scripts/check-boundaries.sh
bash scripts/check-infra.sh
echo "== unit"
nx 5m run-many -t test --exclude ai-worker --parallel=2
# Integration and e2e run one project at a time: their timing checks need the CPU.
echo "== integration"
nx 15m run-many -t integration --parallel=1
echo "== e2e"
nx 15m run-many -t e2e --parallel=1
echo "== worker (pytest)"
nx 5m run ai-worker:test
echo "npm test: all tiers passed"
