import { authFailureVariables, clusterTokenVariable, ConfigError, defineConfig, loadConfig, serviceTokenVariable, tlsConfigVariables, type ConfigOf } from '@duplex/shared';

export const clusterManagerConfigSchema = defineConfig({
  STORAGE_SYSTEM_ID: { type: 'string', pattern: '^[a-z0-9][a-z0-9_-]{0,62}$', default: 'ss1', description: 'The storage system this cluster belongs to.' },
  CLUSTER_ID: { type: 'string', pattern: '^[a-z0-9][a-z0-9_-]{0,62}$', default: 'c0', description: "This cluster's id." },
  CM_HOST: { type: 'string', default: '127.0.0.1', description: 'The address to listen on.' },
  CM_PORT: { type: 'integer', minimum: 0, maximum: 65535, default: 7411, description: 'The port to listen on.' },
  CM_PUBLIC_URL: { type: 'string', format: 'uri', description: 'The URL agents reach this cluster-manager at (default: http://CM_HOST:CM_PORT, https with TLS_CERT_FILE).' },
  DATABASE_URL: { type: 'string', required: true, description: 'The Postgres connection URL.' },
  DRIVER_URL: { type: 'string', format: 'uri', default: 'http://127.0.0.1:7421', description: "The cluster's driver." },
  JOIN_TOKEN: {
    type: 'string',
    required: true,
    pattern: '^[\\x21-\\x2B\\x2D-\\x3C\\x3E-\\x7E]{32,512}$',
    description: "The storage system's join token (as in the servers' JOIN_TOKENS): the agents this cluster-manager launches register with it.",
  },
  CLUSTER_TOKEN: clusterTokenVariable,
  SERVICE_TOKEN: serviceTokenVariable,
  CM_SERVERS: {
    type: 'string',
    pattern: '^[A-Za-z0-9][A-Za-z0-9_-]*=https?://[^,=]+(,[A-Za-z0-9][A-Za-z0-9_-]*=https?://[^,=]+)*$',
    default: 'A=http://127.0.0.1:7401,B=http://127.0.0.1:7402',
    description: 'The servers configured for this cluster, as id=url pairs; one agent is launched for each.',
  },
  AGENT_HOST: { type: 'string', default: '127.0.0.1', description: 'The address agents listen on.' },
  AGENT_PUBLIC_HOST: { type: 'string', description: 'The host name servers reach the agents at (default: AGENT_HOST).' },
  AGENT_RESTART_BASE_MS: { type: 'integer', minimum: 10, maximum: 60_000, default: 100, description: 'The first delay before restarting an agent that exited; it doubles on each quick exit.' },
  AGENT_RESTART_MAX_MS: { type: 'integer', minimum: 10, maximum: 600_000, default: 5000, description: 'The longest delay before restarting an agent.' },
  CLUSTER_LEASE_TTL_MS: {
    type: 'integer',
    minimum: 100,
    maximum: 600_000,
    default: 1000,
    description: "How long this cluster's lease lives without renewal (renewed every third of it). The peer takes the devices over only after it runs out and a health check fails too. Shorter fails over sooner; too short turns a slow database into a false failover.",
  },
  PEER_CHECK_INTERVAL_MS: { type: 'integer', minimum: 10, maximum: 60_000, default: 200, description: "How often the peer cluster's lease is looked at." },
  PEER_HEALTH_TIMEOUT_MS: { type: 'integer', minimum: 10, maximum: 60_000, default: 300, description: "How long the peer cluster-manager's /healthz may take before it counts as failed." },
  AGENT_HEALTH_INTERVAL_MS: { type: 'integer', minimum: 10, maximum: 60_000, default: 500, description: "How often each agent's /healthz is checked." },
  AGENT_HEALTH_FAILURES: {
    type: 'integer',
    minimum: 1,
    maximum: 100,
    default: 3,
    description: 'How many checks in a row an agent may fail (time out) before it counts as hung and is killed and restarted.',
  },
  FAILBACK_AUTO_AFTER_MS: {
    type: 'integer',
    minimum: 0,
    maximum: 86_400_000,
    default: 0,
    description: 'When above 0, a recovering cluster takes its home devices back by itself after being up this long; 0 leaves failback to the API.',
  },
  USAGE_REFRESH_INTERVAL_MS: {
    type: 'integer',
    minimum: 1000,
    maximum: 86_400_000,
    default: 30_000,
    description: "How often the devices' usage (bytes and volumes) is read again. Other changes are stored as soon as the driver's probe finds them.",
  },
  FAULT_DROP_BROADCAST_RATE: {
    type: 'string',
    default: '0',
    pattern: '^(0(\\.[0-9]+)?|1(\\.0*)?|\\.[0-9]+)$',
    description: 'Fault injection: the fraction (0 to 1) of broadcasts to agents that are dropped, to show that agents heal by checking the version on each heartbeat. Keep 0 in production.',
  },
  DRIVER_WAIT_MS: { type: 'integer', minimum: 100, maximum: 600_000, default: 30_000, description: 'How long to wait for the driver at start before giving up.' },
  ...authFailureVariables,
  ...tlsConfigVariables,
});

export interface ConfiguredServer {
  id: string;
  url: string;
}

export type ClusterManagerConfig = ConfigOf<typeof clusterManagerConfigSchema> & {
  CM_PUBLIC_URL: string;
  servers: ConfiguredServer[];
};

export function parseServers(value: string): ConfiguredServer[] {
  const servers = value.split(',').map((pair) => {
    const [id = '', url = ''] = pair.split('=');
    return { id: id.trim(), url: url.trim() };
  });
  const ids = servers.map((server) => server.id);
  if (new Set(ids).size !== ids.length) throw new ConfigError(`invalid configuration: CM_SERVERS names a server twice (${ids.join(', ')})`);
  return servers;
}

export function loadClusterManagerConfig(env: Record<string, string | undefined> = process.env): ClusterManagerConfig {
  const config = loadConfig(clusterManagerConfigSchema, env);
  return {
    ...config,
    CM_PUBLIC_URL: config.CM_PUBLIC_URL ?? `${config.TLS_CERT_FILE ? 'https' : 'http'}://${config.CM_HOST}:${config.CM_PORT}`,
    servers: parseServers(config.CM_SERVERS),
  };
}
