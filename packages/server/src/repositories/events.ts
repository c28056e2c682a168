import { decodeCursor, encodeCursor, invalidCursor, type Queryable } from '@duplex/shared';
import type { EventFilter, StreamedEvent, StreamPosition } from '../lib/event-stream.ts';

type EventRow = Omit<StreamedEvent, 'position'> & {
  /** xid8 as text: it can exceed 2^53. */
  stream_xid: string;
};

const columns = 'e.id, e.type, e.storage_system_id, e.task_id, e.payload, e.created_at, e.stream_xid::text as stream_xid';

// Every transaction below the snapshot's xmin has ended, and an event's stream_xid is never
// below its own transaction's id: the events below it are all visible, and none can be added.
const horizon = 'pg_snapshot_xmin(pg_current_snapshot())';

const positionOf = (row: { stream_xid: string; id: number }): StreamPosition => ({ xid: BigInt(row.stream_xid), id: row.id });

function toStreamed(row: EventRow): StreamedEvent {
  const { stream_xid: _xid, ...event } = row;
  return { ...event, position: positionOf(row) };
}

/**
 * The next events of the whole outbox after a position, in stream order. Each carries
 * whether it is settled (below the horizon); the first that is not, and all after it, must
 * wait: a transaction that is still open may yet add events before them.
 */
export async function readAfter(db: Queryable, after: StreamPosition, limit: number): Promise<{ event: StreamedEvent; settled: boolean }[]> {
  const { rows } = await db.raw<{ rows: (EventRow & { settled: boolean })[] }>(
    `select ${columns}, e.stream_xid < h.xmin as settled
       from events e cross join (select ${horizon} as xmin) h
      where (e.stream_xid, e.id) > (?::xid8, ?)
      order by e.stream_xid, e.id
      limit ?`,
    [after.xid.toString(), after.id, limit],
  );
  return rows.map(({ settled, ...row }) => ({ event: toStreamed(row), settled }));
}

/** A subscriber's backlog: its events after one position up to another (already settled), in stream order. */
export async function readRange(db: Queryable, after: StreamPosition, upTo: StreamPosition, filter: EventFilter, limit: number): Promise<StreamedEvent[]> {
  const query = db('events as e')
    .select(db.raw(columns))
    .whereRaw('(e.stream_xid, e.id) > (?::xid8, ?)', [after.xid.toString(), after.id])
    .whereRaw('(e.stream_xid, e.id) <= (?::xid8, ?)', [upTo.xid.toString(), upTo.id]);
  if (filter.types) query.whereIn('e.type', [...filter.types]);
  if (filter.storageSystemId !== undefined) query.where('e.storage_system_id', filter.storageSystemId);
  if (filter.taskId !== undefined) query.where('e.task_id', filter.taskId);
  const rows: EventRow[] = await query.orderBy([{ column: 'e.stream_xid' }, { column: 'e.id' }]).limit(limit);
  return rows.map(toStreamed);
}

/** The position of the newest settled event: where a stream without a position starts. */
export async function streamHead(db: Queryable): Promise<StreamPosition> {
  const { rows } = await db.raw<{ rows: { stream_xid: string; id: number }[] }>(
    `select e.stream_xid::text as stream_xid, e.id from events e where e.stream_xid < ${horizon} order by e.stream_xid desc, e.id desc limit 1`,
  );
  const row = rows[0];
  return row ? positionOf(row) : { xid: 0n, id: 0 };
}

/** The position of an event by its public id; undefined when the outbox does not hold it. */
export async function positionOfEvent(db: Queryable, id: string): Promise<StreamPosition | undefined> {
  const row: { stream_xid: string; id: number } | undefined = await db('events').where('id', id).first(db.raw('stream_xid::text as stream_xid'), 'id');
  return row ? positionOf(row) : undefined;
}

/**
 * A task's events in stream order, by (stream_xid, id) keyset. Only settled ones: the last id
 * of a page can then be used to follow the task on the stream without missing anything.
 */
export async function listTaskEvents(
  db: Queryable,
  taskId: string,
  limit: number,
  cursor: string | undefined,
): Promise<{ items: StreamedEvent[]; next_cursor: string | null }> {
  const query = db('events as e').select(db.raw(columns)).where('e.task_id', taskId).whereRaw(`e.stream_xid < ${horizon}`);
  if (cursor !== undefined) {
    const [xid, id] = decodeCursor(cursor, 2);
    if (typeof xid !== 'string' || !/^\d{1,20}$/.test(xid) || BigInt(xid) >= 2n ** 64n || typeof id !== 'number' || !Number.isSafeInteger(id)) throw invalidCursor();
    query.whereRaw('(e.stream_xid, e.id) > (?::xid8, ?)', [xid, id]);
  }
  const rows: EventRow[] = await query.orderBy([{ column: 'e.stream_xid' }, { column: 'e.id' }]).limit(limit + 1);
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  return { items: page.map(toStreamed), next_cursor: rows.length > limit && last ? encodeCursor([last.stream_xid, last.id]) : null };
}
