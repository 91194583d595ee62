# operaflow worker image (used by docker-compose.yml): the TypeScript sources run through tsx.
FROM node:20-bookworm-slim
WORKDIR /app

# onnxruntime-node's installer would download CUDA libraries; the CPU provider ships in the package.
ENV ONNXRUNTIME_NODE_INSTALL=skip
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

COPY . .
# Artifacts go to .operaflow/artifacts (a volume in docker-compose.yml); the worker runs unprivileged.
RUN mkdir -p .operaflow/artifacts && chown -R node:node .operaflow
USER node

CMD ["npx", "tsx", "scripts/operaflow.ts", "worker"]
