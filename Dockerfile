# One image for every duplex service; the command picks the service.
FROM node:20-bookworm-slim
WORKDIR /duplex
RUN npm install -g pnpm@12.4.2
COPY package.json pnpm-lock.yaml pnpm-workspace.yaml ./
# Fixes to dependencies that pnpm applies at install (see each patch's comment).
COPY patches ./patches
COPY packages ./packages
COPY test/package.json ./test/package.json
COPY bench/package.json ./bench/package.json
RUN pnpm install --frozen-lockfile
COPY . .
ENV NODE_ENV=production
CMD ["node", "--import", "tsx", "packages/cli/src/main.ts", "--help"]
