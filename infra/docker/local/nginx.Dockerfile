# Stand-in for nginx:1.28-alpine where no image registry is reachable: Debian's nginx-light
# (1.22, which lacks the upstream `resolve` flag; scripts/engine.sh renders a config without it).
# Runs unprivileged: the compose config listens on 8080 and keeps its pid and temp files in /tmp.
ARG BASE_IMAGE=localhost/td-local/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && chown -R www-data:www-data /var/log/nginx /var/lib/nginx
USER www-data
STOPSIGNAL SIGQUIT
CMD ["nginx", "-e", "stderr", "-g", "daemon off;"]
