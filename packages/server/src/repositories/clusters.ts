import type { Queryable } from '@duplex/shared';
import type { ClusterView } from '../lib/inventory-view.ts';

/**
 * Each cluster's state as the cluster-managers keep it in Postgres. It is ahead of a cluster's
 * own reports when the cluster died: the peer that takes it over marks it `failed` in the same
 * transaction, and the dead cluster sends no report after its last, `online` one.
 */
export async function clusterStates(db: Queryable, storageSystemId: string): Promise<Map<string, ClusterView['cluster_state']>> {
  const rows: { id: string; state: ClusterView['cluster_state'] }[] = await db('clusters').where({ storage_system_id: storageSystemId }).select('id', 'state');
  return new Map(rows.map((row) => [row.id, row.state]));
}
