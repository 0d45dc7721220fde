# Fabric registry service. Build from the repository root:
#   docker build -f deploy/docker/registry.Dockerfile -t fabric-registry .
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
COPY proto/package.json proto/
COPY platform/package.json platform/
COPY services/registry/package.json services/registry/
RUN npm ci --omit=dev --ignore-scripts --workspace @fabric/registry --include-workspace-root=false
COPY proto/gen proto/gen
COPY platform/src platform/src
COPY platform/migrations platform/migrations
COPY services/registry/src services/registry/src
COPY services/registry/migrations services/registry/migrations

FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    FABRIC_HOST=0.0.0.0 \
    FABRIC_GRPC_PORT=7402 \
    FABRIC_HTTP_PORT=7412 \
    FABRIC_IDENTITY_DIR=/var/lib/fabric/identity
WORKDIR /app
COPY --from=build --chown=root:root /app /app
RUN mkdir -p /var/lib/fabric/identity && chown -R node:node /var/lib/fabric
USER node
EXPOSE 7402 7412
HEALTHCHECK --interval=10s --timeout=3s CMD node -e "fetch('http://127.0.0.1:'+process.env.FABRIC_HTTP_PORT+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "--import", "tsx", "services/registry/src/main.ts"]
