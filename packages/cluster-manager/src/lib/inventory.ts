import type { ClusterManagerApi, DriverApi } from '@duplex/contracts';

export type Inventory = ClusterManagerApi.components['schemas']['Inventory'];
export type InventoryDevice = ClusterManagerApi.components['schemas']['InventoryDevice'];
export type DiscoveredDevice = DriverApi.components['schemas']['DeviceReport'];

export interface StoredDevice {
  id: string;
  home_cluster: string;
  owner_cluster: string;
  /** The ownership epoch: executions for the device carry it, and the driver fences older ones. */
  epoch: number;
}

/**
 * The devices this cluster answers for: those it owns (its home devices, unless another
 * cluster took them over) with the state discovery found. A device the driver no longer
 * finds stays in the configuration as unavailable, so its loss is visible.
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
    if (!device) {
      return {
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
    }
    return {
      id,
      home_cluster: storedDevice?.home_cluster ?? device.home_cluster,
      owner_cluster: clusterId,
      capacity_bytes: device.capacity_bytes,
      used_bytes: device.used_bytes,
      volume_count: device.volume_count,
      state: device.state,
      reason: device.reason,
      epoch: storedDevice?.epoch ?? clusterEpoch,
    };
  });
}

const deviceFields = ['id', 'home_cluster', 'owner_cluster', 'capacity_bytes', 'used_bytes', 'volume_count', 'state', 'reason', 'epoch'] as const;

/** Whether two device lists describe the same configuration and state (stored JSON does not keep key order). */
export function sameDevices(a: InventoryDevice[], b: InventoryDevice[]): boolean {
  return a.length === b.length && a.every((device, index) => deviceFields.every((field) => device[field] === b[index]?.[field]));
}
