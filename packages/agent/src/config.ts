import { authFailureVariables, clusterTokenVariable, defineConfig, loadConfig, tlsConfigVariables, type ConfigOf } from '@duplex/shared';

export const agentConfigSchema = defineConfig({
  AGENT_NAME: { type: 'string', required: true, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$', description: "The agent's name in its cluster (the cluster-manager sets it)." },
  SERVER_ID: { type: 'string', required: true, description: 'The id of the server this agent serves.' },
  JOIN_TOKEN: {
    type: 'string',
    required: true,
    pattern: '^[\\x21-\\x2B\\x2D-\\x3C\\x3E-\\x7E]{32,512}$',
    description: "The join token of the agent's storage system, which its registration must carry (its cluster-manager passes its own JOIN_TOKEN).",
  },
  CLUSTER_TOKEN: clusterTokenVariable,
  SERVER_URL: { type: 'string', required: true, format: 'uri', description: 'Where that server is.' },
  STORAGE_SYSTEM_ID: { type: 'string', required: true, description: "The agent's storage system." },
  CLUSTER_ID: { type: 'string', required: true, description: "The agent's cluster." },
  DRIVER_URL: { type: 'string', required: true, format: 'uri', description: "The cluster's driver." },
  CLUSTER_MANAGER_URL: { type: 'string', required: true, format: 'uri', description: "The cluster's cluster-manager." },
  AGENT_HOST: { type: 'string', default: '127.0.0.1', description: 'The address to listen on.' },
  AGENT_PORT: { type: 'integer', minimum: 0, maximum: 65535, default: 0, description: 'The port to listen on (0: any free port).' },
  AGENT_PUBLIC_HOST: { type: 'string', description: 'The host name the server reaches this agent at (default: AGENT_HOST).' },
  REGISTER_RETRY_MAX_MS: { type: 'integer', minimum: 10, maximum: 60_000, default: 2000, description: 'The longest wait between registration attempts while the server is down.' },
  DRIVER_RETRY_MAX_MS: { type: 'integer', minimum: 10, maximum: 60_000, default: 2000, description: 'The longest wait between attempts to reach the driver.' },
  ...authFailureVariables,
  ...tlsConfigVariables,
});

export type AgentConfig = ConfigOf<typeof agentConfigSchema>;

export function loadAgentConfig(env: Record<string, string | undefined> = process.env): AgentConfig {
  return loadConfig(agentConfigSchema, env);
}
