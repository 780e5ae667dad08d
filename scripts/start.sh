#!/usr/bin/env bash
# npm start: set up what is missing, then run Redis, the worker, N gateways and nginx.
# Flags after `npm start --` go to the stack (e.g. --port 8080 --gateways 3 --workers 2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PATH:/usr/sbin"
exec node --import tsx libs/stack/src/cli.ts "$@"
