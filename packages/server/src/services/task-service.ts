import { ProblemError, problemCodeOf, type Database, type Queryable } from '@duplex/shared';
import { newTaskId } from '../lib/ids.ts';
import type { InventoryView } from '../lib/inventory-view.ts';
import type { ServerMetrics } from '../metrics.ts';
import { devicesOf, requestHash, unusableDevice, settleCatalogActions, submitCatalogEffect, type SettleAction, type TaskRequest } from '../lib/task-rules.ts';
import { GroupCommitQueue } from '../lib/group-commit.ts';
import * as tasks from '../repositories/tasks.ts';
import { acceptSubmissions, isIdempotencyKeyTaken, type SubmissionResult } from '../repositories/submissions.ts';
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

/** How many times a batch is committed again after another request took one of its keys. */
const maxKeyRaces = 5;

/**
 * Accepting, cancelling and completing tasks. Each change commits the task, the volume
 * catalog, the history and the event outbox in one transaction.
 */
export class TaskService {
  /**
   * Single submissions that arrive together commit together. Two under one idempotency key
   * never share a commit: the later one finds the first one's task and is answered as a replay.
   */
  private readonly queue = new GroupCommitQueue<SubmitItem, BatchOutcome>((items) => this.submitMany(items), {
    maxBatch: maxSubmissionsPerCommit,
    keyOf: (item) => item.idempotencyKey,
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
   * Accepts many tasks at once, each under its own idempotency key: one query finds the keys
   * already used, and one statement (its own transaction) inserts the rest with their catalog
   * checks, history and events. Each task is accepted, replayed or refused on its own.
   */
  async submitMany(items: SubmitItem[]): Promise<BatchOutcome[]> {
    // `params` may be left out for kinds that take none; it means the same as {}.
    const requests = items.map((item) => ({ ...item.request, params: item.request.params ?? {} }) as TaskRequest);
    const hashes = requests.map(requestHash);
    const outcomes: (BatchOutcome | undefined)[] = new Array(requests.length);
    const existing = await tasks.findTasksByIdempotencyKeys(this.db, items.map((item) => item.idempotencyKey), this.idempotencyKeyTtlHours);
    const fresh: { index: number; task: tasks.NewTask; request: TaskRequest }[] = [];
    const keysInBatch = new Set<string>();
    requests.forEach((request, index) => {
      const { idempotencyKey: key, requestId, traceparent } = items[index]!;
      const held = existing.get(key);
      if (held) return void (outcomes[index] = this.replayOutcome(held, hashes[index]!));
      if (keysInBatch.has(key)) return void (outcomes[index] = { problem: new ProblemError('idempotency-key-in-use', `key '${key}' is used twice in this request`) });
      keysInBatch.add(key);
      try {
        this.checkAgainstInventory(request);
      } catch (error) {
        if (error instanceof ProblemError) return void (outcomes[index] = { problem: error });
        throw error;
      }
      fresh.push({
        index,
        request,
        task: {
          id: newTaskId(),
          idempotency_key: key,
          request_hash: hashes[index]!,
          request_id: requestId,
          traceparent: traceparent ?? null,
          kind: request.kind,
          storage_system_id: request.storage_system_id,
          device: request.device,
          params: request.params ?? {},
          server_id: this.serverId,
        },
      });
    });

    // A key taken since the lookup above fails the statement: answer those tasks as replays of
    // what took their keys, and commit the rest again.
    let pending = fresh;
    let committed: SubmissionResult = { accepted: [], refused: new Map() };
    for (let attempt = 1; pending.length > 0; attempt++) {
      try {
        committed = await acceptSubmissions(this.db, pending.map((item) => ({ task: item.task, effect: submitCatalogEffect(item.request) })));
        break;
      } catch (error) {
        if (!isIdempotencyKeyTaken(error)) throw error;
        if (attempt === maxKeyRaces) break;
        const taken = await tasks.findTasksByIdempotencyKeys(this.db, pending.map((item) => item.task.idempotency_key!), this.idempotencyKeyTtlHours);
        pending = pending.filter((item) => !taken.has(item.task.idempotency_key!));
      }
    }
    if (committed.accepted.length > 0) void tasks.notifyEventsCommitted(this.db);
    const accepted = new Map(committed.accepted.map((row) => [row.id, row]));
    const { refused } = committed;

    // Keys another request took meanwhile are answered with what that request made, refused ones
    // too: a concurrent retry of this request reserved the same volume names first.
    const raced = fresh.filter((item) => !accepted.has(item.task.id));
    const winners = await tasks.findTasksByIdempotencyKeys(this.db, raced.map((item) => item.task.idempotency_key!), this.idempotencyKeyTtlHours);
    for (const item of fresh) {
      const row = accepted.get(item.task.id);
      const problem = refused.get(item.task.id);
      const winner = winners.get(item.task.idempotency_key!);
      if (row) {
        outcomes[item.index] = { task: row, replayed: false };
        this.metrics?.submitted(row.kind);
      } else if (winner) outcomes[item.index] = this.replayOutcome(winner, item.task.request_hash);
      else if (problem) outcomes[item.index] = { problem };
      else outcomes[item.index] = { problem: new ProblemError('idempotency-key-in-use', 'a request with this Idempotency-Key is still being processed; retry') };
    }
    return outcomes as BatchOutcome[];
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

  /** Applies an agent's reports; each report whose token is not the current attempt's is stale. */
  async applyReports(reports: tasks.StateReport[]): Promise<Map<string, 'applied' | 'stale' | 'unknown'>> {
    const refused = reports.filter((report) => report.state === 'refused');
    const changed = await this.db.transaction(async (trx) => {
      const requeued = await tasks.requeueAttempts(trx, refused.map((report) => ({ id: report.task_id, fencing_token: report.fencing_token })));
      const rows = await tasks.applyStateReports(trx, reports.filter((report) => report.state !== 'refused'));
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
