import { authFailureVariables, clusterTokenVariable, ConfigError, defineConfig, tlsConfigVariables, type ConfigOf } from '@duplex/shared';
import type { BackendOptions } from './lib/backend.ts';
import { parseMemoryDevices } from './lib/memory-store.ts';

const idPattern = '^[a-z0-9][a-z0-9_-]{0,62}$';

export const driverConfigSchema = defineConfig({
  DRIVER_HOST: { type: 'string', default: '127.0.0.1', description: 'The address the driver listens on.' },
  DRIVER_PORT: { type: 'integer', default: 7421, minimum: 0, maximum: 65535, description: 'The port the driver listens on.' },
  STORAGE_SYSTEM_ID: {
    type: 'string',
    default: 'ss1',
    pattern: idPattern,
    description: 'The storage system whose devices this driver works on (named in every log line).',
  },
  DRIVER_CLUSTER_ID: {
    type: 'string',
    default: 'c0',
    pattern: idPattern,
    description: 'The cluster this driver belongs to (named in every log line).',
  },
  CLUSTER_TOKEN: clusterTokenVariable,
  DRIVER_BACKEND: {
    type: 'string',
    enum: ['file', 'memory'],
    default: 'file',
    description: '`file`: devices are directories and volumes sparse files; `memory`: devices in memory, with fault injection.',
  },
  DRIVER_DEVICE_ROOT: {
    type: 'string',
    default: '.duplex/devices/ss1',
    description: 'file backend: the directory holding one directory per device.',
  },
  DRIVER_MEMORY_DEVICES: {
    type: 'string',
    default: 'd0:c0:1073741824,d1:c1:1073741824',
    pattern: '^[^,:]+:[^,:]+:[0-9]+(,[^,:]+:[^,:]+:[0-9]+)*$',
    description: 'memory backend: the devices, as comma-separated id:home_cluster:capacity_bytes.',
  },
  DRIVER_PROBE_INTERVAL_MS: {
    type: 'integer',
    default: 500,
    minimum: 10,
    maximum: 3_600_000,
    description: 'How often the devices are probed for changes (gone, back, new, marked FAILED, capacity). A change reaches the servers within about this long.',
  },
  DRIVER_FAULT_LATENCY_MS: {
    type: 'integer',
    default: 0,
    minimum: 0,
    maximum: 600_000,
    description: 'memory backend: milliseconds added to every execution.',
  },
  DRIVER_FAULT_FAILURE_RATE: {
    type: 'string',
    default: '0',
    pattern: '^(0(\\.[0-9]+)?|1(\\.0*)?|\\.[0-9]+)$',
    description: 'memory backend: the fraction (0 to 1) of executions that fail with an injected device-unavailable problem.',
  },
  ...authFailureVariables,
  ...tlsConfigVariables,
});

export type DriverConfig = ConfigOf<typeof driverConfigSchema>;

/** The backend the configuration names; a bad device list is a ConfigError (one clear line at start). */
export function backendOptionsFromConfig(config: DriverConfig): BackendOptions {
  if (config.DRIVER_BACKEND === 'file') return { kind: 'file', deviceRoot: config.DRIVER_DEVICE_ROOT };
  let devices;
  try {
    devices = parseMemoryDevices(config.DRIVER_MEMORY_DEVICES);
  } catch (error) {
    throw new ConfigError(`invalid configuration: DRIVER_MEMORY_DEVICES ${(error as Error).message}`);
  }
  return {
    kind: 'memory',
    devices,
    faults: { latencyMs: config.DRIVER_FAULT_LATENCY_MS, failureRate: Number(config.DRIVER_FAULT_FAILURE_RATE) },
  };
}
