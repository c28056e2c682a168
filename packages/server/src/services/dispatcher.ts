import type { AgentApi } from '@duplex/contracts';
import { bearer, JsonClient, problemDocument, type Database } from '@duplex/shared';
import type { FastifyBaseLogger } from 'fastify';
import type { AgentRegistry, RegisteredAgent } from '../lib/agent-registry.ts';
import type { InventoryView } from '../lib/inventory-view.ts';
import { unusableDevice } from '../lib/task-rules.ts';
import type { ServerMetrics } from '../metrics.ts';
import * as tasks from '../repositories/tasks.ts';
import { settleFinishedTasks } from './task-service.ts';

type TaskDispatch = AgentApi.components['schemas']['TaskDispatch'];

export interface DispatcherOptions {
  db: Database;
  serverId: string;
  agents: AgentRegistry;
  inventory: InventoryView;
  log: FastifyBaseLogger;
  batchSize: number;
  retryMs: number;
  /** This server's lease; without it the server dispatches nothing (it may be the one cut off). */
  lease: { expiresAt: number };
  metrics?: ServerMetrics;
}

/**
 * Moves this server's queued tasks to its agents. Rounds run one at a time: a round claims
 * up to a batch of queued tasks, assigns each to this server's agent in the cluster that
 * owns its device, commits them as dispatched under new fencing tokens, and sends one
 * request per agent. Kicks that arrive during a round start one more round after it.
 */
export class Dispatcher {
  private running = false;
  private again = false;
  private stopped = false;
  private readonly clients = new Map<string, JsonClient>();
  private readonly sweepTimer: NodeJS.Timeout;
  private idle: Promise<void> = Promise.resolve();

  constructor(private readonly options: DispatcherOptions) {
    // A safety net for kicks that found no route (agent not yet registered, device moving).
    this.sweepTimer = setInterval(() => this.kick(), Math.max(options.retryMs, 250));
    this.sweepTimer.unref();
  }

  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    this.idle = this.loop().finally(() => {
      this.running = false;
    });
  }

  private async loop(): Promise<void> {
    do {
      this.again = false;
      try {
        const sent = await this.round();
        if (sent >= this.options.batchSize) this.again = true;
      } catch (error) {
        this.options.log.warn({ err: error }, 'dispatch round failed; will retry');
      }
    } while (this.again && !this.stopped);
  }

  private async round(): Promise<number> {
    const now = Date.now();
    if (this.options.lease.expiresAt <= now) return 0;
    const { rows: dispatched, recorded } = await this.options.db.transaction(async (trx) => {
      const queued = await tasks.lockQueuedTasks(trx, this.options.serverId, this.options.batchSize);
      const assignments: tasks.Assignment[] = [];
      const failures: { id: string; error: tasks.Problem }[] = [];
      for (const task of queued) {
        // A task for a device out of service fails now rather than waiting (or looping) for it.
        const unusable = unusableDevice(this.options.inventory, task);
        if (unusable) {
          failures.push({ id: task.id, error: problemDocument('device-unavailable', unusable) });
          continue;
        }
        const location = this.options.inventory.locate(task.storage_system_id, task.device);
        if (!location) continue;
        const agent = this.options.agents.routeFor(task.storage_system_id, location.cluster.cluster_id, now);
        if (agent) assignments.push({ id: task.id, agent_id: agent.id, cluster_id: location.cluster.cluster_id });
      }
      const failed = await tasks.failQueuedTasks(trx, failures);
      await settleFinishedTasks(trx, failed);
      const rows = await tasks.markDispatched(trx, assignments);
      await tasks.recordTransitions(trx, [...failed, ...rows], { notifyAfterCommit: true });
      if (failed.length > 0) this.options.log.warn({ tasks: failed.length }, 'tasks for devices out of service failed');
      return { rows, recorded: failed.length + rows.length };
    });
    if (recorded > 0) void tasks.notifyEventsCommitted(this.options.db);
    this.options.metrics?.dispatched(dispatched);
    // An UPDATE returns its rows in no particular order; an agent runs a device's tasks in the order they arrive.
    dispatched.sort(tasks.bySubmission);
    const byAgent = new Map<string, tasks.TaskRow[]>();
    for (const row of dispatched) {
      const list = byAgent.get(row.agent_id!) ?? [];
      list.push(row);
      byAgent.set(row.agent_id!, list);
    }
    await Promise.all([...byAgent].map(([agentId, rows]) => this.send(agentId, rows)));
    return dispatched.length;
  }

  private async send(agentId: string, rows: tasks.TaskRow[]): Promise<void> {
    const agent = this.options.agents.get(agentId);
    const dispatches = rows.map((row) => this.toDispatch(row));
    try {
      if (!agent) throw new Error('the agent is no longer registered');
      if (!agent.dispatchCredential) throw new Error('the agent has not shown its credential since this server started');
      // A batch's request carries its first task's ids; each task carries its own in the body.
      const first = dispatches[0];
      const response = await this.clientFor(agent).call('POST', '/v1/tasks', {
        body: { tasks: dispatches },
        requestId: first?.request_id,
        traceparent: first?.traceparent,
        // The agent's own credential: the agent takes tasks only from the server it registered with.
        headers: bearer(agent.dispatchCredential),
      });
      if (response.status === 202) return;
      throw new Error(`the agent answered ${response.status}`);
    } catch (error) {
      this.options.log.warn({ agent_id: agentId, tasks: rows.length, err: error }, 'dispatch failed; the attempts go back to the queue');
      this.options.agents.markUnreachable(agentId, Date.now() + this.options.retryMs);
      const requeued = await this.options.db.transaction(async (trx) => {
        const back = await tasks.requeueAttempts(trx, rows.map((row) => ({ id: row.id, fencing_token: row.fencing_token! })));
        await tasks.recordTransitions(trx, back);
        return back;
      });
      if (requeued.length > 0) setTimeout(() => this.kick(), this.options.retryMs).unref();
    }
  }

  private toDispatch(row: tasks.TaskRow): TaskDispatch {
    const location = this.options.inventory.locate(row.storage_system_id, row.device);
    const dispatch: TaskDispatch = {
      task_id: row.id,
      kind: row.kind,
      device: row.device,
      params: row.params,
      attempt: row.attempt,
      fencing_token: row.fencing_token!,
      epoch: location?.device.epoch ?? 0,
    };
    if (row.request_id) dispatch.request_id = row.request_id;
    if (row.traceparent) dispatch.traceparent = row.traceparent;
    return dispatch;
  }

  private clientFor(agent: RegisteredAgent): JsonClient {
    let client = this.clients.get(agent.url);
    if (!client) {
      client = new JsonClient(agent.url, { name: `agent ${agent.id}`, timeoutMs: 5_000 });
      this.clients.set(agent.url, client);
    }
    return client;
  }

  async close(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweepTimer);
    await this.idle;
    await Promise.all([...this.clients.values()].map((client) => client.close()));
  }
}

