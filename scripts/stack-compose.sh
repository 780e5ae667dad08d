#!/usr/bin/env bash
# npm run stack:compose -- [--gateways 3] [--port 8080] [--prometheus-port 9090] [--project NAME]
# The compose stack (infra/compose) on this machine's container engine: Redis, the ai-worker, N
# gateway replicas, nginx and Prometheus, with images built here (scripts/engine.sh). Prints the
# URLs and stays in the foreground; Ctrl-C or SIGTERM brings it all down (containers, network,
# volumes) and stops the engine's API service and healthcheck loop it started.
# Env: STACK_GATEWAYS, STACK_PORT, STACK_PROMETHEUS_PORT, TD_COMPOSE_PROJECT; any gateway setting
# the compose file reads (DAM_SLOTS_PER_INSTANCE, DAM_MODE, ...).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export PATH="$PATH:/usr/sbin:/sbin"

gateways=${STACK_GATEWAYS:-3}
port=${STACK_PORT:-8080}
prom_port=${STACK_PROMETHEUS_PORT:-9090}
project=${TD_COMPOSE_PROJECT:-traffic-dam}
while [ $# -gt 0 ]; do
  case "$1" in
    --gateways) gateways=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --prometheus-port) prom_port=$2; shift 2 ;;
    --project) project=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "stack:compose: unknown option $1 (--help)" >&2; exit 2 ;;
  esac
done
# compose lowers the project name (and drops other characters); the labels carry that form.
project=$(echo "$project" | tr '[:upper:]' '[:lower:]')
[[ "$project" =~ ^[a-z0-9][a-z0-9_-]*$ ]] || { echo "stack:compose: --project must be letters, digits, - and _, got $project" >&2; exit 2; }
[[ "$gateways" =~ ^[1-9][0-9]?$ ]] || { echo "stack:compose: --gateways must be 1 to 99, got $gateways" >&2; exit 2; }
for p in "$port" "$prom_port"; do
  [[ "$p" =~ ^[0-9]+$ ]] && [ "$p" -ge 1 ] && [ "$p" -le 65535 ] || { echo "stack:compose: ports must be 1 to 65535, got $p" >&2; exit 2; }
  # Someone's `npm start` may hold 8080: say so now, not as a compose error after the build.
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "stack:compose: 127.0.0.1:$p is in use; pick another with --port / --prometheus-port" >&2
    exit 1
  fi
done

say() { echo "stack:compose: $*"; }
bash scripts/engine.sh install
dir=$(mktemp -d /tmp/td-compose.XXXXXX)
compose=(docker-compose -p "$project" -f infra/compose/docker-compose.yml)
services=(redis ai-worker gateway nginx prometheus)
started=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$started" = 1 ]; then
    say "bringing the stack down"
    "${compose[@]}" logs --no-color > "$dir/compose.log" 2>&1 || true
    mkdir -p .stack && cp "$dir/compose.log" .stack/compose.log 2>/dev/null || true
    "${compose[@]}" down --volumes --remove-orphans --timeout 30 >/dev/null 2>&1 || true
    # What compose did not remove (a container it lost track of) goes by its project label.
    local left
    left=$(podman ps -aq --filter "label=com.docker.compose.project=$project")
    [ -z "$left" ] || podman rm -f $left >/dev/null 2>&1 || true
  fi
  bash scripts/engine.sh down "$dir" || true
  rm -rf "$dir"
  [ "$started" = 1 ] && say "down; no container, network or engine process of $project is left (logs: .stack/compose.log)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

eval "$(bash scripts/engine.sh up "$dir")"
bash scripts/engine.sh images --project

# A container may not ask for more open files than the engine itself has (no CAP_SYS_RESOURCE).
limits=$(sed -n 's/^default_ulimits *= *//p' /etc/containers/containers.conf 2>/dev/null)
nofile=$(sed -n 's/.*"nofile=\([0-9]*\):.*/\1/p' <<< "$limits")
nproc=$(sed -n 's/.*"nproc=\([0-9]*\):.*/\1/p' <<< "$limits")
export TD_NOFILE=${nofile:-65535} TD_NPROC=${nproc:-65535}
# Debian's nginx (the local stand-in) predates the upstream `resolve` flag (1.27.3): it resolves
# `gateway` once, at start, to every replica; compose starts nginx after the gateways are up.
nginx_version=$(podman run --rm "$NGINX_IMAGE" nginx -v 2>&1 | sed -n 's#.*nginx/\([0-9.]*\).*#\1#p')
if [ "$(printf '%s\n1.27.3\n' "$nginx_version" | sort -V | head -1)" != 1.27.3 ]; then
  sed -e 's/ resolve / /' -e "s/^worker_rlimit_nofile .*/worker_rlimit_nofile $TD_NOFILE;/" infra/compose/nginx.conf > "$dir/nginx.conf"
  export TD_NGINX_CONF="$dir/nginx.conf"
fi
export TD_HTTP_HOST=127.0.0.1 TD_HTTP_PORT=$port TD_PROMETHEUS_PORT=$prom_port
export REDIS_PASSWORD=${REDIS_PASSWORD:-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')}
export GRAFANA_ADMIN_PASSWORD=${GRAFANA_ADMIN_PASSWORD:-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')}

if podman image exists "${GRAFANA_IMAGE:-grafana/grafana:12.1.0}" && podman image exists "${LOKI_IMAGE:-grafana/loki:3.5.0}" \
   && podman image exists "${ALLOY_IMAGE:-grafana/alloy:v1.10.0}"; then
  services+=(grafana loki alloy)
else
  say "Grafana, Loki and Alloy skipped: no Debian package to build them from and no registry to pull them (they run with Docker Hub: infra/README.md)"
fi

started=1
say "starting ${services[*]} (gateway x $gateways), project $project"
"${compose[@]}" up -d --no-build --scale "gateway=$gateways" "${services[@]}" > "$dir/up.log" 2>&1 \
  || { cat "$dir/up.log" >&2; exit 1; }

# Ready: every container with a healthcheck healthy (the gateways, the worker, Redis), and every
# gateway counted in the dam's budget as nginx sees it.
url="http://127.0.0.1:$port"
deadline=$(( $(date +%s) + 120 ))
live=0
unhealthy=starting
while :; do
  unhealthy=$(podman ps --filter "label=com.docker.compose.project=$project" --format '{{.Names}} {{.Status}}' | grep -E '\((starting|unhealthy)\)' || true)
  live=$(curl -fsS --max-time 2 "$url/dam" 2>/dev/null | sed -n 's/.*"live":\([0-9]*\).*/\1/p' || true)
  [ -z "$unhealthy" ] && [ "$live" = "$gateways" ] && break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    "${compose[@]}" ps >&2
    say "not ready within 120 s (live gateways: ${live:-none}; not healthy: ${unhealthy:-none})" >&2
    exit 1
  fi
  sleep 0.5
done

cat <<EOF

Traffic Dam (compose, $gateways gateways) is up.
  chat (SSE)   $url/chat/stream
  ask          POST $url/chat/sessions/{sessionId}/messages  (Authorization: Bearer <token>)
  dam          $url/dam
  health       $url/health/ready
  prometheus   http://127.0.0.1:$prom_port/targets
  containers   DOCKER_HOST=$DOCKER_HOST docker-compose -p $project -f infra/compose/docker-compose.yml ps
Try:  curl -N $url/chat/stream
Ctrl-C stops and removes everything.
EOF

# Until a signal (`wait` returns at once when one arrives; the trap brings the stack down), or
# until the parent is gone: npm does not always pass its SIGTERM on.
parent=$PPID
while kill -0 "$parent" 2>/dev/null; do
  sleep 1 &
  wait $!
done
