import type { DeviceLabel } from './device-store.ts';
import { createExecutor, type FaultInjection } from './executor.ts';
import { createFileStore } from './file-store.ts';
import { createMemoryStore } from './memory-store.ts';
import type { DriverBackend } from './types.ts';

export type BackendOptions =
  | { kind: 'file'; deviceRoot: string }
  | { kind: 'memory'; devices: readonly DeviceLabel[]; faults?: FaultInjection };

/** The driver's backend: the one executor over the store the options name. */
export function createBackend(options: BackendOptions): DriverBackend {
  if (options.kind === 'file') return createExecutor(createFileStore(options.deviceRoot));
  return createExecutor(createMemoryStore(options.devices), { faults: options.faults ?? {} });
}
