# syntax=docker/dockerfile:1
# The gateway image, built from the repository root:
#   docker build -f infra/docker/gateway.Dockerfile -t traffic-dam/gateway .
# Stage 1 compiles with the dev toolchain (tsc + esbuild); stage 2 carries only the bundle and
# the production dependencies, and runs as an unprivileged user.
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY tsconfig.base.json ./
COPY apps/gateway ./apps/gateway
COPY libs/ai-bridge ./libs/ai-bridge
COPY libs/dam ./libs/dam
COPY libs/redis-script ./libs/redis-script
RUN node apps/gateway/scripts/build.mjs
# The dead-letter CLI (npm run dlq in a checkout), bundled so operators can run it in the container:
#   docker compose exec gateway node dist/dlq.js list
RUN npx esbuild apps/gateway/src/cli/dlq.ts --bundle --platform=node --target=node20 --format=cjs \
      --packages=external --tsconfig=apps/gateway/tsconfig.json --log-level=warning \
      --outfile=dist/apps/gateway/dlq.js

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# npm packages stay outside the bundle (esbuild packages: 'external'), so production needs them.
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error && npm cache clean --force

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000
WORKDIR /app
COPY --from=deps --chown=root:root /app/node_modules ./node_modules
COPY --from=build --chown=root:root /src/dist/apps/gateway ./dist
COPY --chown=root:root package.json ./
# The code is owned by root and read-only to the process; it needs no writable path.
USER node
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/health/live').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# SIGTERM starts the graceful drain; run under an init (compose: init: true) so signals reach node.
STOPSIGNAL SIGTERM
CMD ["node", "--enable-source-maps", "dist/main.js"]
