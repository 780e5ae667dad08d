# Stand-in for node:20-bookworm-slim where no image registry is reachable. Debian 12 packages
# Node 18 only, so scripts/engine.sh puts this machine's Node 20 (binary and npm) in the build
# context. As in the official image: user node (uid 1000), npm and npx on the PATH.
ARG BASE_IMAGE=localhost/td-local/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libstdc++6 >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npm --version >/dev/null
# The base carries this machine's CA bundle; Node reads only its own unless told.
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
CMD ["node"]
