import type { Queryable } from '@duplex/shared';
import type { ClusterView, InventoryReport } from '../lib/inventory-view.ts';

interface ServerInventoryRow {
  server_id: string;
  storage_system_id: string;
  cluster_id: string;
  version: number;
  cluster_state: ClusterView['cluster_state'];
  epoch: number;
  devices: ClusterView['devices'];
  recorded_at: Date;
  reported_by: string;
  reported_at: Date;
}

const toView = (row: ServerInventoryRow): ClusterView => ({
  storage_system_id: row.storage_system_id,
  cluster_id: row.cluster_id,
  version: row.version,
  cluster_state: row.cluster_state,
  epoch: row.epoch,
  devices: row.devices,
  recorded_at: row.recorded_at.toISOString(),
  reported_by: row.reported_by,
  reported_at: row.reported_at.toISOString(),
});

/** Stores a report as this server's view of the cluster, unless it already holds a newer one. */
export async function storeInventoryReport(
  db: Queryable,
  serverId: string,
  agentId: string,
  report: InventoryReport,
): Promise<{ stored: ClusterView | undefined; version: number }> {
  const rows = await db<ServerInventoryRow>('server_inventories')
    .insert({
      server_id: serverId,
      storage_system_id: report.storage_system_id,
      cluster_id: report.cluster_id,
      version: report.version,
      cluster_state: report.cluster_state,
      epoch: report.epoch,
      devices: JSON.stringify(report.devices) as never,
      recorded_at: report.recorded_at as never,
      reported_by: agentId,
      reported_at: db.fn.now() as never,
    })
    .onConflict(['server_id', 'storage_system_id', 'cluster_id'])
    .merge()
    .where('server_inventories.version', '<', report.version)
    .returning('*');
  const row = rows[0];
  if (row) return { stored: toView(row), version: row.version };
  const current = await db<ServerInventoryRow>('server_inventories')
    .where({ server_id: serverId, storage_system_id: report.storage_system_id, cluster_id: report.cluster_id })
    .first('version');
  return { stored: undefined, version: current?.version ?? report.version };
}

export async function loadServerInventories(db: Queryable, serverId: string): Promise<ClusterView[]> {
  const rows = await db<ServerInventoryRow>('server_inventories').where({ server_id: serverId });
  return rows.map(toView);
}

/** Where the cluster's manager is, as it recorded itself with its lease. */
export async function clusterManagerUrl(db: Queryable, storageSystemId: string, clusterId: string): Promise<string | undefined> {
  const row: { manager_url: string | null } | undefined = await db('clusters').where({ storage_system_id: storageSystemId, id: clusterId }).first('manager_url');
  return row?.manager_url ?? undefined;
}

/** The cluster that owns the device, as stored by the cluster-managers. */
export async function deviceOwner(db: Queryable, storageSystemId: string, deviceId: string): Promise<string | undefined> {
  const row: { owner_cluster: string } | undefined = await db('devices').where({ storage_system_id: storageSystemId, id: deviceId }).first('owner_cluster');
  return row?.owner_cluster;
}
