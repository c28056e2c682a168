import type { Queryable } from '@duplex/shared';

/** What the failover watcher has to do now, as one statement finds it. */
export interface FailoverWork {
  /** Agents of this server whose lease ran out and that are not marked lost yet, or attempts they still hold. */
  lostAgents: boolean;
  /** Open tasks of servers whose lease ran out. */
  orphans: boolean;
}

/**
 * One cheap look (index-only on the small agents and servers tables and on the open tasks)
 * for whether any failover work is waiting, so that the watcher, which runs five times a
 * second, opens no transaction and takes no locks while there is none.
 */
export async function findFailoverWork(db: Queryable, serverId: string): Promise<FailoverWork> {
  const { rows } = await db.raw<{ rows: { lost_agents: boolean; orphans: boolean }[] }>(
    `select exists (select 1 from agents a
                     where a.server_id = :server and a.lease_expires_at < now()
                       and (a.lost_at is null
                            or exists (select 1 from tasks t where t.agent_id = a.id and t.server_id = :server and t.state in ('dispatched', 'running'))))
              as lost_agents,
            exists (select 1 from servers s
                     where s.id <> :server and s.lease_expires_at < now()
                       and exists (select 1 from tasks t where t.server_id = s.id and t.state in ('queued', 'dispatched', 'running')))
              as orphans`,
    { server: serverId },
  );
  const row = rows[0];
  return { lostAgents: row?.lost_agents ?? false, orphans: row?.orphans ?? false };
}
