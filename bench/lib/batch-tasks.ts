/**
 * The tasks of one batch, the same for duplex, the floor and the peer: `volume.create` requests
 * of 4 KiB with names unique in the run, spread over every device of the topology in turn, so
 * each batch sends work to both clusters and no device fills up.
 */
import type { TaskRequest } from './api.ts';
import { volumeSizeBytes } from './task-load.ts';

export interface BatchShape {
  /** Names the run's volumes and keys, so that runs never collide. */
  prefix: string;
  storageSystemId: string;
  devices: readonly string[];
  /** Tasks per batch. */
  size: number;
}

/** Batch `sequence` of client `client`: its Idempotency-Key and its tasks. */
export function batchOf(shape: BatchShape, client: number, sequence: number): { key: string; tasks: TaskRequest[] } {
  const key = `${shape.prefix}-${client}-${sequence}`;
  const tasks = Array.from({ length: shape.size }, (_, index): TaskRequest => ({
    kind: 'volume.create',
    storage_system_id: shape.storageSystemId,
    device: shape.devices[index % shape.devices.length]!,
    params: { name: `${key}-${index}`, size_bytes: volumeSizeBytes },
  }));
  return { key, tasks };
}
