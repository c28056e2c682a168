/**
 * How long the server takes to count stopped agents lost. The failover watcher of the server
 * marks an agent whose lease ran out (`agents.lost_at`, set to Postgres's now()) and writes
 * `agent.lost` in the same transaction; the lease is the last renewal plus AGENT_LEASE_TTL_MS.
 * Every moment here is on this machine's clock (Postgres runs on the same host).
 */
import type { Database, JsonClient } from '@duplex/shared';
import { sleep } from './api.ts';
import type { HeartbeatGenerator } from './heartbeat-generator.ts';
import { percentile } from './stats.ts';

interface LeaseRow {
  id: string;
  heartbeat_at: Date;
  lease_expires_at: Date;
  lost_at: Date | null;
}

export interface StoppedAgent {
  id: string;
  /** When its first heartbeat after the stop was due and not sent (epoch ms). */
  first_missed_at: number | null;
  heartbeat_at: string;
  lease_expires_at: string;
  lost_at: string | null;
  /** lost_at − first missed heartbeat: how long the server took to notice that the agent stopped. */
  since_first_missed_ms: number | null;
  /** lost_at − the last renewal. */
  since_last_renewal_ms: number | null;
  /** lost_at − the end of the lease: the failover watcher's part. */
  past_lease_end_ms: number | null;
}

interface Spread {
  p50: number | null;
  p99: number | null;
  max: number | null;
}

export interface LossFigures {
  stopped: number;
  /** Counted lost (lost_at set after the stop) before the deadline. */
  counted_lost: number;
  /** Stopped agents whose lease was renewed after the stop: a heartbeat sent before it, answered after it. */
  renewed_after_stop: number;
  /** `agent.lost` events (reason lease_expired) written for the stopped agents. */
  lost_events: number;
  /** Stopped agents that GET /v1/agents/{id} shows `expired`. */
  api_expired: number;
  since_first_missed_ms: Spread;
  since_last_renewal_ms: Spread;
  past_lease_end_ms: Spread;
  agents: StoppedAgent[];
}

const spread = (values: number[]): Spread => ({
  p50: percentile(values, 50) ?? null,
  p99: percentile(values, 99) ?? null,
  max: values.length === 0 ? null : Math.max(...values),
});

/** `count` agents spread evenly over the list (and so over the heartbeat phases). */
export function evenSample<T>(items: readonly T[], count: number): T[] {
  const size = Math.min(count, items.length);
  return Array.from({ length: size }, (_, k) => items[Math.floor((k * items.length) / size)]!);
}

/** How long after an agent's lease ran out the server may take to count it lost before the run calls that a failure. */
export const countLostWithinMs = 10_000;
/** The longest the run waits for one sample: a server so slow that heartbeats sent before the stop land this late is not measured any further. */
const longestWaitMs = 60_000;

/**
 * Stops the heartbeats of `ids` and waits until the server has counted every one of them
 * lost, while the other agents keep heartbeating. A heartbeat sent just before the stop and
 * answered late renews the lease after the stop, so the wait runs until `countLostWithinMs`
 * after the latest lease of an agent not yet counted (at least `minWaitMs`, at most 60 s).
 */
export async function timeAgentLoss(options: { db: Database; generator: HeartbeatGenerator; server: JsonClient; ids: string[]; minWaitMs: number }): Promise<LossFigures> {
  const { db, generator, server, ids } = options;
  const stoppedAt = new Date();
  generator.stop(ids);
  let rows: LeaseRow[] = [];
  const counted = (row: LeaseRow) => row.lost_at !== null && row.lost_at >= stoppedAt;
  for (;;) {
    rows = await db<LeaseRow>('agents').whereIn('id', ids).select('id', 'heartbeat_at', 'lease_expires_at', 'lost_at');
    const waiting = rows.filter((row) => !counted(row));
    if (rows.length === ids.length && waiting.length === 0) break;
    const latestLease = Math.max(0, ...waiting.map((row) => row.lease_expires_at.getTime()));
    const deadline = Math.min(stoppedAt.getTime() + longestWaitMs, Math.max(stoppedAt.getTime() + options.minWaitMs, latestLease + countLostWithinMs));
    if (Date.now() > deadline) break;
    await sleep(50);
  }
  const lostEvents: { count: string }[] = await db('events')
    .where({ type: 'agent.lost' })
    .where('created_at', '>=', stoppedAt)
    .whereRaw(`payload->>'reason' = 'lease_expired'`)
    .whereRaw(`payload->>'agent_id' = any(?::text[])`, [ids])
    .count('* as count');
  let apiExpired = 0;
  for (const id of ids) {
    const response = await server.call<{ state?: string }>('GET', `/v1/agents/${encodeURIComponent(id)}`);
    if (response.status === 200 && response.body.state === 'expired') apiExpired += 1;
  }
  const agents: StoppedAgent[] = rows.map((row) => {
    const firstMissed = generator.firstMissedAt(row.id) ?? null;
    const lostAt = counted(row) ? row.lost_at!.getTime() : null;
    return {
      id: row.id,
      first_missed_at: firstMissed,
      heartbeat_at: row.heartbeat_at.toISOString(),
      lease_expires_at: row.lease_expires_at.toISOString(),
      lost_at: row.lost_at?.toISOString() ?? null,
      since_first_missed_ms: lostAt === null || firstMissed === null ? null : Math.round(lostAt - firstMissed),
      since_last_renewal_ms: lostAt === null ? null : lostAt - row.heartbeat_at.getTime(),
      past_lease_end_ms: lostAt === null ? null : lostAt - row.lease_expires_at.getTime(),
    };
  });
  const values = (pick: (agent: StoppedAgent) => number | null) => agents.flatMap((agent) => (pick(agent) === null ? [] : [pick(agent)!]));
  return {
    stopped: ids.length,
    counted_lost: agents.filter((agent) => agent.lost_at !== null && agent.since_last_renewal_ms !== null).length,
    renewed_after_stop: rows.filter((row) => row.heartbeat_at >= stoppedAt).length,
    lost_events: Number(lostEvents[0]?.count ?? 0),
    api_expired: apiExpired,
    since_first_missed_ms: spread(values((agent) => agent.since_first_missed_ms)),
    since_last_renewal_ms: spread(values((agent) => agent.since_last_renewal_ms)),
    past_lease_end_ms: spread(values((agent) => agent.past_lease_end_ms)),
    agents,
  };
}

/** Lets the stopped agents heartbeat again and waits until the server has them back (lost_at cleared). */
export async function resumeAgents(db: Database, generator: HeartbeatGenerator, ids: string[], timeoutMs: number): Promise<boolean> {
  generator.resume(ids);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const stillLost: { count: string }[] = await db('agents').whereIn('id', ids).whereNotNull('lost_at').count('* as count');
    if (Number(stillLost[0]?.count ?? 0) === 0) return true;
    await sleep(100);
  }
  return false;
}

/** Agents counted lost since `since` that the benchmark did not stop: live agents whose heartbeats came too late. */
export async function falseLosses(db: Database, since: Date, until: Date, stoppedIds: readonly string[]): Promise<number> {
  const query = db('events').where({ type: 'agent.lost' }).where('created_at', '>=', since).where('created_at', '<=', until);
  if (stoppedIds.length > 0) query.whereRaw(`not (payload->>'agent_id' = any(?::text[]))`, [[...stoppedIds]]);
  const rows: { count: string }[] = await query.count('* as count');
  return Number(rows[0]?.count ?? 0);
}
