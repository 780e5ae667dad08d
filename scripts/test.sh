#!/usr/bin/env bash
# npm test: set up what is missing, then every tier: lint (with the module-boundary check),
# typecheck, unit, integration (real Redis), e2e (nginx + 2 gateways + Redis + worker), pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PATH:/usr/sbin" NX_NO_CLOUD=true NX_DAEMON=false
nx() { npx nx "$@" --output-style=stream --skip-nx-cache; }

echo "== lint and typecheck"
nx run-many -t lint typecheck
bash scripts/check-boundaries.sh
echo "== unit"
nx run-many -t test --exclude ai-worker
echo "== integration"
nx run-many -t integration
echo "== e2e"
nx run-many -t e2e
echo "== worker (pytest)"
nx run ai-worker:test
echo "npm test: all tiers passed"
