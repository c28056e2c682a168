import type { ServerApi } from '@duplex/contracts';
import { ProblemError, type OperationHandlers } from '@duplex/shared';
import type { ServerContext } from '../context.ts';
import { deviceOwner } from '../repositories/inventories.ts';
import { awaitInventoryVersion, callClusterManager, type ClusterManagerInventory } from '../services/cluster-managers.ts';

type Ops = ServerApi.operations;
type Device = ServerApi.components['schemas']['Device'];

/**
 * Device administration on a user's behalf. Each change is made by the cluster-manager of the
 * cluster that owns the device, which stores it as a new inventory version and broadcasts it;
 * the answer waits until this server's agents have reported that version.
 */
export function deviceHandlers(
  context: ServerContext,
): Pick<OperationHandlers<Ops>, 'getDevice' | 'addDevice' | 'setDeviceState' | 'retireDevice' | 'rescanCluster'> {
  const { inventory } = context;

  function knownStorageSystem(storageSystemId: string): void {
    if (inventory.clustersOf(storageSystemId).length === 0) {
      throw new ProblemError('storage-system-not-found', `storage system '${storageSystemId}' is not known to this server`);
    }
  }

  async function ownerOf(storageSystemId: string, deviceId: string): Promise<string> {
    knownStorageSystem(storageSystemId);
    const owner = (await deviceOwner(context.db, storageSystemId, deviceId)) ?? inventory.locate(storageSystemId, deviceId)?.cluster.cluster_id;
    if (!owner) throw new ProblemError('device-not-found', `device '${deviceId}' is not in storage system '${storageSystemId}'`);
    return owner;
  }

  /** The device as the cluster-manager stored it, once this server shows that version (or as stored, if it is slow to). */
  async function settled(stored: ClusterManagerInventory, deviceId: string): Promise<Device> {
    await awaitInventoryVersion(context, stored.storage_system_id, stored.cluster_id, stored.version);
    const device = stored.devices.find((candidate) => candidate.id === deviceId);
    if (!device) throw new ProblemError('device-not-found', `device '${deviceId}' is not in the stored inventory of cluster ${stored.cluster_id}`);
    const location = inventory.locate(stored.storage_system_id, deviceId);
    const reportedAt = location && location.cluster.version >= stored.version ? location.cluster.reported_at : stored.recorded_at;
    return { ...device, storage_system_id: stored.storage_system_id, inventory_version: stored.version, reported_at: reportedAt };
  }

  return {
    async getDevice(request) {
      const { id: storageSystemId, device_id: deviceId } = request.params;
      knownStorageSystem(storageSystemId);
      const location = inventory.locate(storageSystemId, deviceId);
      if (!location) throw new ProblemError('device-not-found', `device '${deviceId}' is not in storage system '${storageSystemId}'`);
      return { ...location.device, storage_system_id: storageSystemId, inventory_version: location.cluster.version, reported_at: location.cluster.reported_at };
    },
    async addDevice(request, reply) {
      const { id: storageSystemId } = request.params;
      const { id: deviceId, cluster_id: clusterId, capacity_bytes: capacityBytes } = request.body;
      knownStorageSystem(storageSystemId);
      const stored = await callClusterManager<ClusterManagerInventory>(
        context,
        { storageSystemId, clusterId },
        { method: 'POST', path: '/v1/devices', body: { id: deviceId, capacity_bytes: capacityBytes }, requestId: String(request.id), expect: 201 },
      );
      return reply.code(201).send(await settled(stored, deviceId));
    },
    async setDeviceState(request) {
      const { id: storageSystemId, device_id: deviceId } = request.params;
      const clusterId = await ownerOf(storageSystemId, deviceId);
      const stored = await callClusterManager<ClusterManagerInventory>(
        context,
        { storageSystemId, clusterId },
        { method: 'POST', path: `/v1/devices/${encodeURIComponent(deviceId)}:set-state`, body: request.body, requestId: String(request.id), expect: 200 },
      );
      return settled(stored, deviceId);
    },
    async retireDevice(request) {
      const { id: storageSystemId, device_id: deviceId } = request.params;
      const clusterId = await ownerOf(storageSystemId, deviceId);
      const stored = await callClusterManager<ClusterManagerInventory>(
        context,
        { storageSystemId, clusterId },
        { method: 'DELETE', path: `/v1/devices/${encodeURIComponent(deviceId)}`, requestId: String(request.id), expect: 200 },
      );
      return settled(stored, deviceId);
    },
    async rescanCluster(request) {
      const { id: storageSystemId, cluster_id: clusterId } = request.params;
      knownStorageSystem(storageSystemId);
      const stored = await callClusterManager<ClusterManagerInventory>(
        context,
        { storageSystemId, clusterId },
        { method: 'POST', path: '/v1/inventory:refresh', requestId: String(request.id), expect: 200 },
      );
      await awaitInventoryVersion(context, storageSystemId, clusterId, stored.version);
      return {
        storage_system_id: stored.storage_system_id,
        cluster_id: stored.cluster_id,
        state: stored.cluster_state,
        inventory_version: stored.version,
        recorded_at: stored.recorded_at,
        device_count: stored.devices.length,
      };
    },
  };
}
