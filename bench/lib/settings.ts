/**
 * The timing settings that decide a benchmark's figures, as the processes will read them: the
 * services' own config schemas (their defaults and validation) applied to the environment
 * the harness hands every process (this process's environment plus the harness `env`).
 *
 * The schemas are imported from the packages' sources, not copied, so this table cannot
 * drift from the code.
 */
import { loadConfig, type ConfigSchema } from '@duplex/shared';
import { agentConfigSchema } from '../../packages/agent/src/config.ts';
import { clusterManagerConfigSchema } from '../../packages/cluster-manager/src/config.ts';
import { driverConfigSchema } from '../../packages/driver/src/config.ts';
import { serverConfigSchema } from '../../packages/server/src/config.ts';

export interface TimingSetting {
  name: string;
  /** The process that reads it. */
  process: Role | 'constant';
  value: number;
  default: number | undefined;
  /** Set in the environment rather than left at its default. */
  overridden: boolean;
  description: string;
}

/**
 * An agent that ran at least this long before it exited is restarted at once; one that
 * exits sooner is restarted after a backoff. A constant (`stableRunMs`) in
 * packages/cluster-manager/src/services/agent-supervisor.ts, not a setting: the benchmark
 * waits until the agent it is about to kill has run this long, so that every trial measures
 * the restart of a healthy, long-running agent and not the crash-loop backoff.
 */
export const AGENT_STABLE_RUN_MS = 10_000;

type Role = 'server' | 'cluster-manager' | 'agent' | 'driver';

/** The settings on the failover paths, by the process that reads them. */
const failoverKeys: Partial<Record<Role, string[]>> = {
  server: ['AGENT_LEASE_TTL_MS', 'AGENT_HEARTBEAT_INTERVAL_MS', 'AGENT_GRACE_MS', 'SERVER_LEASE_TTL_MS', 'FAILOVER_CHECK_INTERVAL_MS', 'DISPATCH_RETRY_MS'],
  'cluster-manager': [
    'AGENT_HEALTH_INTERVAL_MS',
    'AGENT_HEALTH_FAILURES',
    'AGENT_RESTART_BASE_MS',
    'AGENT_RESTART_MAX_MS',
    'CLUSTER_LEASE_TTL_MS',
    'PEER_CHECK_INTERVAL_MS',
    'PEER_HEALTH_TIMEOUT_MS',
  ],
  agent: ['REGISTER_RETRY_MAX_MS', 'DRIVER_RETRY_MAX_MS'],
};

/** The settings on the path of a device change from the driver's probe to every server. */
export const propagationKeys: Partial<Record<Role, string[]>> = {
  driver: ['DRIVER_PROBE_INTERVAL_MS'],
  server: ['AGENT_HEARTBEAT_INTERVAL_MS'],
};

const schemas: Record<Role, ConfigSchema> = {
  server: serverConfigSchema,
  'cluster-manager': clusterManagerConfigSchema,
  agent: agentConfigSchema,
  driver: driverConfigSchema,
};

/** Values for the variables each schema requires but that do not matter here. */
const placeholders: Record<string, string> = {
  DATABASE_URL: 'postgres://placeholder/placeholder',
  AGENT_NAME: 'placeholder',
  SERVER_ID: 'A',
  SERVER_URL: 'http://127.0.0.1:1',
  STORAGE_SYSTEM_ID: 'ss1',
  CLUSTER_ID: 'c0',
  DRIVER_URL: 'http://127.0.0.1:1',
  CLUSTER_MANAGER_URL: 'http://127.0.0.1:1',
  // Required secrets, to read the timing settings beside them; nothing uses them here.
  JOIN_TOKEN: 'x'.repeat(32),
  CLUSTER_TOKEN: 'x'.repeat(32),
  SERVICE_TOKEN: 'x'.repeat(32),
};

/** The named settings as each process would read them from `env`. */
export function readSettings(env: Record<string, string | undefined>, keys: Partial<Record<Role, string[]>>): TimingSetting[] {
  const settings: TimingSetting[] = [];
  for (const [role, names] of Object.entries(keys) as [Role, string[]][]) {
    const schema = schemas[role];
    const loaded = loadConfig(schema, { ...placeholders, ...env }) as Record<string, unknown>;
    for (const name of names) {
      const variable = schema[name];
      if (!variable) throw new Error(`the ${role} has no setting ${name}; update bench/lib/settings.ts`);
      const value = loaded[name];
      if (typeof value !== 'number') throw new Error(`the ${role} setting ${name} is not a number: ${String(value)}`);
      settings.push({
        name,
        process: role,
        value,
        default: typeof variable.default === 'number' ? variable.default : undefined,
        overridden: env[name] !== undefined && env[name] !== '',
        description: variable.description,
      });
    }
  }
  return settings;
}

/** The failover benchmark's settings, and the constant its agent faults wait for. */
export function timingSettings(env: Record<string, string | undefined>): TimingSetting[] {
  const settings = readSettings(env, failoverKeys);
  settings.push({
    name: 'stableRunMs',
    process: 'constant',
    value: AGENT_STABLE_RUN_MS,
    default: AGENT_STABLE_RUN_MS,
    overridden: false,
    description: 'An agent that ran this long before exiting is restarted without backoff (agent-supervisor.ts).',
  });
  return settings;
}

export function settingValue(settings: TimingSetting[], name: string): number {
  const setting = settings.find((candidate) => candidate.name === name);
  if (!setting) throw new Error(`no timing setting ${name}`);
  return setting.value;
}
