import { hash } from 'node:crypto';
import type { ServerApi } from '@duplex/contracts';
import type { InventoryView } from './inventory-view.ts';

export type TaskRequest = ServerApi.components['schemas']['TaskRequest'];
export type TaskKind = ServerApi.components['schemas']['TaskKind'];
export type TaskState = ServerApi.components['schemas']['TaskState'];
export type TaskParams = ServerApi.components['schemas']['TaskParams'];

export const terminalStates: readonly TaskState[] = ['succeeded', 'failed', 'cancelled'];
export const openStates: readonly TaskState[] = ['queued', 'dispatched', 'running'];

const transitions: Record<TaskState, readonly TaskState[]> = {
  queued: ['dispatched', 'cancelled'],
  dispatched: ['running', 'succeeded', 'failed', 'queued'],
  running: ['succeeded', 'failed', 'queued'],
  succeeded: [],
  failed: [],
  cancelled: [],
};

export const canTransition = (from: TaskState, to: TaskState): boolean => transitions[from].includes(to);

/**
 * JSON with sorted keys, so that the same body always hashes the same. Undefined properties are
 * left out and undefined array items written as null, as JSON.stringify does. Plain loops: it
 * runs for every task submitted, a thousand times per batch.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) {
    let json = '[';
    for (let index = 0; index < value.length; index++) json += `${index > 0 ? ',' : ''}${value[index] === undefined ? 'null' : canonicalJson(value[index])}`;
    return `${json}]`;
  }
  const object = value as Record<string, unknown>;
  let json = '';
  // sort() orders by UTF-16 code units, as comparing the strings with < does.
  for (const key of Object.keys(object).sort()) {
    if (object[key] === undefined) continue;
    json += `${json === '' ? '' : ','}${JSON.stringify(key)}:${canonicalJson(object[key])}`;
  }
  return `{${json}}`;
}

export const requestHash = (request: TaskRequest): string => hash('sha256', canonicalJson(request), 'hex');

export interface VolumeRef {
  device: string;
  name: string;
}

/**
 * What a task needs of the volume catalog when it is submitted: volumes that must exist
 * (and are marked as being deleted, for a delete), and names it reserves.
 */
export interface SubmitCatalogEffect {
  mustExist?: VolumeRef;
  markDeleting?: boolean;
  reserve?: VolumeRef & { sizeBytes: number };
  /** Devices whose capacity the requested size must fit. */
  sizeOnDevice?: { device: string; sizeBytes: number };
}

export function submitCatalogEffect(request: TaskRequest): SubmitCatalogEffect {
  switch (request.kind) {
    case 'volume.create':
      return {
        reserve: { device: request.device, name: request.params.name, sizeBytes: request.params.size_bytes },
        sizeOnDevice: { device: request.device, sizeBytes: request.params.size_bytes },
      };
    case 'volume.delete':
      return { mustExist: { device: request.device, name: request.params.name }, markDeleting: true };
    case 'volume.resize':
      return {
        mustExist: { device: request.device, name: request.params.name },
        sizeOnDevice: { device: request.device, sizeBytes: request.params.size_bytes },
      };
    case 'volume.copy':
      return {
        mustExist: { device: request.device, name: request.params.name },
        reserve: { device: request.params.target_device ?? request.device, name: request.params.target_name, sizeBytes: 0 },
      };
    case 'device.format':
    case 'device.probe':
      return {};
  }
}

/** The devices a task touches: its target, and a copy's target device. */
export function devicesOf(request: { device: string; params?: TaskRequest['params'] | TaskParams }): string[] {
  const params = (request.params ?? {}) as TaskParams;
  return params.target_device && params.target_device !== request.device ? [request.device, params.target_device] : [request.device];
}

export type Outcome = 'succeeded' | 'failed' | 'cancelled';

/** How the catalog follows a task that ended. */
export type SettleAction =
  | { action: 'confirm-reserved'; taskId: string; sizeBytes?: number }
  | { action: 'release-reserved'; taskId: string }
  | { action: 'remove'; volume: VolumeRef }
  | { action: 'restore'; volume: VolumeRef }
  | { action: 'resize'; volume: VolumeRef; sizeBytes: number }
  | { action: 'clear-device'; device: string; taskId: string };

export interface SettledTask {
  id: string;
  kind: TaskKind;
  device: string;
  params: TaskParams;
  result?: { volume?: { size_bytes: number } } | null;
}

export function settleCatalogActions(task: SettledTask, outcome: Outcome, errorCode?: string): SettleAction[] {
  const volume = { device: task.device, name: task.params.name ?? '' };
  const ok = outcome === 'succeeded';
  switch (task.kind) {
    case 'volume.create':
      return [ok ? { action: 'confirm-reserved', taskId: task.id } : { action: 'release-reserved', taskId: task.id }];
    case 'volume.copy':
      if (ok) return [{ action: 'confirm-reserved', taskId: task.id, sizeBytes: task.result?.volume?.size_bytes ?? 0 }];
      return [{ action: 'release-reserved', taskId: task.id }, ...(errorCode === 'volume-not-found' ? [{ action: 'remove' as const, volume }] : [])];
    case 'volume.delete':
      return [ok || errorCode === 'volume-not-found' ? { action: 'remove', volume } : { action: 'restore', volume }];
    case 'volume.resize':
      if (ok) return [{ action: 'resize', volume, sizeBytes: task.params.size_bytes ?? 0 }];
      return errorCode === 'volume-not-found' ? [{ action: 'remove', volume }] : [];
    case 'device.format':
      return ok ? [{ action: 'clear-device', device: task.device, taskId: task.id }] : [];
    case 'device.probe':
      return [];
  }
}

/** Why a task cannot run on the devices it names, or undefined when they are in service (or not yet known). */
export function unusableDevice(inventory: InventoryView, task: { storage_system_id: string; device: string; params?: TaskRequest['params'] | TaskParams }): string | undefined {
  for (const deviceId of devicesOf(task)) {
    const location = inventory.locate(task.storage_system_id, deviceId);
    if (location && location.device.state !== 'available') {
      return `device '${deviceId}' is ${location.device.state}: ${location.device.reason ?? 'no reason given'}`;
    }
  }
  return undefined;
}
