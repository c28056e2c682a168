import type { Queryable } from '@duplex/shared';

/** Takes or renews this server's lease row. */
export async function renewServerLease(
  db: Queryable,
  server: { id: string; url: string; instanceId: string; startedAt: Date },
  leaseTtlMs: number,
): Promise<Date> {
  const { rows } = await db.raw<{ rows: { lease_expires_at: Date }[] }>(
    `insert into servers (id, url, instance_id, started_at, heartbeat_at, lease_expires_at)
     values (?, ?, ?, ?, now(), now() + make_interval(secs => ? / 1000.0))
     on conflict (id) do update set url = excluded.url, instance_id = excluded.instance_id, started_at = excluded.started_at,
       heartbeat_at = now(), lease_expires_at = excluded.lease_expires_at
     returning lease_expires_at`,
    [server.id, server.url, server.instanceId, server.startedAt, leaseTtlMs],
  );
  return rows[0]!.lease_expires_at;
}
