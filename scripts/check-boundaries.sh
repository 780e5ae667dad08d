#!/usr/bin/env bash
# Proves the module-boundary rules bite: a deep import into a library, a relative import
# across projects, and a library importing an app must each fail lint with the rule's message.
set -euo pipefail
cd "$(dirname "$0")/.."
export NX_NO_CLOUD=true NX_DAEMON=false
npx nx show projects >/dev/null   # leaves the project graph where the lint rule reads it

probe_dir=apps/gateway/src/__boundary_probe__
lib_probe=libs/ai-bridge/src/__boundary_probe__.ts
trap 'rm -rf "$probe_dir" "$lib_probe"' EXIT
mkdir -p "$probe_dir"
printf "import { parseReply } from '@traffic-dam/ai-bridge/src/lib/protocol';\nexport const a = parseReply;\n" > "$probe_dir/deep.ts"
printf "import { parseReply } from '../../../../libs/ai-bridge/src/lib/protocol';\nexport const b = parseReply;\n" > "$probe_dir/relative.ts"
printf "import { loadConfig } from '../../../apps/gateway/src/common/config/config';\nexport const c = loadConfig;\n" > "$lib_probe"

fail=0
expect() { # file, pattern that the lint output must contain
  local out
  if out=$(npx eslint --no-warn-ignored "$1" 2>&1); then
    echo "boundary check: lint PASSED $1 but must fail" >&2; fail=1; return
  fi
  if ! grep -q "$2" <<<"$out"; then
    echo "boundary check: $1 failed lint, but not with \"$2\":" >&2; echo "$out" >&2; fail=1; return
  fi
  echo "boundary check: $1 refused ($2)"
}
expect "$probe_dir/deep.ts" 'Import a library through its index'
expect "$probe_dir/relative.ts" '@nx/enforce-module-boundaries'
expect "$lib_probe" '@nx/enforce-module-boundaries'

# The graph Nx draws (`nx graph`) must show the gateway using the protocol library.
graph=$(mktemp --suffix=.json)
npx nx graph --file="$graph" >/dev/null 2>&1
if node -e 'const g=require(process.argv[1]).graph.dependencies; process.exit((g.gateway||[]).some(d=>d.target==="ai-bridge")?0:1)' "$graph"; then
  echo "boundary check: nx graph shows gateway -> ai-bridge"
else
  echo "boundary check: nx graph does not show gateway -> ai-bridge" >&2; fail=1
fi
rm -f "$graph"
exit $fail
