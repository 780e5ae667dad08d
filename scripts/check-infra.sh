#!/usr/bin/env bash
# Checks infra/ statically, without a container engine: the compose file with Debian's
# docker-compose, every image a variable with its public default, Prometheus config and alert
# rules with promtool (syntax and unit tests), the compose nginx config with nginx -t, the
# Dockerfiles' COPY sources, and the dashboard's datasources. The stack itself on the engine is
# apps/gateway-e2e/src/compose.e2e-spec.ts; that every metric the dashboard and rules name is
# exported by a live gateway, and that Prometheus scrapes it, is observability.e2e-spec.ts.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin"

echo "-- docker-compose config (infra/compose/docker-compose.yml)"
resolved=$(mktemp)
trap 'rm -f "$resolved"; rm -rf "${ngx:-}"' EXIT
docker-compose -f infra/compose/docker-compose.yml --env-file infra/compose/.env.example config > "$resolved"
# What --scale and the seed's limits rely on, read from the resolved file.
# Debian's python3 with python3-yaml comes with the docker-compose package.
/usr/bin/python3 - "$resolved" <<'PY'
import re, sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
problems = []
def need(ok, msg):
    if not ok: problems.append(msg)
s = c.get("services", {})
for name in ["redis", "gateway", "ai-worker", "nginx", "prometheus", "grafana", "loki", "alloy"]:
    need(name in s, f"service {name} missing")
gw = s.get("gateway", {})
need("container_name" not in gw and "ports" not in gw, "gateway must have no container_name and no host ports (docker compose --scale gateway=N)")
need(str(gw.get("mem_limit")).lower() == "512m", "gateway mem_limit must be 512m")
nofile = gw.get("ulimits", {}).get("nofile", {})
need(isinstance(nofile, dict) and nofile.get("soft") == 65535 and nofile.get("hard") == 65535, "gateway nofile must be 65535")
need(re.fullmatch(r"redis://:[^@]+@redis:6379", gw.get("environment", {}).get("REDIS_URL", "")), "gateway REDIS_URL must carry the Redis password")
redis = s.get("redis", {})
cmd = " ".join(redis.get("command", []) if isinstance(redis.get("command"), list) else [str(redis.get("command", ""))])
need(str(redis.get("mem_limit")).lower() == "512m", "redis mem_limit must be 512m")
need("--maxmemory-policy noeviction" in cmd, "redis must never evict (noeviction): the dam keys live there")
need("--requirepass" in cmd and redis.get("environment", {}).get("REDIS_PASSWORD"), "redis must require a password")
need("ports" not in redis, "redis must not be published on the host")
need("ports" not in s.get("ai-worker", {}), "the worker (admin endpoints) must not be published on the host")
for name in ["prometheus", "grafana"]:
    for p in s.get(name, {}).get("ports", []):
        host = p if isinstance(p, str) else p.get("host_ip", "")
        need(str(host).startswith("127.0.0.1"), f"{name} must be published on 127.0.0.1 only")
# Grafana loads the dashboard from where compose mounts it.
mounts = {}
for v in s.get("grafana", {}).get("volumes", []):
    src, dst = (v.split(":")[:2] if isinstance(v, str) else (v.get("source", ""), v.get("target", "")))
    mounts[src.rstrip("/").split("/infra/")[-1]] = dst
provider = yaml.safe_load(open("infra/grafana/provisioning/dashboards/dashboards.yml"))["providers"][0]["options"]["path"]
need(mounts.get("grafana/dashboards") == provider, f"grafana mounts the dashboards at {mounts.get('grafana/dashboards')} but loads them from {provider}")
need(mounts.get("grafana/provisioning") == "/etc/grafana/provisioning", "grafana/provisioning must be mounted at /etc/grafana/provisioning")
if problems:
    print("\n".join("  - " + p for p in problems), file=sys.stderr)
    sys.exit(1)
print("   compose: ok")
PY

echo "-- every image is a variable with its public default (a registry-less machine passes its own)"
grep -nE '^\s*image:' infra/compose/docker-compose.yml | grep -vE 'image: \$\{[A-Z_]+_IMAGE:-[^}]+\}$' \
  && { echo "docker-compose.yml: an image above is not \${NAME_IMAGE:-public/default}" >&2; exit 1; }
for f in infra/docker/*.Dockerfile infra/docker/local/*.Dockerfile; do
  # FROM ${X_IMAGE} [AS stage], or FROM an earlier stage.
  awk '/^FROM / { ok = ($2 ~ /^\$\{[A-Z_]+_IMAGE\}$/) || ($2 in stage); if ($3 == "AS") stage[$4] = 1
                  if (!ok) { print FILENAME ":" FNR ": " $0 " (not an ARG image)"; bad = 1 } }
       END { exit bad }' "$f" >&2 || exit 1
  grep -qE '^ARG [A-Z_]+_IMAGE=' "$f" || { echo "$f: no ARG NAME_IMAGE=<default>" >&2; exit 1; }
done
echo "   images: ok"

echo "-- promtool"
promtool check config infra/prometheus/prometheus.yml
promtool check rules infra/prometheus/alerts.yml
(cd infra/prometheus && promtool test rules alerts.test.yml)

echo "-- nginx -t (infra/compose/nginx.conf)"
# Debian's nginx (1.22) predates the upstream `resolve` parameter (1.27.3, in the compose image)
# and Docker's DNS name; everything else is checked as written.
ngx=$(mktemp -d)
sed -e 's/ resolve / /' -e 's/server gateway:3000/server 127.0.0.1:3000/' -e 's/resolver 127.0.0.11 /resolver 127.0.0.1 /' \
  -e "s#pid /tmp/nginx.pid#pid $ngx/nginx.pid#" infra/compose/nginx.conf > "$ngx/nginx.conf"
grep -q 'server gateway:3000 resolve' infra/compose/nginx.conf || { echo "nginx.conf: the upstream must re-resolve gateway (resolve)" >&2; exit 1; }
nginx -t -q -p "$ngx" -c "$ngx/nginx.conf"
echo "   nginx: ok"

echo "-- HTTPS at the compose edge (docker-compose.tls.yml, infra/compose/tls.conf)"
docker-compose -f infra/compose/docker-compose.yml -f infra/compose/docker-compose.tls.yml --env-file infra/compose/.env.example config -q
mkdir -p "$ngx/td-tls" "$ngx/certs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -keyout "$ngx/certs/tls.key" -out "$ngx/certs/tls.crt" 2>/dev/null
sed "s#/etc/nginx/certs/#$ngx/certs/#" infra/compose/tls.conf > "$ngx/td-tls/tls.conf"
sed "s#include /etc/nginx/td-tls/#include $ngx/td-tls/#" "$ngx/nginx.conf" > "$ngx/nginx-tls.conf"
grep -q "include $ngx/td-tls/\*.conf;" "$ngx/nginx-tls.conf" || { echo "nginx.conf: the server must include /etc/nginx/td-tls/*.conf (the optional HTTPS listener)" >&2; exit 1; }
nginx -t -q -p "$ngx" -c "$ngx/nginx-tls.conf"
echo "   nginx with TLS: ok"

echo "-- Dockerfiles: every COPY source exists"
for f in infra/docker/*.Dockerfile; do
  grep -E '^COPY ' "$f" | grep -v -- '--from=' | sed -E 's/^COPY( --[^ ]+)* //' | while read -r line; do
    set -- $line
    while [ $# -gt 1 ]; do
      [ -e "$1" ] || { echo "$f: COPY source $1 does not exist" >&2; exit 1; }
      shift
    done
  done
done
echo "   dockerfiles: ok"

echo "-- Grafana: the dashboard parses and uses the provisioned datasources"
/usr/bin/python3 - <<'PY'
import json, sys, yaml
ds = [d["uid"] for d in yaml.safe_load(open("infra/grafana/provisioning/datasources/datasources.yml"))["datasources"]]
dash = json.load(open("infra/grafana/dashboards/traffic-dam.json"))
bad = set()
def walk(o):
    if isinstance(o, list):
        for x in o: walk(x)
    elif isinstance(o, dict):
        d = o.get("datasource")
        if isinstance(d, dict) and d.get("uid") and not d["uid"].startswith("--") and d["uid"] not in ds:
            bad.add(d["uid"])
        for x in o.values(): walk(x)
walk(dash["panels"])
if bad:
    sys.exit("unknown datasource uids: " + ", ".join(sorted(bad)))
print(f"   dashboard: {len(dash['panels'])} panels, ok")
PY
echo "check-infra: ok"
