#!/usr/bin/env bash
# npm test: set up what is missing, then every tier: lint (with the module-boundary check and
# scripts/check-infra.sh: compose, promtool, nginx -t),
# typecheck, unit, integration (real Redis, in containers where an engine runs), e2e (nginx +
# 2 gateways + Redis + worker; the compose stack on the engine), pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
t_start=$(date +%s)
stage() { echo "== $1 (+$(( $(date +%s) - t_start )) s)"; }
SETUP_TEST_TOOLS=1 bash scripts/setup.sh
export PATH="$PATH:/usr/sbin" NX_NO_CLOUD=true NX_DAEMON=false
# Every tier has a time limit, so a hung test fails the run instead of stalling it.
nx() { local limit=$1; shift; timeout --kill-after=30s "$limit" npx nx "$@" --output-style=stream --skip-nx-cache; }

# The container engine (scripts/engine.sh): as root it is installed when missing and served on
# this run's own socket; the integration tier then runs Redis in containers and the e2e tier
# runs the compose stack. TEST_REDIS=local skips it; TEST_REDIS=container (CI) requires it.
engine_dir=""
images_pid=""
cleanup() {
  local rc=$?
  [ -z "$images_pid" ] || kill "$images_pid" 2>/dev/null || true
  if [ -n "$engine_dir" ]; then
    # What a crashed test process could not remove: by this run's labels.
    local ids
    ids=$( { podman ps -aq --filter "label=td.run=$TD_RUN_ID"
             podman ps -aq --filter "label=com.docker.compose.project=td-e2e-$TD_RUN_ID"; } 2>/dev/null | sort -u)
    if [ -n "$ids" ]; then
      echo "npm test: removing containers this run left: $(echo $ids)"
      podman rm -f $ids >/dev/null 2>&1 || true
    fi
    for n in $(podman network ls -q --filter "label=com.docker.compose.project=td-e2e-$TD_RUN_ID" 2>/dev/null); do podman network rm -f "$n" >/dev/null 2>&1 || true; done
    for v in $(podman volume ls -q --filter "label=com.docker.compose.project=td-e2e-$TD_RUN_ID" 2>/dev/null); do podman volume rm -f "$v" >/dev/null 2>&1 || true; done
    bash scripts/engine.sh down "$engine_dir" || true
    rm -rf "$engine_dir"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if [ "${TEST_REDIS:-auto}" != local ] && { [ "$(id -u)" = 0 ] || bash scripts/engine.sh available; }; then
  stage "container engine"
  t0=$(date +%s)
  bash scripts/engine.sh install
  engine_dir=$(mktemp -d /tmp/td-test-engine.XXXXXX)
  # Lower case: compose lowers project names, and the trap finds the e2e's project by this id.
  TD_RUN_ID=$(echo "${engine_dir##*.}" | tr '[:upper:]' '[:lower:]')
  export TD_RUN_ID
  eval "$(bash scripts/engine.sh up "$engine_dir")"
  echo "engine: up in $(( $(date +%s) - t0 )) s ($DOCKER_HOST); images build beside lint and unit"
  # Lint and the unit tier need no engine: the images build meanwhile.
  bash scripts/engine.sh images --project > "$engine_dir/images.log" 2>&1 &
  images_pid=$!
elif [ "${TEST_REDIS:-auto}" = container ]; then
  echo "npm test: TEST_REDIS=container needs a container engine: run as root (it is installed), or install podman" >&2
  exit 1
fi

stage "lint and typecheck"
nx 10m run-many -t lint typecheck --parallel=2
bash scripts/check-boundaries.sh
bash scripts/check-infra.sh
stage unit
nx 5m run-many -t test --exclude ai-worker --parallel=2
if [ -n "$images_pid" ]; then
  echo "-- waiting for the images (+$(( $(date +%s) - t_start )) s)"
  wait "$images_pid" || { cat "$engine_dir/images.log" >&2; echo "npm test: building the images failed" >&2; exit 1; }
  images_pid=""
  cat "$engine_dir/images.log"
fi
# Integration and e2e run one project at a time: their timing checks need the CPU.
stage integration
nx 15m run-many -t integration --parallel=1
stage e2e
nx 15m run-many -t e2e --parallel=1
stage "worker (pytest)"
nx 5m run ai-worker:test
echo "npm test: all tiers passed in $(( $(date +%s) - t_start )) s"
