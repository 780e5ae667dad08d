#!/usr/bin/env bash
# The local container engine for the tests and `npm run stack:compose`: Debian's rootful podman
# with runc, serving the Docker API on a unix socket, and images built from a Debian base made
# with debootstrap from this machine's apt mirror. Nothing is ever pulled from a registry.
# Why each step is there: infra/README.md, "Containers on a machine without a registry".
#
#   engine.sh install            as root: podman, runc, debootstrap, catatonit (compose `init:`),
#                                CNI's dnsname (service DNS), docker-compose; containers.conf
#   engine.sh images [--project] the Debian base and the local stand-ins for the public images, each
#                                built only when missing or its recipe changed; --project also
#                                builds the gateway and ai-worker images from their Dockerfiles
#   engine.sh serve DIR          foreground: the Docker API on DIR/podman.sock and the healthcheck
#                                loop; writes DIR/env; stops both on SIGINT/SIGTERM
#   engine.sh up DIR             `serve` in the background (its own session); prints DIR/env
#   engine.sh down DIR           stops what `up DIR` started (containers are the caller's to remove)
#   engine.sh env DIR            the environment for docker-compose and testcontainers
#   engine.sh available          exit 0 when podman is installed and runs
#
# Each caller serves its own socket and stops it, so runs of several engineers on one machine
# never stop each other's engine; they share the image store.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/scripts/engine.sh"
export PATH="$PATH:/usr/sbin:/sbin"

BASE_IMAGE=localhost/td-local/debian:bookworm
# Local stand-ins, by the variable the compose file and the Dockerfiles read.
declare -A LOCAL_IMAGES=(
  [REDIS_IMAGE]=localhost/td-local/redis:7
  [NGINX_IMAGE]=localhost/td-local/nginx:1.22
  [PROMETHEUS_IMAGE]=localhost/td-local/prometheus:2
  [NODE_IMAGE]=localhost/td-local/node:20
  [PYTHON_IMAGE]=localhost/td-local/python:3.11
)
declare -A LOCAL_RECIPES=(
  [REDIS_IMAGE]=redis
  [NGINX_IMAGE]=nginx
  [PROMETHEUS_IMAGE]=prometheus
  [NODE_IMAGE]=node
  [PYTHON_IMAGE]=python
)
GATEWAY_IMAGE=localhost/traffic-dam/gateway:local
WORKER_IMAGE=localhost/traffic-dam/ai-worker:local
CONF=/etc/containers/containers.conf
CONF_MARK="# Written by traffic-dam scripts/engine.sh"
PACKAGES=(podman runc debootstrap catatonit golang-github-containernetworking-plugin-dnsname docker-compose)

log() { echo "engine: $*" >&2; }
die() { log "$*"; exit 1; }

# ---- install -----------------------------------------------------------------------------------

cmd_install() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; run: sudo apt-get install -y --no-install-recommends ${missing[*]}"
    log "installing ${missing[*]} with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  write_conf
}

# The limits podman itself runs with: a container may not ask for more (no CAP_SYS_RESOURCE in
# this sandbox), and podman's default of 1048576 fails with "error setting rlimit type 7".
podman_limits() {
  local tmp pid i nofile nproc
  tmp=$(mktemp -d)
  podman system service --time=0 "unix://$tmp/probe.sock" >/dev/null 2>&1 &
  pid=$!
  for i in $(seq 100); do [ -S "$tmp/probe.sock" ] && break; sleep 0.1; done
  nofile=$(awk '/^Max open files/ {print $5}' "/proc/$pid/limits")
  nproc=$(awk '/^Max processes/ {print $4}' "/proc/$pid/limits")
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$tmp"
  [ -n "$nofile" ] && [ -n "$nproc" ] || die "could not read a running podman's limits"
  echo "$nofile $nproc"
}

write_conf() {
  local nofile nproc want
  read -r nofile nproc < <(podman_limits)
  # "unlimited" is not a number a container can be given; keep podman's own default then.
  [[ "$nofile" =~ ^[0-9]+$ ]] || nofile=1048576
  [[ "$nproc" =~ ^[0-9]+$ ]] || nproc=1048576
  want="$CONF_MARK (what podman needs on this machine).
[containers]
# At most what podman runs with here: asking for more fails (no CAP_SYS_RESOURCE).
default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]

[engine]
# crun 1.8 fails on this kernel's cgroup layout (\"cgroups in hybrid mode not supported\").
runtime = \"runc\"

[network]
# CNI with the dnsname plugin gives compose its service names (gateway -> every replica).
network_backend = \"cni\""
  if [ -f "$CONF" ] && ! head -1 "$CONF" | grep -qF "$CONF_MARK"; then
    grep -q '^runtime *= *"runc"' "$CONF" && grep -q '^default_ulimits' "$CONF" \
      || log "$CONF is not ours and lacks runtime = \"runc\" or default_ulimits; containers may fail to start. Wanted:
$want"
    return 0
  fi
  if [ "$(cat "$CONF" 2>/dev/null)" != "$want" ]; then
    [ "$(id -u)" = 0 ] || die "$CONF needs writing; run as root: bash scripts/engine.sh install"
    mkdir -p "$(dirname "$CONF")"
    printf '%s\n' "$want" > "$CONF"
    log "wrote $CONF (runc, ulimits nofile=$nofile nproc=$nproc)"
  fi
}

cmd_available() {
  command -v podman >/dev/null && podman info >/dev/null 2>&1
}

# ---- images ------------------------------------------------------------------------------------

image_label() { podman image inspect --format '{{index .Labels "td.recipe"}}' "$1" 2>/dev/null || true; }

# The mirror and suite apt uses on this machine, and its sources file, copied into the base so
# the images' apt-get reaches what the host reaches.
apt_mirror() {
  local f=/etc/apt/sources.list.d/debian.sources
  if [ -f "$f" ]; then
    awk '/^URIs:/ {print $2; exit}' "$f"
  else
    awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit} $1 == "deb" {print $3; exit}' /etc/apt/sources.list
  fi
}

base_recipe() {
  # The bundle goes into the base: image builds reach the registries through whatever this
  # machine trusts (a proxy's CA on some networks).
  { echo "minbase-3 $(apt_mirror) $(. /etc/os-release; echo "$VERSION_CODENAME")"
    cat /etc/ssl/certs/ca-certificates.crt /usr/local/share/ca-certificates/* 2>/dev/null || true
    cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true
  } | sha256sum | cut -c1-16
}

build_base() {
  local recipe suite mirror tmp t0
  recipe=$(base_recipe)
  [ "$(image_label "$BASE_IMAGE")" = "$recipe" ] && return 0
  command -v debootstrap >/dev/null || die "debootstrap is missing: bash scripts/engine.sh install"
  suite=$(. /etc/os-release; echo "$VERSION_CODENAME")
  mirror=$(apt_mirror)
  [ -n "$mirror" ] || die "no apt mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
  tmp=$(mktemp -d /var/tmp/td-rootfs.XXXXXX)
  t0=$(date +%s)
  log "debootstrap --variant=minbase $suite from $mirror (about 35 s)"
  debootstrap --variant=minbase "$suite" "$tmp/rootfs" "$mirror" > "$tmp/debootstrap.log" 2>&1 \
    || { tail -20 "$tmp/debootstrap.log" >&2; rm -rf "$tmp"; die "debootstrap failed"; }
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    rm -f "$tmp/rootfs/etc/apt/sources.list"
    cp /etc/apt/sources.list.d/debian.sources "$tmp/rootfs/etc/apt/sources.list.d/"
  else
    cp /etc/apt/sources.list "$tmp/rootfs/etc/apt/sources.list"
  fi
  # This machine's trust: the bundle, and its local CAs for when an image installs
  # ca-certificates (update-ca-certificates rebuilds the bundle from Debian's and those).
  mkdir -p "$tmp/rootfs/etc/ssl/certs" "$tmp/rootfs/usr/local/share/ca-certificates"
  cp /etc/ssl/certs/ca-certificates.crt "$tmp/rootfs/etc/ssl/certs/ca-certificates.crt"
  cp -r /usr/local/share/ca-certificates/. "$tmp/rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  # As Debian's own container images do: no .deb kept after an install, no docs or man pages.
  cat > "$tmp/rootfs/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
  cat > "$tmp/rootfs/etc/dpkg/dpkg.cfg.d/docker-excludes" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
DPKG
  chroot "$tmp/rootfs" apt-get clean
  rm -rf "$tmp/rootfs/usr/share/man/"* "$tmp/rootfs/usr/share/info/"*
  find "$tmp/rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  rm -rf "$tmp/rootfs/var/lib/apt/lists/"* "$tmp/rootfs/var/cache/apt/"*.bin "$tmp/rootfs/var/log/"*.log
  tar -C "$tmp/rootfs" -c . | podman import -q --change 'CMD ["bash"]' --change "LABEL td.recipe=$recipe" - "$BASE_IMAGE" >/dev/null
  rm -rf "$tmp"
  log "base $BASE_IMAGE ready in $(( $(date +%s) - t0 )) s"
}

# Builds one image when its recipe (Dockerfile, context files, base) changed. Output goes to a
# log beside the image's name; the log is shown when the build fails.
build_local() {
  local var=$1 name=${LOCAL_IMAGES[$1]} recipe=${LOCAL_RECIPES[$1]} dir="$ROOT/infra/docker/local" ctx hash logf
  ctx="$dir"
  if [ "$recipe" = node ]; then
    # Debian 12 packages Node 18; the gateway needs 20. This machine's Node goes in the image.
    ctx=$(mktemp -d)
    cp "$(readlink -f "$(command -v node)")" "$ctx/node"
    cp -r "$(dirname "$(readlink -f "$(command -v npm)")")/.." "$ctx/npm"
  fi
  hash=$( { cat "$dir/$recipe.Dockerfile"; [ "$recipe" = redis ] && cat "$dir/redis-entrypoint.sh"
            [ "$recipe" = node ] && node --version
            podman image inspect --format '{{.Id}}' "$BASE_IMAGE"; } | sha256sum | cut -c1-16)
  if [ "$(image_label "$name")" = "$hash" ]; then
    [ "$ctx" = "$dir" ] || rm -rf "$ctx"
    return 0
  fi
  logf=$(mktemp /tmp/td-build-"$recipe".XXXXXX.log)
  if podman build -q --format docker --layers --label "td.recipe=$hash" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
      -f "$dir/$recipe.Dockerfile" -t "$name" "$ctx" > "$logf" 2>&1; then
    log "built $name ($var)"
    rm -f "$logf"
  else
    tail -30 "$logf" >&2
    [ "$ctx" = "$dir" ] || rm -rf "$ctx"
    die "building $name failed (log: $logf)"
  fi
  [ "$ctx" = "$dir" ] || rm -rf "$ctx"
}

# What an image is built from: the Dockerfile, the sources it copies (as .dockerignore leaves
# them) and its base. Unchanged, the image is not rebuilt at all.
context_hash() {
  local file=$1 base=$2
  ( cd "$ROOT"
    { cat "$file"
      grep -E '^COPY ' "$file" | grep -v -- '--from=' | sed -E 's/^COPY( --[^ ]+)* //' | awk '{ $NF=""; print }' | tr ' ' '\n' \
        | grep -v '^$' | sort -u | while read -r src; do
            find "$src" -type f -not -path '*/node_modules/*' -not -path '*/.venv/*' -not -path '*/__pycache__/*' \
              -not -path '*/.pytest_cache/*' -not -name '*.log' | sort | xargs -r sha256sum
          done
      podman image inspect --format '{{.Id}}' "$base"
    } | sha256sum | cut -c1-16 )
}

build_project() {
  local which=$1 file image var hash logf
  case "$which" in
    gateway) file=infra/docker/gateway.Dockerfile; image=$GATEWAY_IMAGE; var=NODE_IMAGE ;;
    ai-worker) file=infra/docker/ai-worker.Dockerfile; image=$WORKER_IMAGE; var=PYTHON_IMAGE ;;
  esac
  hash=$(context_hash "$file" "${LOCAL_IMAGES[$var]}")
  [ "$(image_label "$image")" = "$hash" ] && return 0
  logf=$(mktemp /tmp/td-build-"$which".XXXXXX.log)
  # The layer cache keeps this to seconds when only the sources changed.
  if (cd "$ROOT" && podman build --format docker --layers --label "td.recipe=$hash" \
        --build-arg "$var=${LOCAL_IMAGES[$var]}" -f "$file" -t "$image" .) > "$logf" 2>&1; then
    log "built $image ($(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
    rm -f "$logf"
  else
    tail -40 "$logf" >&2
    die "building $image failed (log: $logf)"
  fi
}

cmd_images() {
  local project=0 t0 pids=() p var
  [ "${1:-}" = --project ] && project=1
  t0=$(date +%s)
  build_base
  # Independent builds, mostly waiting on apt and the registries: side by side.
  for var in "${!LOCAL_IMAGES[@]}"; do build_local "$var" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || die "a local image failed to build"; done
  if [ "$project" = 1 ]; then
    pids=()
    build_project gateway & pids+=($!)
    build_project ai-worker & pids+=($!)
    for p in "${pids[@]}"; do wait "$p" || die "a project image failed to build"; done
  fi
  log "images ready in $(( $(date +%s) - t0 )) s"
}

# ---- serve -------------------------------------------------------------------------------------

# podman runs healthchecks from systemd timers, and there is no systemd here: without this loop a
# container never leaves "starting" and compose's `condition: service_healthy` waits forever.
# Every second for a container still starting or unhealthy, every 5 s once healthy.
health_loop() {
  trap 'exit 0' TERM INT
  declare -A due=()
  local now id status
  while :; do
    now=$(date +%s)
    while read -r id status; do
      [ -n "$id" ] || continue
      if [ "${due[$id]:-0}" -le "$now" ]; then
        # stdin from /dev/null: it would swallow the rest of this list.
        podman healthcheck run "$id" < /dev/null > /dev/null 2>&1 || true
        case "$status" in *"(healthy)"*) due[$id]=$((now + 5)) ;; *) due[$id]=$((now + 1)) ;; esac
      fi
    done < <(podman ps --format '{{.ID}} {{.Status}}' 2>/dev/null | grep -E '\((starting|healthy|unhealthy)\)' || true)
    sleep 1
  done
}

env_lines() {
  local dir=$1 var
  echo "export DOCKER_HOST=unix://$dir/podman.sock"
  echo "export DOCKER_CONFIG=$dir/docker-config"
  # The machine has /.dockerenv, so testcontainers believes it runs in a container and dials the
  # bridge's gateway; the engine is local and publishes on the loopback.
  echo "export TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1"
  # Ryuk's image cannot be pulled; every test stops its own containers.
  echo "export TESTCONTAINERS_RYUK_DISABLED=true"
  # The classic builder: BuildKit would boot itself from Docker Hub.
  echo "export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0"
  for var in "${!LOCAL_IMAGES[@]}"; do echo "export $var=${LOCAL_IMAGES[$var]}"; done
  echo "export GATEWAY_IMAGE=$GATEWAY_IMAGE WORKER_IMAGE=$WORKER_IMAGE"
}

cmd_serve() {
  local dir=${1:?usage: engine.sh serve DIR} sock svc hl i
  mkdir -p "$dir/docker-config"
  # podman and compose stat DOCKER_CONFIG/config.json.
  [ -f "$dir/docker-config/config.json" ] || echo '{}' > "$dir/docker-config/config.json"
  sock="$dir/podman.sock"
  rm -f "$sock" "$dir/env"
  podman system service --time=0 "unix://$sock" > "$dir/service.log" 2>&1 &
  svc=$!
  health_loop > "$dir/health.log" 2>&1 &
  hl=$!
  # The loop finishes the healthcheck it is running, then exits: nothing is left behind.
  trap 'kill -TERM "$hl" "$svc" 2>/dev/null; wait "$hl" "$svc" 2>/dev/null; rm -f "$sock" "$dir/env"' EXIT
  trap 'exit 0' INT TERM
  for i in $(seq 200); do
    curl -fsS --max-time 1 --unix-socket "$sock" http://d/_ping >/dev/null 2>&1 && break
    kill -0 "$svc" 2>/dev/null || { cat "$dir/service.log" >&2; die "podman system service exited"; }
    sleep 0.1
  done
  curl -fsS --max-time 1 --unix-socket "$sock" http://d/_ping >/dev/null 2>&1 || die "the Docker API did not answer on $sock within 20 s"
  env_lines "$dir" > "$dir/env.tmp" && mv "$dir/env.tmp" "$dir/env"
  log "Docker API on unix://$sock (pids: service $svc, healthchecks $hl)"
  wait "$svc"
}

cmd_up() {
  local dir=${1:?usage: engine.sh up DIR} pid i
  mkdir -p "$dir"
  rm -f "$dir/env"
  setsid bash "$SELF" serve "$dir" > "$dir/serve.log" 2>&1 < /dev/null &
  pid=$!
  echo "$pid" > "$dir/serve.pid"
  for i in $(seq 300); do
    [ -f "$dir/env" ] && { cat "$dir/env"; return 0; }
    kill -0 "$pid" 2>/dev/null || { cat "$dir/serve.log" >&2; die "engine serve exited"; }
    sleep 0.1
  done
  cat "$dir/serve.log" >&2
  die "engine serve did not come up within 30 s"
}

cmd_down() {
  local dir=${1:?usage: engine.sh down DIR} pid i
  [ -f "$dir/serve.pid" ] || return 0
  pid=$(cat "$dir/serve.pid")
  kill -TERM "$pid" 2>/dev/null || { rm -f "$dir/serve.pid"; return 0; }
  for i in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/serve.pid"
}

cmd_env() {
  local dir=${1:?usage: engine.sh env DIR}
  [ -f "$dir/env" ] || die "no engine served from $dir (engine.sh up $dir)"
  cat "$dir/env"
}

case "${1:-}" in
  install) shift; cmd_install "$@" ;;
  images) shift; cmd_images "$@" ;;
  serve) shift; cmd_serve "$@" ;;
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  env) shift; cmd_env "$@" ;;
  available) cmd_available ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
