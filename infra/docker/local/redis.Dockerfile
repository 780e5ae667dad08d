# Stand-in for redis:7.4-alpine where no image registry is reachable: Debian's redis-server on
# the base that scripts/engine.sh makes with debootstrap. Runs as the unprivileged user redis.
ARG BASE_IMAGE=localhost/td-local/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
USER redis
# No EXPOSE: podman 4.3 reports an exposed port that a test did not publish as bound to null,
# and testcontainers then waits for it forever. Compose and the tests publish what they use.
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
