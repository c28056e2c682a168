import type { Database, Queryable } from '@duplex/shared';

export interface ClusterLeaseRow {
  storage_system_id: string;
  id: string;
  state: 'online' | 'failed' | 'recovering';
  epoch: number;
  manager_url: string | null;
  lease_expires_at: Date | null;
}

/**
 * Renews this cluster's lease. A cluster that another took over while it was away (state
 * `failed`) comes back as `recovering`. Returns the cluster row after the renewal.
 */
export async function renewClusterLease(
  db: Queryable,
  cluster: { storageSystemId: string; clusterId: string; instanceId: string; managerUrl: string },
  leaseTtlMs: number,
): Promise<ClusterLeaseRow> {
  const { rows } = await db.raw<{ rows: ClusterLeaseRow[] }>(
    `update clusters set lease_expires_at = now() + make_interval(secs => ? / 1000.0), manager_instance_id = ?, manager_url = ?,
            state = case when state = 'failed' then 'recovering' else state end, updated_at = now()
      where storage_system_id = ? and id = ?
  returning storage_system_id, id, state, epoch, manager_url, lease_expires_at`,
    [leaseTtlMs, cluster.instanceId, cluster.managerUrl, cluster.storageSystemId, cluster.clusterId],
  );
  const row = rows[0];
  if (!row) throw new Error(`cluster ${cluster.storageSystemId}/${cluster.clusterId} is not stored`);
  return row;
}

export async function peersOf(db: Queryable, storageSystemId: string, clusterId: string): Promise<ClusterLeaseRow[]> {
  return db<ClusterLeaseRow>('clusters').where({ storage_system_id: storageSystemId }).whereNot({ id: clusterId }).orderBy('id');
}

/**
 * Moves every device the peer owns to this cluster under a new epoch, and marks the peer
 * failed, in one transaction; only while the peer's lease is still run out. Returns the new
 * epoch and the devices taken, or undefined when the peer renewed meanwhile.
 */
export async function takeOverPeer(
  db: Database,
  storageSystemId: string,
  clusterId: string,
  peerId: string,
): Promise<{ epoch: number; devices: string[] } | undefined> {
  return db.transaction(async (trx) => {
    const rows = await trx<ClusterLeaseRow>('clusters')
      .where({ storage_system_id: storageSystemId })
      .whereIn('id', [clusterId, peerId])
      .orderBy('id')
      .forUpdate();
    const me = rows.find((row) => row.id === clusterId);
    const peer = rows.find((row) => row.id === peerId);
    if (!me || !peer || peer.state === 'failed') return undefined;
    if (peer.lease_expires_at && peer.lease_expires_at.getTime() > Date.now()) return undefined;
    const epoch = Math.max(me.epoch, peer.epoch) + 1;
    const moved: { id: string }[] = await trx('devices')
      .where({ storage_system_id: storageSystemId, owner_cluster: peerId })
      .update({ owner_cluster: clusterId, epoch, updated_at: trx.fn.now() })
      .returning('id');
    await trx('clusters').where({ storage_system_id: storageSystemId, id: peerId }).update({ state: 'failed', updated_at: trx.fn.now() });
    await trx('clusters').where({ storage_system_id: storageSystemId, id: clusterId }).update({ epoch, updated_at: trx.fn.now() });
    const devices = moved.map((row) => row.id).sort();
    await trx('events').insert({
      type: 'cluster.failover',
      storage_system_id: storageSystemId,
      payload: JSON.stringify({ failed_cluster: peerId, survivor: clusterId, epoch, devices }),
    });
    return { epoch, devices };
  });
}

/**
 * Takes this cluster's home devices back from the peer under a new epoch and marks it
 * online again. Returns the devices moved, or undefined when the cluster is not recovering.
 */
export async function failBack(db: Database, storageSystemId: string, clusterId: string): Promise<{ epoch: number; devices: string[] } | undefined> {
  return db.transaction(async (trx) => {
    const rows = await trx<ClusterLeaseRow>('clusters').where({ storage_system_id: storageSystemId }).orderBy('id').forUpdate();
    const me = rows.find((row) => row.id === clusterId);
    if (!me || me.state !== 'recovering') return undefined;
    const epoch = Math.max(...rows.map((row) => row.epoch)) + 1;
    const moved: { id: string }[] = await trx('devices')
      .where({ storage_system_id: storageSystemId, home_cluster: clusterId })
      .whereNot({ owner_cluster: clusterId })
      .update({ owner_cluster: clusterId, epoch, updated_at: trx.fn.now() })
      .returning('id');
    await trx('clusters').where({ storage_system_id: storageSystemId, id: clusterId }).update({ state: 'online', epoch, updated_at: trx.fn.now() });
    const devices = moved.map((row) => row.id).sort();
    await trx('events').insert({
      type: 'cluster.failback',
      storage_system_id: storageSystemId,
      payload: JSON.stringify({ cluster: clusterId, epoch, devices }),
    });
    return { epoch, devices };
  });
}
