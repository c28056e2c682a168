import type { Database } from '@duplex/shared';

/** Rows the repository tests start from, written straight into Postgres. */

export const fromNow = (ms: number): Date => new Date(Date.now() + ms);

/** An agent of `serverId` in cluster c0 (of ss1 unless named), incarnation 1, its lease ending `leaseInMs` from now. */
export async function insertAgent(
  db: Database,
  agent: { id: string; name?: string; serverId: string; storageSystemId?: string; leaseInMs: number; lost?: boolean },
): Promise<string> {
  await db('agents').insert({
    id: agent.id,
    name: agent.name ?? agent.id,
    server_id: agent.serverId,
    storage_system_id: agent.storageSystemId ?? 'ss1',
    cluster_id: 'c0',
    url: 'http://127.0.0.1:9',
    pid: 1,
    incarnation: 1,
    started_at: new Date(),
    registered_at: new Date(),
    heartbeat_at: new Date(),
    lease_expires_at: fromNow(agent.leaseInMs),
    lost_at: agent.lost ? new Date() : null,
  });
  return agent.id;
}

export async function insertServer(db: Database, id: string, leaseInMs: number): Promise<void> {
  await db('servers').insert({ id, url: `http://${id}`, instance_id: id, started_at: new Date(), heartbeat_at: new Date(), lease_expires_at: fromNow(leaseInMs) });
}

export async function insertTask(db: Database, id: string, serverId: string, state: string, agentId: string | null): Promise<void> {
  await db('tasks').insert({ id, request_hash: 'h', kind: 'device.probe', storage_system_id: 'ss1', device: 'd0', params: '{}', state, server_id: serverId, agent_id: agentId });
}
