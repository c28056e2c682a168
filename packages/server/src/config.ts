import { authFailureVariables, defineConfig, loadConfig, secretPattern, serviceTokenVariable, tlsConfigVariables, type ConfigOf } from '@duplex/shared';

export const serverConfigSchema = defineConfig({
  SERVER_ID: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$', default: 'A', description: "This server's id; agents register with it by this id." },
  SERVER_HOST: { type: 'string', default: '127.0.0.1', description: 'The address to listen on.' },
  SERVER_PORT: { type: 'integer', minimum: 0, maximum: 65535, default: 7401, description: 'The port to listen on.' },
  SERVER_PUBLIC_URL: { type: 'string', format: 'uri', description: 'The URL others reach this server at (default: http://SERVER_HOST:SERVER_PORT, https with TLS_CERT_FILE).' },
  DATABASE_URL: { type: 'string', required: true, description: 'The Postgres connection URL.' },
  DATABASE_POOL_MAX: { type: 'integer', minimum: 1, maximum: 200, default: 10, description: 'Postgres connections this server may open.' },
  AGENT_LEASE_TTL_MS: {
    type: 'integer',
    minimum: 100,
    maximum: 600_000,
    default: 3000,
    description: 'How long an agent registration lives without a heartbeat; its attempts go back to the queue when it runs out. It bounds how long a hung agent holds work; shorter risks taking work from an agent that is only slow.',
  },
  AGENT_HEARTBEAT_INTERVAL_MS: { type: 'integer', minimum: 50, maximum: 300_000, default: 1000, description: 'How often agents are told to heartbeat.' },
  SERVER_LEASE_TTL_MS: {
    type: 'integer',
    minimum: 100,
    maximum: 600_000,
    default: 1500,
    description: "How long this server's lease lives without renewal (renewed every third of it). When it runs out, another server adopts this one's open tasks. Shorter fails over sooner; too short lets a GC pause or a slow database look like a crash.",
  },
  AGENT_GRACE_MS: {
    type: 'integer',
    minimum: 0,
    maximum: 600_000,
    default: 1000,
    description: "How long after losing its agent in a cluster (lease run out) this server waits for it to come back before handing that cluster's queued tasks to another server's agent.",
  },
  FAILOVER_CHECK_INTERVAL_MS: { type: 'integer', minimum: 10, maximum: 60_000, default: 200, description: 'How often lost agents, lost servers and hand-overs are looked for.' },
  DISPATCH_BATCH_SIZE: { type: 'integer', minimum: 1, maximum: 1000, default: 500, description: 'The most tasks claimed and sent in one dispatch round.' },
  DISPATCH_RETRY_MS: { type: 'integer', minimum: 10, maximum: 60_000, default: 500, description: 'How long an agent that refused or missed a dispatch is skipped.' },
  IDEMPOTENCY_KEY_TTL_HOURS: { type: 'integer', minimum: 1, maximum: 8760, default: 24, description: 'How long an Idempotency-Key is remembered.' },
  ADMIN_TOKEN: {
    type: 'string',
    pattern: secretPattern,
    description:
      'An admin API token (32 to 512 visible ASCII characters) this server accepts and records (hashed) at start, to create the other tokens with. Without it, a server that finds no admin token in the database creates one and prints it once on standard error.',
  },
  SERVICE_TOKEN: serviceTokenVariable,
  JOIN_TOKENS: {
    type: 'string',
    pattern: '^(\\*|[A-Za-z0-9][A-Za-z0-9_-]{0,62})=[\\x21-\\x2B\\x2D-\\x3C\\x3E-\\x7E]{32,512}(,(\\*|[A-Za-z0-9][A-Za-z0-9_-]{0,62})=[\\x21-\\x2B\\x2D-\\x3C\\x3E-\\x7E]{32,512})*$',
    description:
      "The join token of each storage system, as `ss1=<token>,ss2=<token>` (32 to 512 visible characters, no comma or equals sign); `*=<token>` serves the storage systems not named. An agent registers only with its storage system's token; a storage system without one takes no agents.",
  },
  AGENT_CREDENTIAL_TTL_MS: {
    type: 'integer',
    minimum: 60_000,
    maximum: 31_536_000_000,
    default: 86_400_000,
    description: "How long an agent's credential lives. A heartbeat past half of it gives the agent a new one; an agent whose credential expired registers again.",
  },
  ...authFailureVariables,
  TOKEN_CACHE_MS: { type: 'integer', minimum: 0, maximum: 60_000, default: 2000, description: "How long a token's check is reused; a revoked token stops working on every server within this time." },
  ...tlsConfigVariables,
});

export type ServerConfig = ConfigOf<typeof serverConfigSchema> & { SERVER_PUBLIC_URL: string };

export function loadServerConfig(env: Record<string, string | undefined> = process.env): ServerConfig {
  const config = loadConfig(serverConfigSchema, env);
  return {
    ...config,
    SERVER_PUBLIC_URL: config.SERVER_PUBLIC_URL ?? `${config.TLS_CERT_FILE ? 'https' : 'http'}://${config.SERVER_HOST}:${config.SERVER_PORT}`,
  };
}
