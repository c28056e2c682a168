import type { ClusterManagerApi, DriverApi } from '@duplex/contracts';

export type Inventory = ClusterManagerApi.components['schemas']['Inventory'];
export type InventoryDevice = ClusterManagerApi.components['schemas']['InventoryDevice'];
export type DiscoveredDevice = DriverApi.components['schemas']['DeviceReport'];
export type AdminState = 'in_service' | 'offline' | 'retired';

export interface StoredDevice {
  id: string;
  home_cluster: string;
  owner_cluster: string;
  /** The ownership epoch: executions for the device carry it, and the driver fences older ones. */
  epoch: number;
  /** What an operator set: out of service (`offline`) or out of the configuration (`retired`). */
  admin_state: AdminState;
  admin_reason: string | null;
}

/**
 * The devices this cluster answers for: those it owns (its home devices, unless another
 * cluster took them over) with the state discovery found, unless an operator took them out
 * of service or retired them. A device the driver no longer finds stays in the
 * configuration as unavailable, so its loss is visible.
 */
export function ownedDevices(clusterId: string, clusterEpoch: number, discovered: DiscoveredDevice[], stored: StoredDevice[]): InventoryDevice[] {
  const owners = new Map(stored.map((device) => [device.id, device]));
  const found = new Map(discovered.map((device) => [device.id, device]));
  const ids = new Set<string>();
  for (const device of discovered) {
    const owner = owners.get(device.id)?.owner_cluster ?? device.home_cluster;
    if (owner === clusterId) ids.add(device.id);
  }
  for (const device of stored) if (device.owner_cluster === clusterId) ids.add(device.id);
  return [...ids].sort().map((id) => {
    const device = found.get(id);
    const storedDevice = owners.get(id);
    const observed: InventoryDevice = device
      ? {
          id,
          home_cluster: storedDevice?.home_cluster ?? device.home_cluster,
          owner_cluster: clusterId,
          capacity_bytes: device.capacity_bytes,
          used_bytes: device.used_bytes,
          volume_count: device.volume_count,
          state: device.state,
          reason: device.reason,
          epoch: storedDevice?.epoch ?? clusterEpoch,
        }
      : {
          id,
          home_cluster: storedDevice?.home_cluster ?? clusterId,
          owner_cluster: clusterId,
          capacity_bytes: 0,
          used_bytes: 0,
          volume_count: 0,
          state: 'unavailable',
          reason: 'the driver no longer finds the device',
          epoch: storedDevice?.epoch ?? clusterEpoch,
        };
    return withAdminState(observed, storedDevice);
  });
}

/** An operator's decision outranks what the driver sees; the driver's finding stays in the reason. */
function withAdminState(device: InventoryDevice, stored: StoredDevice | undefined): InventoryDevice {
  if (!stored || stored.admin_state === 'in_service') return device;
  const given = stored.admin_reason ?? (stored.admin_state === 'offline' ? 'taken out of service by an operator' : 'retired by an operator');
  const reason = device.state === 'unavailable' ? `${given}; also ${device.reason ?? 'unavailable'}` : given;
  return { ...device, state: stored.admin_state, reason };
}

const deviceFields = ['id', 'home_cluster', 'owner_cluster', 'capacity_bytes', 'used_bytes', 'volume_count', 'state', 'reason', 'epoch'] as const;

/** Whether two device lists describe the same configuration and state (stored JSON does not keep key order). */
export function sameDevices(a: InventoryDevice[], b: InventoryDevice[]): boolean {
  return a.length === b.length && a.every((device, index) => deviceFields.every((field) => device[field] === b[index]?.[field]));
}

export type ChangeKind = 'added' | 'removed' | 'state' | 'capacity' | 'ownership' | 'usage';

/** What changed about one device between two inventory versions of a cluster. */
export interface DeviceChange {
  device_id: string;
  changes: ChangeKind[];
  state: InventoryDevice['state'] | null;
  previous_state: InventoryDevice['state'] | null;
  reason: string | null;
  capacity_bytes: number | null;
  previous_capacity_bytes: number | null;
  owner_cluster: string | null;
}

/**
 * The per-device difference between a cluster's previous and next device lists. A device
 * that leaves the list (taken over by the peer) is `removed`; usage alone is `usage`.
 */
export function deviceChanges(previous: InventoryDevice[], next: InventoryDevice[]): DeviceChange[] {
  const before = new Map(previous.map((device) => [device.id, device]));
  const after = new Map(next.map((device) => [device.id, device]));
  const changes: DeviceChange[] = [];
  for (const device of next) {
    const old = before.get(device.id);
    const kinds: ChangeKind[] = [];
    if (!old) kinds.push('added');
    else {
      if (old.state !== device.state || old.reason !== device.reason) kinds.push('state');
      if (old.capacity_bytes !== device.capacity_bytes) kinds.push('capacity');
      if (old.owner_cluster !== device.owner_cluster || old.epoch !== device.epoch) kinds.push('ownership');
      if (old.used_bytes !== device.used_bytes || old.volume_count !== device.volume_count) kinds.push('usage');
    }
    if (kinds.length === 0) continue;
    changes.push({
      device_id: device.id,
      changes: kinds,
      state: device.state,
      previous_state: old?.state ?? null,
      reason: device.reason,
      capacity_bytes: device.capacity_bytes,
      previous_capacity_bytes: old?.capacity_bytes ?? null,
      owner_cluster: device.owner_cluster,
    });
  }
  for (const old of previous) {
    if (after.has(old.id)) continue;
    changes.push({
      device_id: old.id,
      changes: ['removed'],
      state: null,
      previous_state: old.state,
      reason: null,
      capacity_bytes: null,
      previous_capacity_bytes: old.capacity_bytes,
      owner_cluster: null,
    });
  }
  return changes;
}

/** Changes worth an event: everything but a device's usage moving with its volumes. */
export function notableChanges(changes: DeviceChange[]): DeviceChange[] {
  return changes.filter((change) => change.changes.some((kind) => kind !== 'usage'));
}
