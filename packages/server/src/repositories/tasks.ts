import type { ServerApi } from '@duplex/contracts';
import { decodeCursor, encodeCursor, invalidCursor, runStatement, type Queryable, type Statement } from '@duplex/shared';
import type { TaskKind, TaskParams, TaskState } from '../lib/task-rules.ts';

export type Task = ServerApi.components['schemas']['Task'];
export type TaskResult = ServerApi.components['schemas']['TaskResult'];
export type Problem = ServerApi.components['schemas']['Problem'];

export interface TaskRow {
  id: string;
  idempotency_key: string | null;
  request_hash: string;
  request_id: string | null;
  /** The W3C traceparent of the submitting request; the task's dispatches, runs and reports continue its trace. */
  traceparent: string | null;
  kind: TaskKind;
  storage_system_id: string;
  device: string;
  params: TaskParams;
  state: TaskState;
  attempt: number;
  fencing_token: number | null;
  server_id: string;
  cluster_id: string | null;
  agent_id: string | null;
  result: TaskResult | null;
  error: Problem | null;
  created_at: Date;
  updated_at: Date;
  dispatched_at: Date | null;
  finished_at: Date | null;
}

const iso = (value: Date | null): string | null => (value ? value.toISOString() : null);

export function toTaskResource(row: TaskRow): Task {
  return {
    id: row.id,
    kind: row.kind,
    storage_system_id: row.storage_system_id,
    device: row.device,
    params: row.params,
    state: row.state,
    attempt: row.attempt,
    fencing_token: row.fencing_token,
    server_id: row.server_id,
    cluster_id: row.cluster_id,
    agent_id: row.agent_id,
    result: row.result,
    error: row.error,
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
    dispatched_at: iso(row.dispatched_at),
    finished_at: iso(row.finished_at),
  };
}

export async function findTask(db: Queryable, id: string): Promise<TaskRow | undefined> {
  return db<TaskRow>('tasks').where({ id }).first();
}

export type NewTask = Pick<TaskRow, 'id' | 'idempotency_key' | 'request_hash' | 'request_id' | 'traceparent' | 'kind' | 'storage_system_id' | 'device' | 'params' | 'server_id'>;

/**
 * The tasks that hold these idempotency keys. Keys older than the TTL are released on the
 * spot (the periodic sweep may not have reached them yet), so they can be used again.
 */
export async function findTasksByIdempotencyKeys(db: Queryable, keys: string[], ttlHours: number): Promise<Map<string, TaskRow>> {
  if (keys.length === 0) return new Map();
  // One array parameter rather than a bind parameter per key, joined rather than `= any(...)`:
  // for 1,000 keys the planner prefers a scan of the whole table to 1,000 index probes.
  const { rows } = await db.raw<{ rows: TaskRow[] }>('select t.* from unnest(?::text[]) as k(key) join tasks t on t.idempotency_key = k.key', [keys]);
  const expiredBefore = Date.now() - ttlHours * 3_600_000;
  const expired = rows.filter((row) => row.created_at.getTime() <= expiredBefore);
  if (expired.length > 0) await db('tasks').whereIn('id', expired.map((row) => row.id)).update({ idempotency_key: null });
  return new Map(rows.filter((row) => row.created_at.getTime() > expiredBefore).map((row) => [row.idempotency_key!, row]));
}

export interface TaskFilters {
  state?: TaskState;
  kind?: TaskKind;
  storage_system_id?: string;
  device?: string;
}

/** Newest first, by (created_at, id) keyset. */
export async function listTasks(
  db: Queryable,
  filters: TaskFilters,
  limit: number,
  cursor: string | undefined,
): Promise<{ items: TaskRow[]; next_cursor: string | null }> {
  // The cursor keeps created_at to the microsecond, as Postgres stores it; a JS Date would
  // round to milliseconds and skip tasks created in the same millisecond.
  const query = db('tasks').select('*', db.raw(`to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as cursor_created_at`));
  for (const [column, value] of Object.entries(filters)) if (value !== undefined) query.where(column, value);
  if (cursor !== undefined) {
    const [createdAt, id] = decodeCursor(cursor, 2);
    if (typeof createdAt !== 'string' || !cursorTimePattern.test(createdAt) || typeof id !== 'string') throw invalidCursor();
    query.whereRaw('(created_at, id) < (?::timestamptz, ?)', [createdAt, id]);
  }
  const rows: (TaskRow & { cursor_created_at: string })[] = await query
    .orderBy([{ column: 'created_at', order: 'desc' }, { column: 'id', order: 'desc' }])
    .limit(limit + 1);
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  const items = page.map(({ cursor_created_at: _cursor, ...row }) => row);
  return { items, next_cursor: rows.length > limit && last ? encodeCursor([last.cursor_created_at, last.id]) : null };
}

const cursorTimePattern = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

/** What a dispatch round needs of a queued task to route it. */
export type QueuedTask = Pick<TaskRow, 'id' | 'storage_system_id' | 'device' | 'params'>;

/**
 * Locks this server's oldest queued tasks for dispatch, in submission order (the ids of one
 * commit sort in the order they were submitted); other transactions skip them. Only what
 * routing needs is read: markDispatched returns the rows it changed.
 */
export async function lockQueuedTasks(db: Queryable, serverId: string, limit: number): Promise<QueuedTask[]> {
  return runStatement<QueuedTask>(db, lockQueuedStatement, [serverId, limit]);
}

const lockQueuedStatement: Statement = {
  text: `select id, storage_system_id, device, params from tasks
          where server_id = $1 and state = 'queued' order by created_at, id limit $2 for update skip locked`,
};

/** Orders tasks as they were submitted: by commit time, then by id within a commit. */
export function bySubmission(a: TaskRow, b: TaskRow): number {
  return a.created_at.getTime() - b.created_at.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

export interface Assignment {
  id: string;
  agent_id: string;
  cluster_id: string;
}

/*
 * The statements that change a batch of tasks by id (marking them dispatched, applying reports,
 * putting attempts back) name their rows with `id = any(…)`, which Postgres counts, so it finds
 * each task by its primary key; and they check states only in forms that no partial index's
 * predicate follows from. A join with the batch alone is estimated at 100 rows and was planned as
 * a scan of the whole table on a small one; a plain check such as `state = 'queued'` let the
 * planner read the partial index of every queued or open task whenever the statistics lagged
 * behind a queue that grew fast (27 ms to mark 30 tasks with 100,000 queued, against 0.5 ms by
 * the key). A test counts what each statement reads.
 */

/**
 * Raises attempt and fencing token and marks the tasks dispatched, in one statement. The tasks
 * must have been locked by lockQueuedTasks in the same transaction, which keeps them queued
 * until it ends, so the statement checks no state.
 */
export async function markDispatched(db: Queryable, assignments: Assignment[]): Promise<TaskRow[]> {
  if (assignments.length === 0) return [];
  return runStatement<TaskRow>(db, markDispatchedStatement, [JSON.stringify(assignments), assignments.map((assignment) => assignment.id)]);
}

const markDispatchedStatement: Statement = {
  text: `update tasks t
            set state = 'dispatched', attempt = t.attempt + 1, fencing_token = nextval('fencing_token_seq'),
                agent_id = a.agent_id, cluster_id = a.cluster_id, dispatched_at = now(), updated_at = now()
           from jsonb_to_recordset($1::jsonb) as a(id text, agent_id text, cluster_id text)
          where t.id = any($2::text[]) and t.id = a.id
      returning t.*`,
};

/**
 * Puts attempts back in the queue, unless they moved on since (checked by token); with
 * `heldBy`, only attempts that agent holds.
 */
export async function requeueAttempts(db: Queryable, attempts: { id: string; fencing_token: number }[], heldBy?: string): Promise<TaskRow[]> {
  if (attempts.length === 0) return [];
  return runStatement<TaskRow>(db, requeueStatement, [JSON.stringify(attempts), heldBy ?? null, attempts.map((attempt) => attempt.id)]);
}

const requeueStatement: Statement = {
  text: `update tasks t
            set state = 'queued', agent_id = null, cluster_id = null, updated_at = now()
           from jsonb_to_recordset($1::jsonb) as a(id text, fencing_token bigint)
          where t.id = any($3::text[]) and t.id = a.id and t.fencing_token = a.fencing_token
            and (case t.state when 'dispatched' then true when 'running' then true else false end)
            and ($2::text is null or t.agent_id = $2)
      returning t.*`,
};

/**
 * Of the given task ids, those never dispatched to the agent (no `dispatched` step of its in the
 * task's history): an agent reports only on work it was given, earlier attempts included.
 */
export async function tasksNeverDispatchedTo(db: Queryable, agentId: string, taskIds: string[]): Promise<string[]> {
  const unique = [...new Set(taskIds)];
  if (unique.length === 0) return [];
  // Driven by `task_id = any(…)` on the history's index: as an anti-join with the given ids,
  // a table that grew faster than its statistics was planned as a scan of the whole history.
  const rows = await runStatement<{ task_id: string }>(db, dispatchedToStatement, [unique, agentId]);
  const dispatched = new Set(rows.map((row) => row.task_id));
  return unique.filter((id) => !dispatched.has(id));
}

const dispatchedToStatement: Statement = {
  text: `select distinct task_id from task_history where task_id = any($1::text[]) and agent_id = $2 and state = 'dispatched'`,
};

/** Requeues every open attempt held by an agent (used when it comes back as a new incarnation). */
export async function requeueAgentAttempts(db: Queryable, agentId: string): Promise<TaskRow[]> {
  return db<TaskRow>('tasks')
    .where({ agent_id: agentId })
    .whereIn('state', ['dispatched', 'running'])
    .update({ state: 'queued', agent_id: null, cluster_id: null, updated_at: db.fn.now() as never })
    .returning('*');
}

export interface StateReport {
  task_id: string;
  fencing_token: number;
  state: 'running' | 'succeeded' | 'failed' | 'refused';
  result?: TaskResult;
  error?: Problem;
  traceparent?: string;
}

/**
 * Applies the reports of agent `agentId` whose token is the current attempt's, an attempt that
 * agent holds; returns the rows that changed.
 */
export async function applyStateReports(db: Queryable, agentId: string, reports: StateReport[]): Promise<TaskRow[]> {
  if (reports.length === 0) return [];
  return runStatement<TaskRow>(db, applyReportsStatement, [JSON.stringify(reports), agentId, reports.map((report) => report.task_id)]);
}

const applyReportsStatement: Statement = {
  text: `update tasks t
            set state = r.state,
                result = coalesce(r.result, t.result),
                error = coalesce(r.error, t.error),
                finished_at = case when r.state in ('succeeded', 'failed') then now() else t.finished_at end,
                updated_at = now()
           from jsonb_to_recordset($1::jsonb) as r(task_id text, fencing_token bigint, state text, result jsonb, error jsonb)
          where t.id = any($3::text[]) and t.id = r.task_id and t.fencing_token = r.fencing_token and t.agent_id = $2
            and (case t.state when 'dispatched' then true when 'running' then r.state <> 'running' else false end)
      returning t.*`,
};

/**
 * Fails queued tasks that cannot run (their device is out of service), each with its problem.
 * Like markDispatched, it takes tasks locked by lockQueuedTasks in the same transaction.
 */
export async function failQueuedTasks(db: Queryable, failures: { id: string; error: Problem }[]): Promise<TaskRow[]> {
  if (failures.length === 0) return [];
  return runStatement<TaskRow>(db, failQueuedStatement, [JSON.stringify(failures), failures.map((failure) => failure.id)]);
}

const failQueuedStatement: Statement = {
  text: `update tasks t
            set state = 'failed', error = f.error, finished_at = now(), updated_at = now()
           from jsonb_to_recordset($1::jsonb) as f(id text, error jsonb)
          where t.id = any($2::text[]) and t.id = f.id
      returning t.*`,
};

export async function existingTaskIds(db: Queryable, ids: string[]): Promise<string[]> {
  const rows: { id: string }[] = await db('tasks').whereIn('id', ids).select('id');
  return rows.map((row) => row.id);
}

export async function cancelQueuedTask(db: Queryable, id: string): Promise<TaskRow | undefined> {
  const rows = await db<TaskRow>('tasks')
    .where({ id, state: 'queued' })
    .update({ state: 'cancelled', finished_at: db.fn.now() as never, updated_at: db.fn.now() as never })
    .returning('*');
  return rows[0];
}

/**
 * Writes each state change to the task's history and to the event outbox, in one statement
 * (one round trip), in the order of `rows`. It must run after the statement that changed the
 * rows, never in it: see the event_stream migration for why.
 *
 * With `notifyAfterCommit`, the outbox trigger does not notify the listeners: the caller does,
 * with notifyEventsCommitted once the transaction has committed. A NOTIFY holds Postgres's one
 * notification lock from the commit until its WAL flush is done, so every transaction that
 * notifies commits one at a time, each behind the other's fsync (see the quiet_event_notify migration).
 */
export async function recordTransitions(db: Queryable, rows: TaskRow[], options: { notifyAfterCommit?: boolean } = {}): Promise<void> {
  if (rows.length === 0) return;
  const changes = rows.map((row) => ({
    task_id: row.id,
    state: row.state,
    attempt: row.attempt,
    fencing_token: row.fencing_token,
    agent_id: row.agent_id,
    storage_system_id: row.storage_system_id,
    server_id: row.server_id,
  }));
  await runStatement(db, options.notifyAfterCommit === true ? transitionsStatements.quiet : transitionsStatements.loud, [JSON.stringify(changes)]);
}

/**
 * A CTE named `quiet` that tells the outbox trigger that this transaction's writer notifies
 * after its commit (the setting `duplex.notify_after_commit`, the transaction's own). A CTE
 * that only reads runs only when referenced: the events' INSERT must select from it.
 */
const notifyAfterCommitCte = "quiet as (select set_config('duplex.notify_after_commit', 'on', true))";

/**
 * recordTransitions' statement, with and without the notification after commit. The setting is
 * the transaction's own (set_config's is_local), read by the trigger at the statement's end.
 * Named: it only inserts, so its plan cannot depend on a table's size.
 */
const transitionsStatements = {
  loud: { name: 'record-transitions', text: transitionsSql(false) },
  quiet: { name: 'record-transitions-quiet', text: transitionsSql(true) },
} satisfies Record<string, Statement>;

function transitionsSql(quiet: boolean): string {
  return `with change as (
            select c.value as v, c.position from jsonb_array_elements($1::jsonb) with ordinality as c(value, position)
          ), history as (
            insert into task_history (task_id, state, attempt, fencing_token, agent_id)
            select v->>'task_id', v->>'state', (v->>'attempt')::int, (v->>'fencing_token')::bigint, v->>'agent_id' from change order by position
          )${quiet ? `, ${notifyAfterCommitCte}` : ''}
          insert into events (type, storage_system_id, task_id, payload)
          select 'task.state_changed', v->>'storage_system_id', v->>'task_id',
                 jsonb_build_object('task_id', v->'task_id', 'state', v->'state', 'attempt', v->'attempt', 'agent_id', v->'agent_id', 'server_id', v->'server_id')
            from change${quiet ? ' cross join quiet' : ''} order by position`;
}

const notifyStatement: Statement = { name: 'notify-events-committed', text: `select set_config('synchronous_commit', 'off', true), pg_notify('duplex_events', '')` };

/** Per database, the wake-up in flight, and whether more events committed since it was sent. */
const wakes = new WeakMap<Queryable, { again: boolean; done: Promise<void> }>();

/**
 * Wakes the servers' event feeds for events just committed by a transaction that recorded them
 * with `notifyAfterCommit`. The notification carries no data, so it needs no flush of its own
 * (synchronous_commit off): it takes the notification lock only for a moment. Calls made while
 * one is in flight are answered by one more after it, so waking takes one connection at most,
 * however long other writers hold the lock. It never fails: were it lost (an error, a crash
 * before it), the feeds find the events at their next poll.
 */
export function notifyEventsCommitted(db: Queryable): Promise<void> {
  const inFlight = wakes.get(db);
  if (inFlight) {
    inFlight.again = true;
    return inFlight.done;
  }
  const wake = { again: false, done: Promise.resolve() };
  wake.done = (async () => {
    try {
      do {
        wake.again = false;
        await runStatement(db, notifyStatement, []);
      } while (wake.again);
    } catch {
      // The feeds' poll finds the events.
    } finally {
      wakes.delete(db);
    }
  })();
  wakes.set(db, wake);
  return wake.done;
}

/** Forgets idempotency keys older than the TTL, so a key can be used again after it. */
export async function expireIdempotencyKeys(db: Queryable, ttlHours: number): Promise<number> {
  return db('tasks')
    .whereNotNull('idempotency_key')
    .where('created_at', '<', db.raw(`now() - make_interval(hours => ?)`, [ttlHours]))
    .update({ idempotency_key: null });
}

/** Puts back in the queue this server's attempts held by agents whose lease has run out. */
export async function requeueAttemptsOfExpiredAgents(db: Queryable, serverId: string): Promise<TaskRow[]> {
  const { rows } = await db.raw<{ rows: TaskRow[] }>(
    `update tasks t set state = 'queued', agent_id = null, cluster_id = null, updated_at = now()
       from agents a
      where t.agent_id = a.id and t.server_id = ? and t.state in ('dispatched', 'running') and a.lease_expires_at < now()
  returning t.*`,
    [serverId],
  );
  return rows;
}

/** Puts back in the queue this server's attempts on devices that another cluster now owns. */
export async function requeueAttemptsOnMovedDevices(
  db: Queryable,
  serverId: string,
  storageSystemId: string,
  ownerCluster: string,
  devices: string[],
): Promise<TaskRow[]> {
  if (devices.length === 0) return [];
  return db<TaskRow>('tasks')
    .where({ server_id: serverId, storage_system_id: storageSystemId })
    .whereIn('state', ['dispatched', 'running'])
    .whereIn('device', devices)
    .whereNot({ cluster_id: ownerCluster })
    .update({ state: 'queued', agent_id: null, cluster_id: null, updated_at: db.fn.now() as never })
    .returning('*');
}

/** Moves queued tasks to another server, whose own agent will run them. */
export async function handOverQueuedTasks(db: Queryable, fromServerId: string, toServerId: string, ids: string[]): Promise<TaskRow[]> {
  if (ids.length === 0) return [];
  return db<TaskRow>('tasks')
    .where({ server_id: fromServerId, state: 'queued' })
    .whereIn('id', ids)
    .update({ server_id: toServerId, updated_at: db.fn.now() as never })
    .returning('*');
}

/** Takes over the open tasks of servers whose lease ran out; their attempts are started again. */
export async function adoptTasksOfExpiredServers(db: Queryable, serverId: string): Promise<TaskRow[]> {
  const { rows } = await db.raw<{ rows: TaskRow[] }>(
    `update tasks t set server_id = ?, state = 'queued', agent_id = null, cluster_id = null, updated_at = now()
       from servers s
      where t.server_id = s.id and s.id <> ? and s.lease_expires_at < now() and t.state in ('queued', 'dispatched', 'running')
  returning t.*`,
    [serverId, serverId],
  );
  return rows;
}

export async function queuedTaskLocations(db: Queryable, serverId: string): Promise<Pick<TaskRow, 'id' | 'storage_system_id' | 'device'>[]> {
  return db<TaskRow>('tasks').where({ server_id: serverId, state: 'queued' }).select('id', 'storage_system_id', 'device').orderBy('created_at').limit(5000);
}

/** How many tasks there are in each state, per kind (one grouped scan, for the metrics). */
export async function countTasksByStateAndKind(db: Queryable): Promise<{ state: TaskState; kind: TaskKind; count: number }[]> {
  const rows: { state: TaskState; kind: TaskKind; count: string }[] = await db('tasks').select('state', 'kind').count('* as count').groupBy('state', 'kind');
  return rows.map((row) => ({ state: row.state, kind: row.kind, count: Number(row.count) }));
}
