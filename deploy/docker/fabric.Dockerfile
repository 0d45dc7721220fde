# The fabric CLI, for one-off jobs next to the services: `fabric ca init` before the first start (the
# compose file's ca-init), admin commands with a mounted identity, `fabric dev init` on a build machine.
# Build from the repository root:  docker build -f deploy/docker/fabric.Dockerfile -t fabric/fabric:0.1.0 .
FROM node:20-bookworm-slim AS build
WORKDIR /app
# Every workspace manifest: npm ci installs from the one lockfile, which lists them all.
COPY package.json package-lock.json ./
COPY proto/package.json proto/
COPY platform/package.json platform/
COPY services/ca/package.json services/ca/
COPY services/enrollment/package.json services/enrollment/
COPY services/registry/package.json services/registry/
COPY services/router/package.json services/router/
COPY agent/package.json agent/
COPY cli/package.json cli/
COPY test/package.json test/
COPY bench/package.json bench/
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund
COPY proto/gen proto/gen
COPY platform/src platform/src
COPY platform/migrations platform/migrations
COPY services/ca/src services/ca/src
COPY services/ca/migrations services/ca/migrations
COPY services/enrollment/src services/enrollment/src
COPY services/enrollment/migrations services/enrollment/migrations
COPY services/registry/src services/registry/src
COPY services/registry/migrations services/registry/migrations
COPY services/router/src services/router/src
COPY services/router/migrations services/router/migrations
COPY cli/src cli/src
COPY cli/bin cli/bin

FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    FABRIC_HOME=/var/lib/fabric/home
WORKDIR /app
COPY --from=build /app /app
RUN mkdir -p /var/lib/fabric/home /var/lib/fabric/ca /var/lib/fabric/trust && chown -R node:node /var/lib/fabric
USER node
ENTRYPOINT ["node", "cli/bin/fabric.mjs"]
CMD ["--help"]
