import type { ServerApi } from '@duplex/contracts';
import { decodeCursor, encodeCursor, type Queryable } from '@duplex/shared';

export type Agent = ServerApi.components['schemas']['Agent'];
export type AgentRegistrationRequest = ServerApi.components['schemas']['AgentRegistrationRequest'];

export interface AgentRow {
  id: string;
  name: string;
  server_id: string;
  storage_system_id: string;
  cluster_id: string;
  url: string;
  pid: number;
  incarnation: number;
  started_at: Date;
  registered_at: Date;
  heartbeat_at: Date;
  lease_expires_at: Date;
  /** Set when the agent was found lost and `agent.lost` was written; cleared when it is back. */
  lost_at: Date | null;
}

export function toAgentResource(row: AgentRow, now: Date = new Date()): Agent {
  return {
    id: row.id,
    name: row.name,
    server_id: row.server_id,
    storage_system_id: row.storage_system_id,
    cluster_id: row.cluster_id,
    url: row.url,
    pid: row.pid,
    incarnation: row.incarnation,
    state: row.lease_expires_at > now ? 'active' : 'expired',
    started_at: row.started_at.toISOString(),
    registered_at: row.registered_at.toISOString(),
    heartbeat_at: row.heartbeat_at.toISOString(),
    lease_expires_at: row.lease_expires_at.toISOString(),
  };
}

export interface AgentRegistration {
  row: AgentRow;
  created: boolean;
  newIncarnation: boolean;
  /** The registration as it was before, when there was one. */
  previous: Pick<AgentRow, 'incarnation' | 'lease_expires_at' | 'lost_at'> | undefined;
}

/**
 * Registers or renews an agent. The same process registering again keeps its incarnation;
 * a new process (pid, URL or start time changed) gets the next one. Run it in a transaction:
 * the previous registration stays locked until the caller has recorded what changed.
 */
export async function upsertAgent(db: Queryable, id: string, request: AgentRegistrationRequest, leaseTtlMs: number): Promise<AgentRegistration> {
  const previous: AgentRegistration['previous'] = await db<AgentRow>('agents').where({ id }).forUpdate().first('incarnation', 'lease_expires_at', 'lost_at');
  const { rows } = await db.raw<{ rows: (AgentRow & { created: boolean })[] }>(
    `insert into agents as a (id, name, server_id, storage_system_id, cluster_id, url, pid, incarnation, started_at, registered_at, heartbeat_at, lease_expires_at)
     values (:id, :name, :server_id, :storage_system_id, :cluster_id, :url, :pid, 1, :started_at, now(), now(), now() + make_interval(secs => :ttl / 1000.0))
     on conflict (id) do update set
       incarnation = case when a.pid <> excluded.pid or a.url <> excluded.url or a.started_at <> excluded.started_at
                          then a.incarnation + 1 else a.incarnation end,
       registered_at = case when a.pid <> excluded.pid or a.url <> excluded.url or a.started_at <> excluded.started_at
                            then now() else a.registered_at end,
       pid = excluded.pid, url = excluded.url, started_at = excluded.started_at,
       heartbeat_at = now(), lease_expires_at = excluded.lease_expires_at, lost_at = null
     returning a.*, (xmax = 0) as created`,
    { id, ...request, ttl: leaseTtlMs },
  );
  const { created, ...row } = rows[0]!;
  return { row, created, newIncarnation: previous !== undefined && previous.incarnation !== row.incarnation, previous };
}

/**
 * The events of a registration: a replaced incarnation that was not yet known lost is lost
 * now, and an agent that is new, a new process, or back after it was lost is registered.
 */
export async function recordRegistration(db: Queryable, registration: AgentRegistration): Promise<void> {
  const { row, created, newIncarnation, previous } = registration;
  if (newIncarnation && previous && previous.lost_at === null) {
    await recordAgentEvent(db, 'agent.lost', { ...row, incarnation: previous.incarnation }, { reason: 'replaced', lease_expires_at: previous.lease_expires_at.toISOString() });
  }
  if (created || newIncarnation || (previous && previous.lost_at !== null)) await recordAgentEvent(db, 'agent.registered', row);
}

/**
 * Marks this server's agents whose lease has run out as lost, each once per lost lease, and
 * writes `agent.lost` for each in the same transaction (the caller's).
 *
 * An agent whose renewal holds its row now is skipped, not waited for: a renewal statement
 * holds several agents, and so does this one, so waiting on each other could deadlock. The
 * renewal either renews the lease or leaves the agent to the next check.
 */
export async function markLostAgents(db: Queryable, serverId: string): Promise<AgentRow[]> {
  const expired = db<AgentRow>('agents')
    .select('id')
    .where({ server_id: serverId })
    .whereNull('lost_at')
    .where('lease_expires_at', '<', db.fn.now())
    .forUpdate()
    .skipLocked();
  const rows = await db<AgentRow>('agents')
    .whereIn('id', expired)
    .update({ lost_at: db.fn.now() as never })
    .returning('*');
  if (rows.length > 0) {
    await db('events').insert(rows.map((row) => agentEvent('agent.lost', row, { reason: 'lease_expired', lease_expires_at: row.lease_expires_at.toISOString() })));
  }
  return rows;
}

export async function findAgent(db: Queryable, id: string): Promise<AgentRow | undefined> {
  return db<AgentRow>('agents').where({ id }).first();
}

export async function agentsOfServer(db: Queryable, serverId: string): Promise<(AgentRow & AgentCredentialRow)[]> {
  return db<AgentRow & AgentCredentialRow>('agents').where({ server_id: serverId });
}

export interface AgentFilters {
  storage_system_id?: string;
  cluster_id?: string;
  state?: 'active' | 'expired';
}

/** A page of agents: `serverId`'s, or every server's when it is undefined. */
export async function listAgents(
  db: Queryable,
  serverId: string | undefined,
  filters: AgentFilters,
  limit: number,
  cursor: string | undefined,
): Promise<{ items: AgentRow[]; next_cursor: string | null }> {
  const query = db<AgentRow>('agents');
  if (serverId !== undefined) query.where({ server_id: serverId });
  if (filters.storage_system_id) query.where('storage_system_id', filters.storage_system_id);
  if (filters.cluster_id) query.where('cluster_id', filters.cluster_id);
  if (filters.state === 'active') query.where('lease_expires_at', '>', db.fn.now());
  if (filters.state === 'expired') query.where('lease_expires_at', '<=', db.fn.now());
  if (cursor !== undefined) query.where('id', '>', String(decodeCursor(cursor, 1)[0]));
  const rows = await query.orderBy('id').limit(limit + 1);
  const items = rows.slice(0, limit);
  const last = items.at(-1);
  return { items, next_cursor: rows.length > limit && last ? encodeCursor([last.id]) : null };
}

type AgentEventType = 'agent.registered' | 'agent.lost';
type AgentIdentity = Pick<AgentRow, 'id' | 'server_id' | 'storage_system_id' | 'cluster_id' | 'incarnation'>;

function agentEvent(type: AgentEventType, row: AgentIdentity, details: Record<string, unknown>) {
  return {
    type,
    storage_system_id: row.storage_system_id,
    payload: JSON.stringify({ agent_id: row.id, server_id: row.server_id, cluster_id: row.cluster_id, incarnation: row.incarnation, ...details }),
  };
}

export async function recordAgentEvent(db: Queryable, type: AgentEventType, row: AgentIdentity, details: Record<string, unknown> = {}): Promise<void> {
  await db('events').insert(agentEvent(type, row, details));
}

/** Servers other than this one with a live lease and a live agent in the cluster. */
export async function serversWithLiveAgent(db: Queryable, exceptServerId: string, storageSystemId: string, clusterId: string): Promise<string[]> {
  const rows: { server_id: string }[] = await db('agents as a')
    .join('servers as s', 's.id', 'a.server_id')
    .where({ 'a.storage_system_id': storageSystemId, 'a.cluster_id': clusterId })
    .whereNot('a.server_id', exceptServerId)
    .where('a.lease_expires_at', '>', db.fn.now())
    .where('s.lease_expires_at', '>', db.fn.now())
    .orderBy('a.server_id')
    .select('a.server_id');
  return rows.map((row) => row.server_id);
}

/** What a server keeps of an agent's credentials: the current one and the one before it. */
export interface AgentCredentialRow {
  credential_sha256: string | null;
  credential_expires_at: Date | null;
  previous_credential_sha256: string | null;
  previous_credential_expires_at: Date | null;
}

/** Gives the agent a new credential; the current one becomes the previous, valid until it expires. */
export async function rotateAgentCredential(db: Queryable, id: string, sha256: string, expiresAt: Date): Promise<void> {
  await db('agents')
    .where({ id })
    .update({
      previous_credential_sha256: db.ref('credential_sha256'),
      previous_credential_expires_at: db.ref('credential_expires_at'),
      credential_sha256: sha256,
      credential_expires_at: expiresAt,
    });
}

/** An agent row's credentials as the registry holds them, newest first. */
export function storedCredentials(row: AgentCredentialRow): { sha256: string; expiresAt: number }[] {
  const held: { sha256: string; expiresAt: number }[] = [];
  if (row.credential_sha256 && row.credential_expires_at) held.push({ sha256: row.credential_sha256, expiresAt: row.credential_expires_at.getTime() });
  if (row.previous_credential_sha256 && row.previous_credential_expires_at) {
    held.push({ sha256: row.previous_credential_sha256, expiresAt: row.previous_credential_expires_at.getTime() });
  }
  return held;
}
