import { ProblemError, runStatement, type Queryable, type Statement } from '@duplex/shared';
import type { SubmitCatalogEffect } from '../lib/task-rules.ts';
import type { NewTask, TaskRow } from './tasks.ts';
import { volumeNotFound } from './volumes.ts';

/** A task to accept, with what it needs of the volume catalog. */
export interface Submission {
  task: NewTask;
  effect: SubmitCatalogEffect;
}

export interface SubmissionResult {
  /** The tasks accepted, queued, in the order given. */
  accepted: TaskRow[];
  /** Per task id, the catalog problem that refused it; refused tasks leave nothing behind. */
  refused: Map<string, ProblemError>;
}

// The function plans its own statement, so the call can be prepared once per connection.
const acceptStatement: Statement = {
  name: 'accept-submissions',
  text: `select * from duplex_accept_submissions($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                                                 $9::text[], $10::text[], $11::text[], $12::text[], $13::boolean[], $14::text[], $15::text[], $16::bigint[])`,
};

/**
 * Accepts many tasks in one statement, which is its own transaction: the catalog checks, the
 * tasks, their history and their events commit together, or not at all. One round trip instead
 * of six: on a loaded machine each round trip waits for both processes to be scheduled again.
 *
 * Each check sees the catalog as it was before the statement, except that two tasks of the
 * batch cannot create the same name or delete the same volume (the first in the batch wins).
 * Names are reserved in the order of the catalog's key, so that two statements reserving some
 * of the same names wait for each other rather than deadlock.
 * A task whose check fails is not inserted. A task whose idempotency key a task already holds
 * is left out before any check, in neither list: the caller answers it with that task. A key taken by
 * a transaction that commits while this statement runs fails the whole statement, as a
 * deadlock with another statement does; isRetryableSubmission tells both, and the statement
 * can then run again as it is.
 *
 * The statement is the function duplex_accept_submissions (migration
 * 20261207000600_accept_submissions_function), which Postgres plans once per connection.
 *
 * The event feeds are not woken from inside the statement (see recordTransitions'
 * `notifyAfterCommit`): the caller wakes them with notifyEventsCommitted once it has committed.
 *
 * The events are written by the statement that inserts their tasks. The event_stream migration
 * asks for a later statement when an event reports on a row its statement waited for; a task
 * inserted here is new, so no change of it can have been committed before this one.
 */
export async function acceptSubmissions(db: Queryable, list: Submission[]): Promise<SubmissionResult> {
  if (list.length === 0) return { accepted: [], refused: new Map() };
  // node-postgres sends a null element as NULL.
  const column = (value: (item: Submission) => string | number | boolean | null | undefined) => list.map((item) => value(item) ?? null);
  const rows = await runStatement<{ taken_keys: string[]; missing_ids: string[]; marked_ids: string[]; reserved_ids: string[]; created_ms: number }>(
    db,
    acceptStatement,
    [
      column((item) => item.task.id),
      column((item) => item.task.idempotency_key),
      column((item) => item.task.request_hash),
      column((item) => item.task.request_id),
      column((item) => item.task.traceparent),
      column((item) => item.task.kind),
      column((item) => item.task.storage_system_id),
      column((item) => item.task.device),
      column((item) => JSON.stringify(item.task.params)),
      column((item) => item.task.server_id),
      column((item) => item.effect.mustExist?.device),
      column((item) => item.effect.mustExist?.name),
      column((item) => item.effect.markDeleting === true),
      column((item) => item.effect.reserve?.device),
      column((item) => item.effect.reserve?.name),
      column((item) => item.effect.reserve?.sizeBytes),
    ],
  );
  const result = rows[0]!;
  const taken = new Set(result.taken_keys);
  const missing = new Set(result.missing_ids);
  const marked = new Set(result.marked_ids);
  const reserved = new Set(result.reserved_ids);
  // created_at is the column's default, the transaction's now().
  const createdAt = new Date(Number(result.created_ms));
  const accepted: TaskRow[] = [];
  const refused = new Map<string, ProblemError>();
  for (const { task, effect } of list) {
    const { mustExist, reserve } = effect;
    if (taken.has(task.idempotency_key!)) continue;
    if (mustExist && (missing.has(task.id) || (effect.markDeleting === true && !marked.has(task.id)))) {
      refused.set(task.id, volumeNotFound(mustExist.device, mustExist.name));
    } else if (reserve && !reserved.has(task.id)) {
      refused.set(task.id, new ProblemError('volume-exists', `a volume named '${reserve.name}' already exists on device '${reserve.device}'`));
    } else accepted.push(queuedRow(task, createdAt));
  }
  return { accepted, refused };
}

/**
 * Whether acceptSubmissions failed in a way that running it again can get past: a key taken by
 * a transaction that committed meanwhile, or a deadlock with a concurrent statement (two
 * batches reserving the same volume names in different orders).
 */
export function isRetryableSubmission(error: unknown): boolean {
  const { code, constraint } = (error ?? {}) as { code?: unknown; constraint?: unknown };
  return (code === '23505' && constraint === 'tasks_idempotency_key_unique') || code === '40P01';
}

// Each field by name: spreading the new task into a row with a dozen more fields made V8 build
// a fresh hidden class per row, at ~40 µs a task (most of a batch's server CPU).
function queuedRow(task: NewTask, createdAt: Date): TaskRow {
  return {
    id: task.id,
    idempotency_key: task.idempotency_key,
    request_hash: task.request_hash,
    request_id: task.request_id,
    traceparent: task.traceparent,
    kind: task.kind,
    storage_system_id: task.storage_system_id,
    device: task.device,
    params: task.params,
    state: 'queued',
    attempt: 0,
    fencing_token: null,
    server_id: task.server_id,
    cluster_id: null,
    agent_id: null,
    result: null,
    error: null,
    created_at: createdAt,
    updated_at: createdAt,
    dispatched_at: null,
    finished_at: null,
  };
}
