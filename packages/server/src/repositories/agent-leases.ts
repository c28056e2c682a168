import { runStatement, type Database, type Statement } from '@duplex/shared';
import type { AgentRow } from './agents.ts';

/** A heartbeat's request to renew its agent's lease. */
export interface LeaseRenewal {
  agentId: string;
  incarnation: number;
}

/** What a statement renewed, per agent: the incarnation it renewed and what the heartbeat answers. */
export type RenewedLeases<Renewed> = Map<string, { incarnation: number; renewed: Renewed }>;

/** What a heartbeat needs of the renewed registration. */
export type RenewedLease = Pick<AgentRow, 'lease_expires_at' | 'storage_system_id' | 'cluster_id'>;

/**
 * A group of renewals is one statement made of one single-row UPDATE per agent, each a
 * data-modifying CTE that finds its agent by the primary key. One UPDATE over all the agents
 * of the group (a join with the ids) would be shorter, but the planner, which prices a read of
 * the whole table below a few index lookups while the table is small or not analyzed yet,
 * then read every agent of the server for each group: several times the cost of the
 * renewals themselves.
 *
 * The server is compared as `server_id || ''`, which no index holds, so that each agent is
 * found by its primary key only. A prepared statement keeps its generic plan for the
 * connection's life, and a plan made while the table was nearly empty (the first heartbeats
 * after the agents registered) could find the agent through the unique index that starts with
 * server_id instead: a read of every agent of the server, for each heartbeat (about 2,600
 * buffers and 1 ms of Postgres per renewal at 5,000 agents, against 10 buffers by the key).
 *
 * Groups are padded to a power of two with lookups that find nothing, so that each connection
 * prepares a few statements (the plans are kept per connection) rather than one per size. The
 * largest groups serve the backlog after a stall (a checkpoint, a pause of the process): the
 * fewer round trips it takes, the sooner the heartbeats that waited are answered.
 *
 * The statements run on node-postgres directly (runStatement): through Knex, each execution
 * scanned and rewrote the statement's kilobytes of SQL to number its placeholders, which took
 * about a third more of the server's CPU per statement.
 */
const sizes = [1, 2, 4, 8, 16, 32, 64] as const;
export const maxRenewalsPerStatement = sizes.at(-1)!;
const nobody: LeaseRenewal = { agentId: '', incarnation: 0 };

type RenewalKind = 'live' | 'lost';

/**
 * The renewal of agents that hold their lease: the statement of every heartbeat, returning
 * only what the answers need. It commits without waiting for the WAL flush
 * (`synchronous_commit` off for this transaction only). A renewal lost in a Postgres crash
 * only makes a lease look shorter than it was: the agent may then be counted lost and its
 * attempts run again under new fencing tokens, as after a missed heartbeat. Nothing else is
 * written here.
 *
 * The renewal of agents that were found lost (a hang longer than the lease) also writes, for
 * each, the `agent.registered` that says it is back (the event `agentEvent` in agents.ts
 * builds), and commits as usual, as every event does. It is a statement of its own because
 * the outbox's notify trigger runs once per statement that inserts into `events`, even when
 * the insert has no row: in the first statement it would wake the event feeds at every
 * heartbeat. And a heartbeat comes to it only after the first statement left its agent: when
 * that one waited for the failover watcher marking the agent lost, this one starts after the
 * watcher's commit, so the event comes after the watcher's `agent.lost` in the stream (see the
 * event stream's migration).
 */
function renewalSql(kind: RenewalKind, size: number): string {
  // $1 is the lease's length (ms) and $2 the server, for every agent; then each agent's id and incarnation.
  const ctes = Array.from(
    { length: size },
    (_, index) => `renewed_${index} as (
      update agents
         set heartbeat_at = now(), lease_expires_at = now() + make_interval(secs => $1::float8 / 1000.0)${kind === 'lost' ? ', lost_at = null' : ''}
       where id = $${3 + 2 * index}::text and incarnation = $${4 + 2 * index}::int and server_id || '' = $2::text and lost_at is ${kind === 'lost' ? 'not null' : 'null'}
      returning id, server_id, storage_system_id, cluster_id, incarnation, lease_expires_at)`,
  );
  const renewed = `(${Array.from({ length: size }, (_, index) => `select * from renewed_${index}`).join(' union all ')})`;
  if (kind === 'live') {
    return `with ${ctes.join(',\n')}
      select renewed.id, renewed.incarnation, renewed.lease_expires_at, renewed.storage_system_id, renewed.cluster_id
        from ${renewed} as renewed, (select set_config('synchronous_commit', 'off', true)) as commit_without_flush`;
  }
  return `with ${ctes.join(',\n')},
      renewed as ${renewed},
      registered as (
        insert into events (type, storage_system_id, payload)
        select 'agent.registered', storage_system_id,
               jsonb_build_object('agent_id', id, 'server_id', server_id, 'cluster_id', cluster_id, 'incarnation', incarnation)
          from renewed
         order by id)
      select id, incarnation, lease_expires_at, storage_system_id, cluster_id from renewed`;
}

const statements = new Map<string, Required<Statement>>();

function statementFor(kind: RenewalKind, size: number): Required<Statement> {
  const name = `renew-${kind}-agent-leases-${size}`;
  let statement = statements.get(name);
  if (!statement) {
    statement = { name, text: renewalSql(kind, size) };
    statements.set(name, statement);
  }
  return statement;
}

type RenewedRow = RenewedLease & { id: string; incarnation: number };

async function renew(kind: RenewalKind, db: Database, serverId: string, renewals: readonly LeaseRenewal[], leaseTtlMs: number): Promise<RenewedLeases<RenewedLease>> {
  if (renewals.length > maxRenewalsPerStatement) throw new RangeError(`at most ${maxRenewalsPerStatement} lease renewals go in one statement, not ${renewals.length}`);
  const size = sizes.find((candidate) => candidate >= renewals.length)!;
  // Each heartbeat's statement is built here: plain loops, no intermediate arrays.
  const values: (string | number)[] = [leaseTtlMs, serverId];
  for (let index = 0; index < size; index++) {
    const renewal = renewals[index] ?? nobody;
    values.push(renewal.agentId, renewal.incarnation);
  }
  const rows = await runStatement<RenewedRow>(db, statementFor(kind, size), values);
  const renewed: RenewedLeases<RenewedLease> = new Map();
  for (const row of rows) {
    renewed.set(row.id, { incarnation: row.incarnation, renewed: { lease_expires_at: row.lease_expires_at, storage_system_id: row.storage_system_id, cluster_id: row.cluster_id } });
  }
  return renewed;
}

/**
 * Renews the leases of this server's agents, each in the given incarnation, unless the agent
 * was marked lost (renewLostAgentLeases). Runs as its own transaction: never pass a caller's
 * transaction, whose other writes would then commit without waiting for the flush.
 */
export async function renewAgentLeases(db: Database, serverId: string, renewals: readonly LeaseRenewal[], leaseTtlMs: number): Promise<RenewedLeases<RenewedLease>> {
  return renew('live', db, serverId, renewals, leaseTtlMs);
}

/**
 * Renews the leases of this server's agents that were marked lost, each in the given
 * incarnation, and records that they are back. For the heartbeats renewAgentLeases left.
 */
export async function renewLostAgentLeases(db: Database, serverId: string, renewals: readonly LeaseRenewal[], leaseTtlMs: number): Promise<RenewedLeases<RenewedLease>> {
  return renew('lost', db, serverId, renewals, leaseTtlMs);
}

/**
 * Each renewal's answer, in the renewals' order: what was renewed, or undefined when the
 * statement did not renew its agent (marked lost, another incarnation, another server's).
 */
export function renewedFor<Renewed>(renewals: readonly LeaseRenewal[], renewed: RenewedLeases<Renewed>): (Renewed | undefined)[] {
  return renewals.map((renewal) => {
    const found = renewed.get(renewal.agentId);
    return found?.incarnation === renewal.incarnation ? found.renewed : undefined;
  });
}
