import type { ServerApi } from '@duplex/contracts';

export type InventoryReport = ServerApi.components['schemas']['InventoryReport'];
export type ReportedDevice = ServerApi.components['schemas']['ReportedDevice'];

export interface ClusterView extends InventoryReport {
  reported_by: string;
  reported_at: string;
}

export interface DeviceLocation {
  device: ReportedDevice;
  cluster: ClusterView;
}

/**
 * A server's picture of its storage systems, built only from what its agents reported.
 * Where two clusters claim a device (during a takeover), the higher epoch wins.
 */
export class InventoryView {
  private readonly clusters = new Map<string, ClusterView>();

  private static key(storageSystemId: string, clusterId: string): string {
    return `${storageSystemId}/${clusterId}`;
  }

  /** Applies a report; false when the view already holds this or a newer version. */
  apply(view: ClusterView): boolean {
    const key = InventoryView.key(view.storage_system_id, view.cluster_id);
    const current = this.clusters.get(key);
    if (current && current.version >= view.version) return false;
    this.clusters.set(key, view);
    return true;
  }

  cluster(storageSystemId: string, clusterId: string): ClusterView | undefined {
    return this.clusters.get(InventoryView.key(storageSystemId, clusterId));
  }

  clustersOf(storageSystemId: string): ClusterView[] {
    return [...this.clusters.values()].filter((view) => view.storage_system_id === storageSystemId);
  }

  storageSystemIds(): string[] {
    return [...new Set([...this.clusters.values()].map((view) => view.storage_system_id))].sort();
  }

  locate(storageSystemId: string, deviceId: string): DeviceLocation | undefined {
    let found: DeviceLocation | undefined;
    for (const cluster of this.clustersOf(storageSystemId)) {
      const device = cluster.devices.find((candidate) => candidate.id === deviceId && candidate.owner_cluster === cluster.cluster_id);
      if (device && (!found || device.epoch > found.device.epoch)) found = { device, cluster };
    }
    return found;
  }

  devicesOf(storageSystemId: string): DeviceLocation[] {
    const ids = new Set(this.clustersOf(storageSystemId).flatMap((cluster) => cluster.devices.map((device) => device.id)));
    return [...ids].flatMap((id) => {
      const location = this.locate(storageSystemId, id);
      return location ? [location] : [];
    });
  }
}
