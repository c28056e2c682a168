import { ProblemError, problemCodeOf, type Database, type Queryable } from '@duplex/shared';
import { newTaskId } from '../lib/ids.ts';
import type { InventoryView } from '../lib/inventory-view.ts';
import type { ServerMetrics } from '../metrics.ts';
import { devicesOf, requestHash, unusableDevice, settleCatalogActions, submitCatalogEffect, type SettleAction, type TaskRequest } from '../lib/task-rules.ts';
import { GroupCommitQueue } from '../lib/group-commit.ts';
import * as tasks from '../repositories/tasks.ts';
import { acceptSubmissions, isRetryableSubmission, type Submission, type SubmissionResult } from '../repositories/submissions.ts';
import { applySettleActions } from '../repositories/volumes.ts';

/** Has the volume catalog follow tasks that just succeeded or failed. */
export async function settleFinishedTasks(trx: Queryable, rows: tasks.TaskRow[]): Promise<void> {
  const actionsBySystem = new Map<string, SettleAction[]>();
  for (const row of rows) {
    if (row.state !== 'succeeded' && row.state !== 'failed') continue;
    const actions = settleCatalogActions(row, row.state, row.error ? problemCodeOf(row.error) : undefined);
    actionsBySystem.set(row.storage_system_id, [...(actionsBySystem.get(row.storage_system_id) ?? []), ...actions]);
  }
  for (const [storageSystemId, actions] of actionsBySystem) await applySettleActions(trx, storageSystemId, actions);
}

export interface SubmitOutcome {
  task: tasks.TaskRow;
  replayed: boolean;
}

export type BatchOutcome = SubmitOutcome | { problem: ProblemError };

/** One task to accept, with the request it came in. */
export interface SubmitItem {
  request: TaskRequest;
  idempotencyKey: string;
  requestId: string;
  traceparent?: string;
}

/** The most single submissions committed together. */
const maxSubmissionsPerCommit = 500;

/**
 * Commits of single submissions under way at once. A submission that arrives during a commit
 * starts the next at once instead of waiting for that one's end (about a round trip and a WAL
 * flush); more than a few would only split the same work into more, smaller statements.
 */
const submissionCommitsInFlight = 2;

/** How many times a batch's statement may run before its leftovers are answered "retry". */
const maxCommitAttempts = 5;

/** A submission that passed the checks made in the server, with where its outcome goes. */
type FreshSubmission = Submission & { index: number };

/**
 * Accepting, cancelling and completing tasks. Each change commits the task, the volume
 * catalog, the history and the event outbox in one transaction.
 */
export class TaskService {
  /**
   * Single submissions that arrive together commit together. Two under one idempotency key
   * never share a commit nor run in two at once: the later one finds the first one's task and
   * is answered as a replay.
   */
  private readonly queue = new GroupCommitQueue<SubmitItem, BatchOutcome>((items) => this.submitMany(items), {
    maxBatch: maxSubmissionsPerCommit,
    keyOf: (item) => item.idempotencyKey,
    maxInFlight: submissionCommitsInFlight,
  });

  constructor(
    private readonly db: Database,
    private readonly serverId: string,
    private readonly inventory: InventoryView,
    private readonly idempotencyKeyTtlHours: number,
    private readonly metrics?: ServerMetrics,
  ) {}

  /** Accepts one task; submissions that arrive together are committed together. */
  async submit(item: SubmitItem): Promise<SubmitOutcome> {
    const outcome = await this.queue.add(item);
    if ('problem' in outcome) throw outcome.problem;
    return outcome;
  }

  /**
   * Accepts many tasks at once, each under its own idempotency key, in one statement (its own
   * transaction) that also finds the keys already used and leaves those tasks out: one round
   * trip in the usual case. Each task is accepted, replayed or refused on its own.
   */
  async submitMany(items: SubmitItem[]): Promise<BatchOutcome[]> {
    const outcomes: (BatchOutcome | undefined)[] = new Array(items.length);
    const fresh: FreshSubmission[] = [];
    const refusedHere: { index: number; key: string; hash: string; problem: ProblemError }[] = [];
    const keysInBatch = new Set<string>();
    items.forEach((item, index) => {
      // `params` may be left out for kinds that take none; it means the same as {}.
      const request = { ...item.request, params: item.request.params ?? {} } as TaskRequest;
      const { idempotencyKey: key, requestId, traceparent } = item;
      if (keysInBatch.has(key)) return void (outcomes[index] = { problem: new ProblemError('idempotency-key-in-use', `key '${key}' is used twice in this request`) });
      keysInBatch.add(key);
      const hash = requestHash(request);
      try {
        this.checkAgainstInventory(request);
      } catch (error) {
        if (!(error instanceof ProblemError)) throw error;
        return void refusedHere.push({ index, key, hash, problem: error });
      }
      const task: tasks.NewTask = {
        id: newTaskId(),
        idempotency_key: key,
        request_hash: hash,
        request_id: requestId,
        traceparent: traceparent ?? null,
        kind: request.kind,
        storage_system_id: request.storage_system_id,
        device: request.device,
        params: request.params ?? {},
        server_id: this.serverId,
      };
      fresh.push({ index, task, effect: submitCatalogEffect(request) });
    });

    // A key already used is answered with its task, whatever the inventory says now.
    if (refusedHere.length > 0) {
      const held = await tasks.findTasksByIdempotencyKeys(this.db, refusedHere.map((item) => item.key), this.idempotencyKeyTtlHours);
      for (const item of refusedHere) {
        const holder = held.get(item.key);
        outcomes[item.index] = holder ? this.replayOutcome(holder, item.hash) : { problem: item.problem };
      }
    }

    let pending = fresh;
    for (let attempt = 1; pending.length > 0 && attempt <= maxCommitAttempts; attempt++) pending = await this.commitFresh(pending, outcomes);
    for (const item of pending) outcomes[item.index] = { problem: new ProblemError('idempotency-key-in-use', 'a request with this Idempotency-Key is still being processed; retry') };
    return outcomes as BatchOutcome[];
  }

  /**
   * One commit of fresh submissions, answering each in `outcomes`; returns those to commit
   * again: keys held by tasks past the idempotency TTL (released by the lookup), and all of
   * them after a statement that can be run again failed.
   */
  private async commitFresh(pending: FreshSubmission[], outcomes: (BatchOutcome | undefined)[]): Promise<FreshSubmission[]> {
    let result: SubmissionResult | undefined;
    try {
      result = await acceptSubmissions(this.db, pending);
    } catch (error) {
      if (!isRetryableSubmission(error)) throw error;
    }
    if (result && result.accepted.length > 0) void tasks.notifyEventsCommitted(this.db);
    const accepted = new Map(result?.accepted.map((row) => [row.id, row]));
    for (const item of pending) {
      const row = accepted.get(item.task.id);
      if (!row) continue;
      outcomes[item.index] = { task: row, replayed: false };
      this.metrics?.submitted(row.kind);
    }
    // The others may have a task under their key: one made before (the statement left it out),
    // or one a concurrent retry of the same request made first (which made this one's catalog
    // check fail, or the statement). Those are answered with that task.
    const unsettled = pending.filter((item) => !accepted.has(item.task.id));
    if (unsettled.length === 0) return [];
    const holders = await tasks.findTasksByIdempotencyKeys(this.db, unsettled.map((item) => item.task.idempotency_key!), this.idempotencyKeyTtlHours);
    const again: FreshSubmission[] = [];
    for (const item of unsettled) {
      const holder = holders.get(item.task.idempotency_key!);
      const problem = result?.refused.get(item.task.id);
      if (holder) outcomes[item.index] = this.replayOutcome(holder, item.task.request_hash);
      else if (problem) outcomes[item.index] = { problem };
      else again.push(item);
    }
    return again;
  }

  private replayOutcome(existing: tasks.TaskRow, hash: string): BatchOutcome {
    if (existing.request_hash !== hash) {
      return { problem: new ProblemError('idempotency-key-reused', `this Idempotency-Key was used for task ${existing.id} with a different body`) };
    }
    return { task: existing, replayed: true };
  }

  /** Refuses a task this server's inventory says cannot run: unknown or unavailable devices, sizes beyond capacity. */
  private checkAgainstInventory(request: TaskRequest): void {
    if (this.inventory.clustersOf(request.storage_system_id).length === 0) {
      throw new ProblemError('storage-system-not-found', `storage system '${request.storage_system_id}' is not known to this server`);
    }
    for (const deviceId of devicesOf(request)) {
      if (!this.inventory.locate(request.storage_system_id, deviceId)) {
        throw new ProblemError('device-not-found', `device '${deviceId}' is not in storage system '${request.storage_system_id}'`);
      }
    }
    const unusable = unusableDevice(this.inventory, request);
    if (unusable) throw new ProblemError('device-unavailable', unusable);
    const sized = submitCatalogEffect(request).sizeOnDevice;
    if (sized) {
      const capacity = this.inventory.locate(request.storage_system_id, sized.device)?.device.capacity_bytes ?? 0;
      if (sized.sizeBytes > capacity) {
        throw new ProblemError('insufficient-capacity', `${sized.sizeBytes} bytes is more than device '${sized.device}' holds (${capacity} bytes)`);
      }
    }
  }

  async cancel(id: string): Promise<tasks.TaskRow> {
    return this.db.transaction(async (trx) => {
      const row = await tasks.cancelQueuedTask(trx, id);
      if (!row) {
        const current = await tasks.findTask(trx, id);
        if (!current) throw new ProblemError('task-not-found', `task '${id}' does not exist`);
        throw new ProblemError('task-not-cancellable', `task '${id}' is ${current.state}`);
      }
      await applySettleActions(trx, row.storage_system_id, settleCatalogActions(row, 'cancelled'));
      await tasks.recordTransitions(trx, [row]);
      return row;
    });
  }

  /**
   * Applies agent `agentId`'s reports; each report whose token is not the current attempt's is
   * stale. A batch that reports on a task never dispatched to the agent is refused whole (403)
   * and changes nothing. Only the reports that did not apply need that check: an attempt the
   * agent holds under the reported token was dispatched to it.
   */
  async applyReports(agentId: string, reports: tasks.StateReport[]): Promise<Map<string, 'applied' | 'stale' | 'unknown'>> {
    const refused = reports.filter((report) => report.state === 'refused');
    const changed = await this.db.transaction(async (trx) => {
      const requeued = await tasks.requeueAttempts(trx, refused.map((report) => ({ id: report.task_id, fencing_token: report.fencing_token })), agentId);
      const rows = await tasks.applyStateReports(trx, agentId, reports.filter((report) => report.state !== 'refused'));
      const applied = new Set([...requeued, ...rows].map((row) => row.id));
      const strangers = await tasks.tasksNeverDispatchedTo(trx, agentId, reports.filter((report) => !applied.has(report.task_id)).map((report) => report.task_id));
      if (strangers.length > 0) {
        throw new ProblemError('forbidden', `agent '${agentId}' reports on tasks never dispatched to it: ${strangers.slice(0, 10).join(', ')}`);
      }
      await settleFinishedTasks(trx, rows);
      await tasks.recordTransitions(trx, [...requeued, ...rows], { notifyAfterCommit: true });
      return [...requeued, ...rows];
    });
    if (changed.length > 0) void tasks.notifyEventsCommitted(this.db);
    this.metrics?.settled(changed);
    const outcome = new Map<string, 'applied' | 'stale' | 'unknown'>(reports.map((report) => [report.task_id, 'stale']));
    for (const row of changed) outcome.set(row.id, 'applied');
    const unsettled = [...outcome].filter(([, value]) => value === 'stale').map(([id]) => id);
    if (unsettled.length > 0) {
      const known = new Set(await tasks.existingTaskIds(this.db, unsettled));
      for (const id of unsettled) if (!known.has(id)) outcome.set(id, 'unknown');
    }
    return outcome;
  }
}
