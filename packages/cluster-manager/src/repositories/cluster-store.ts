import { ProblemError, type Database, type Queryable } from '@duplex/shared';
import type { Knex } from 'knex';
import {
  deviceChanges,
  notableChanges,
  ownedDevices,
  sameDevices,
  type AdminState,
  type DeviceChange,
  type DiscoveredDevice,
  type Inventory,
  type StoredDevice,
} from '../lib/inventory.ts';

interface ClusterRow {
  storage_system_id: string;
  id: string;
  state: Inventory['cluster_state'];
  epoch: number;
  inventory_version: number;
}

interface InventoryVersionRow {
  storage_system_id: string;
  cluster_id: string;
  version: number;
  snapshot: Inventory;
  recorded_at: Date;
}

export async function ensureCluster(
  db: Queryable,
  cluster: { storageSystemId: string; clusterId: string; managerUrl: string; instanceId: string },
): Promise<void> {
  await db('storage_systems').insert({ id: cluster.storageSystemId }).onConflict('id').ignore();
  await db('clusters')
    .insert({ storage_system_id: cluster.storageSystemId, id: cluster.clusterId, manager_url: cluster.managerUrl, manager_instance_id: cluster.instanceId })
    .onConflict(['storage_system_id', 'id'])
    .merge(['manager_url', 'manager_instance_id']);
}

/**
 * Stores what discovery found as the cluster's configuration and state. A new inventory
 * version (with its history row, the per-device changes, and outbox events) is written
 * only when something changed; the cluster row is locked so two writers cannot number the
 * same version. `adminChange` runs first in the same transaction, so an operator's change
 * and the version it produces commit together.
 */
export async function storeInventory(
  db: Database,
  storageSystemId: string,
  clusterId: string,
  discovered: DiscoveredDevice[],
  cause: string,
  adminChange?: (trx: Knex.Transaction) => Promise<void>,
): Promise<{ inventory: Inventory; changed: boolean; changes: DeviceChange[] }> {
  return db.transaction(async (trx) => {
    const cluster = await trx<ClusterRow>('clusters').where({ storage_system_id: storageSystemId, id: clusterId }).forUpdate().first();
    if (!cluster) throw new Error(`cluster ${storageSystemId}/${clusterId} is not stored`);
    if (adminChange) await adminChange(trx);
    const stored: StoredDevice[] = await trx('devices')
      .where({ storage_system_id: storageSystemId })
      .select('id', 'home_cluster', 'owner_cluster', 'epoch', 'admin_state', 'admin_reason');
    const devices = ownedDevices(clusterId, cluster.epoch, discovered, stored);
    const latest = await latestInventory(trx, storageSystemId, clusterId);
    if (latest && latest.cluster_state === cluster.state && latest.epoch === cluster.epoch && sameDevices(latest.devices, devices)) {
      return { inventory: latest, changed: false, changes: [] };
    }
    const version = cluster.inventory_version + 1;
    if (devices.length > 0) {
      await trx('devices')
        .insert(
          devices.map((device) => ({
            storage_system_id: storageSystemId,
            id: device.id,
            home_cluster: device.home_cluster,
            owner_cluster: device.owner_cluster,
            capacity_bytes: device.capacity_bytes,
            used_bytes: device.used_bytes,
            volume_count: device.volume_count,
            state: device.state,
            reason: device.reason,
            epoch: device.epoch,
            version,
            updated_at: trx.fn.now(),
          })),
        )
        .onConflict(['storage_system_id', 'id'])
        .merge(['capacity_bytes', 'used_bytes', 'volume_count', 'state', 'reason', 'version', 'updated_at']);
    }
    const recordedAt = new Date();
    const inventory: Inventory = {
      storage_system_id: storageSystemId,
      cluster_id: clusterId,
      version,
      cluster_state: cluster.state,
      epoch: cluster.epoch,
      recorded_at: recordedAt.toISOString(),
      devices,
    };
    const changes = deviceChanges(latest?.devices ?? [], devices);
    await trx('inventory_versions').insert({
      storage_system_id: storageSystemId,
      cluster_id: clusterId,
      version,
      cause,
      snapshot: JSON.stringify(inventory),
      changes: JSON.stringify(changes),
      recorded_at: recordedAt,
    });
    await trx('clusters').where({ storage_system_id: storageSystemId, id: clusterId }).update({ inventory_version: version, updated_at: trx.fn.now() });
    await trx('events').insert([
      {
        type: 'inventory.changed',
        storage_system_id: storageSystemId,
        payload: JSON.stringify({ cluster_id: clusterId, version, cause, device_count: devices.length }),
      },
      ...notableChanges(changes).map((change) => ({
        type: 'device.changed',
        storage_system_id: storageSystemId,
        payload: JSON.stringify({ cluster_id: clusterId, version, cause, ...change }),
      })),
    ]);
    return { inventory, changed: true, changes };
  });
}

interface AdminRow {
  owner_cluster: string;
  admin_state: AdminState;
}

async function adminRow(trx: Knex.Transaction, storageSystemId: string, deviceId: string): Promise<AdminRow | undefined> {
  const row: AdminRow | undefined = await trx('devices').where({ storage_system_id: storageSystemId, id: deviceId }).forUpdate().first('owner_cluster', 'admin_state');
  return row;
}

function notOwned(deviceId: string, clusterId: string): ProblemError {
  return new ProblemError('device-not-found', `cluster ${clusterId} does not own a device '${deviceId}'`);
}

/** Takes a device this cluster owns out of service (`offline`) or puts it back (`in_service`). */
export function setAdminState(storageSystemId: string, clusterId: string, deviceId: string, state: 'offline' | 'in_service', reason: string | null) {
  return async (trx: Knex.Transaction): Promise<void> => {
    const row = await adminRow(trx, storageSystemId, deviceId);
    if (!row || row.owner_cluster !== clusterId) throw notOwned(deviceId, clusterId);
    if (row.admin_state === 'retired') throw new ProblemError('device-retired', `device '${deviceId}' is retired; add it again to use it`);
    await trx('devices')
      .where({ storage_system_id: storageSystemId, id: deviceId })
      .update({ admin_state: state, admin_reason: state === 'offline' ? reason : null });
  };
}

/** Retires an offline device this cluster owns; its data stays on the device. */
export function retire(storageSystemId: string, clusterId: string, deviceId: string) {
  return async (trx: Knex.Transaction): Promise<void> => {
    const row = await adminRow(trx, storageSystemId, deviceId);
    if (!row || row.owner_cluster !== clusterId) throw notOwned(deviceId, clusterId);
    if (row.admin_state === 'retired') return;
    if (row.admin_state !== 'offline') {
      throw new ProblemError('device-in-service', `device '${deviceId}' is in service; set it offline before retiring it`);
    }
    await trx('devices').where({ storage_system_id: storageSystemId, id: deviceId }).update({ admin_state: 'retired' });
  };
}

/** Brings a retired device back into the configuration. */
export function reinstate(storageSystemId: string, deviceId: string) {
  return async (trx: Knex.Transaction): Promise<void> => {
    await trx('devices').where({ storage_system_id: storageSystemId, id: deviceId }).update({ admin_state: 'in_service', admin_reason: null });
  };
}

/** The stored device with this id, if any: who owns it and what an operator set. */
export async function storedDevice(db: Queryable, storageSystemId: string, deviceId: string): Promise<AdminRow | undefined> {
  const row: AdminRow | undefined = await db('devices').where({ storage_system_id: storageSystemId, id: deviceId }).first('owner_cluster', 'admin_state');
  return row;
}

/** The newest version number stored for the cluster (cheaper than the snapshot). */
export async function currentVersion(db: Queryable, storageSystemId: string, clusterId: string): Promise<number | undefined> {
  const row = await db<ClusterRow>('clusters').where({ storage_system_id: storageSystemId, id: clusterId }).first('inventory_version');
  return row?.inventory_version;
}

export async function latestInventory(db: Queryable, storageSystemId: string, clusterId: string): Promise<Inventory | undefined> {
  const row = await db<InventoryVersionRow>('inventory_versions')
    .where({ storage_system_id: storageSystemId, cluster_id: clusterId })
    .orderBy('version', 'desc')
    .first();
  return row?.snapshot;
}

export interface AgentIdentity {
  storage_system_id: string;
  cluster_id: string;
  server_id: string;
  name: string;
  pid: number | null;
  state: 'starting' | 'running' | 'restarting' | 'stopped';
  restarts: number;
  started_at: Date;
}

/** The agent's identity is persistent data: name, pid, server, cluster and start time. */
export async function saveAgentIdentity(db: Queryable, identity: AgentIdentity): Promise<void> {
  await db('agent_identities')
    .insert({ ...identity, updated_at: db.fn.now() })
    .onConflict(['storage_system_id', 'cluster_id', 'server_id'])
    .merge();
}

export async function agentIdentities(db: Queryable, storageSystemId: string, clusterId: string): Promise<AgentIdentity[]> {
  return db<AgentIdentity>('agent_identities').where({ storage_system_id: storageSystemId, cluster_id: clusterId }).orderBy('server_id');
}
