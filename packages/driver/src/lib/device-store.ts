import { clusterIdPattern, deviceIdPattern } from './names.ts';
import type { ExecutionRecord } from './execution-record.ts';

/** What a device says about itself: written once when it is provisioned. */
export interface DeviceLabel {
  id: string;
  home_cluster: string;
  capacity_bytes: number;
}

export interface DeviceInspection {
  id: string;
  /** Undefined when the label cannot be read or is not valid. */
  label: DeviceLabel | undefined;
  /** Why the device cannot be used, or null when nothing is known to be wrong. */
  fault: string | null;
}

export interface VolumeEntry {
  name: string;
  size_bytes: number;
}

/**
 * Where devices keep their volumes, fencing epoch and execution records. A store does the
 * storage and nothing else: every rule (capacity, existence, fencing, replay) is the
 * executor's, so each store behaves the same. Volume names given to a store are valid.
 * Device-level failures are thrown as ProblemErrors; anything else is unexpected.
 */
export interface DeviceStore {
  deviceIds(): Promise<string[]>;
  /** Undefined when no such device exists. */
  inspect(id: string): Promise<DeviceInspection | undefined>;
  /** 0 when no epoch has been recorded yet. */
  readEpoch(id: string): Promise<number>;
  writeEpoch(id: string, epoch: number): Promise<void>;
  readRecord(id: string, taskId: string): Promise<ExecutionRecord | undefined>;
  writeRecord(id: string, record: ExecutionRecord): Promise<void>;
  volumes(id: string): Promise<VolumeEntry[]>;
  /**
   * What identifies the place the device keeps its volumes, cheaply (no listing): it changes
   * when that place is replaced, as when another device takes the id. Throws as `volumes`
   * does when the volumes cannot be listed.
   */
  volumesIdentity(id: string): Promise<string>;
  /** Undefined when there is no such volume. */
  volumeSize(id: string, name: string): Promise<number | undefined>;
  createVolume(id: string, name: string, sizeBytes: number): Promise<void>;
  resizeVolume(id: string, name: string, sizeBytes: number): Promise<void>;
  deleteVolume(id: string, name: string): Promise<void>;
  /** Copies the source's bytes as they are now to a new volume; returns its size. */
  copyVolume(from: { device: string; name: string }, to: { device: string; name: string }): Promise<number>;
  /** Creates a new, empty device with this label; `device-exists` when the id is taken. */
  provision(label: DeviceLabel): Promise<void>;
  /** `ok`, or why the store cannot be used. */
  readiness(): Promise<string>;
}

/** Checks a label, answering the label or why it is not one. */
export function parseLabel(value: unknown): DeviceLabel | string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'the label is not a JSON object';
  const { id, home_cluster: homeCluster, capacity_bytes: capacity } = value as Record<string, unknown>;
  if (typeof id !== 'string' || !deviceIdPattern.test(id)) return 'the label has no valid id';
  if (typeof homeCluster !== 'string' || !clusterIdPattern.test(homeCluster)) return 'the label has no valid home_cluster';
  if (!Number.isSafeInteger(capacity) || (capacity as number) < 0) return 'the label has no valid capacity_bytes';
  return { id, home_cluster: homeCluster, capacity_bytes: capacity as number };
}
