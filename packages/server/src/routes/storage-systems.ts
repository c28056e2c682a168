import type { ServerApi } from '@duplex/contracts';
import { ProblemError, pageById, type OperationHandlers } from '@duplex/shared';
import type { ServerContext } from '../context.ts';
import type { ClusterView } from '../lib/inventory-view.ts';
import { clusterStates } from '../repositories/clusters.ts';
import { callClusterManager, type ClusterManagerInventory } from '../services/cluster-managers.ts';

type Ops = ServerApi.operations;
type StorageSystem = ServerApi.components['schemas']['StorageSystem'];

export function storageSystemHandlers(
  context: ServerContext,
): Pick<OperationHandlers<Ops>, 'listStorageSystems' | 'getStorageSystem' | 'listClusters' | 'listDevices' | 'failBackCluster'> {
  const { inventory } = context;

  function clustersOf(storageSystemId: string): ClusterView[] {
    const clusters = inventory.clustersOf(storageSystemId);
    if (clusters.length === 0) throw new ProblemError('storage-system-not-found', `storage system '${storageSystemId}' is not known to this server`);
    return clusters;
  }

  function summary(storageSystemId: string): StorageSystem {
    const clusters = clustersOf(storageSystemId);
    const devices = inventory.devicesOf(storageSystemId);
    const updated = clusters.map((cluster) => cluster.reported_at).sort().at(-1)!;
    return {
      id: storageSystemId,
      cluster_count: clusters.length,
      device_count: devices.length,
      devices_available: devices.filter(({ device }) => device.state === 'available').length,
      updated_at: updated,
    };
  }

  return {
    async listStorageSystems(request) {
      const { limit = 50, cursor } = request.query;
      return pageById(inventory.storageSystemIds().map(summary), limit, cursor);
    },
    async getStorageSystem(request) {
      return summary(request.params.id);
    },
    async listClusters(request) {
      const { limit = 50, cursor } = request.query;
      const views = clustersOf(request.params.id);
      // Taken from Postgres: a dead cluster's last report still says online.
      const states = await clusterStates(context.db, request.params.id);
      const clusters = views.map((view) => ({
        id: view.cluster_id,
        storage_system_id: view.storage_system_id,
        state: states.get(view.cluster_id) ?? view.cluster_state,
        epoch: view.epoch,
        device_count: view.devices.filter((device) => device.owner_cluster === view.cluster_id).length,
        inventory_version: view.version,
        recorded_at: view.recorded_at,
        reported_at: view.reported_at,
        reported_by: view.reported_by,
      }));
      return pageById(clusters, limit, cursor);
    },
    async failBackCluster(request) {
      const { id: storageSystemId, cluster_id: clusterId } = request.params;
      const inventory = await callClusterManager<ClusterManagerInventory>(
        context,
        { storageSystemId, clusterId },
        { method: 'POST', path: '/v1/failback', requestId: String(request.id), expect: 200 },
      );
      return {
        storage_system_id: inventory.storage_system_id,
        cluster_id: inventory.cluster_id,
        state: inventory.cluster_state,
        epoch: inventory.epoch,
        inventory_version: inventory.version,
        devices: inventory.devices.map((device) => device.id),
      };
    },
    async listDevices(request) {
      const { limit = 50, cursor, cluster_id, state } = request.query;
      clustersOf(request.params.id);
      const devices = inventory
        .devicesOf(request.params.id)
        .filter(({ device }) => (cluster_id === undefined || device.owner_cluster === cluster_id) && (state === undefined || device.state === state))
        .map(({ device, cluster }) => ({
          ...device,
          storage_system_id: request.params.id,
          inventory_version: cluster.version,
          reported_at: cluster.reported_at,
        }));
      return pageById(devices, limit, cursor);
    },
  };
}
