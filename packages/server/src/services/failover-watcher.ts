import type { FastifyBaseLogger } from 'fastify';
import type { ServerContext } from '../context.ts';
import { withoutAgentSince } from '../lib/agent-registry.ts';
import { markLostAgents, serversWithLiveAgent } from '../repositories/agents.ts';
import { findFailoverWork } from '../repositories/failover.ts';
import * as tasks from '../repositories/tasks.ts';

/**
 * Runs on an interval and moves work away from what failed:
 * - this server's agents whose lease ran out are marked lost (`agent.lost`, once per lost
 *   lease), and the attempts they held go back to the queue, to run again (under new tokens)
 *   when the agent is back or the work moves;
 * - queued tasks for a cluster where this server has had no live agent for the grace period
 *   go to another server that has one there (the second server-agent pair);
 * - open tasks of servers whose lease ran out are adopted by this one.
 * A server that does not hold its own lease does none of this (it may be the one cut off).
 */
export class FailoverWatcher {
  private readonly timer: NodeJS.Timeout;
  private running = false;
  private readonly startedAt = Date.now();

  constructor(
    private readonly context: ServerContext,
    private readonly log: FastifyBaseLogger,
  ) {
    this.timer = setInterval(() => void this.check(), context.config.FAILOVER_CHECK_INTERVAL_MS);
    this.timer.unref();
  }

  async check(): Promise<void> {
    if (this.running || this.context.lease.expiresAt <= Date.now()) return;
    this.running = true;
    try {
      // One statement says whether anything failed; the work itself runs only then.
      const work = await findFailoverWork(this.context.db, this.context.config.SERVER_ID);
      let moved = 0;
      if (work.lostAgents) moved += await this.requeueLostAttempts();
      if (this.someClusterWithoutAgent()) moved += await this.handOver();
      if (work.orphans) moved += await this.adoptOrphans();
      if (moved > 0) this.context.dispatcher.kick();
    } catch (error) {
      this.log.warn({ err: error }, 'failover check failed');
    } finally {
      this.running = false;
    }
  }

  private async requeueLostAttempts(): Promise<number> {
    const { db, config } = this.context;
    const { lost, rows } = await db.transaction(async (trx) => {
      const lostAgents = await markLostAgents(trx, config.SERVER_ID);
      const requeued = await tasks.requeueAttemptsOfExpiredAgents(trx, config.SERVER_ID);
      await tasks.recordTransitions(trx, requeued);
      return { lost: lostAgents, rows: requeued };
    });
    this.context.metrics.agentLeasesExpired(lost.length);
    for (const agent of lost) this.log.warn({ agent_id: agent.id, incarnation: agent.incarnation }, 'agent lost: its lease ran out');
    if (rows.length > 0) this.log.warn({ tasks: rows.length }, 'attempts of lost agents are queued again');
    return rows.length;
  }

  /** Whether this server has had no live agent in some cluster it knows for the grace period. */
  private someClusterWithoutAgent(): boolean {
    const { inventory, agents, config } = this.context;
    const now = Date.now();
    return inventory.storageSystemIds().some((systemId) =>
      inventory.clustersOf(systemId).some((cluster) => {
        const since = withoutAgentSince(agents, systemId, cluster.cluster_id, now, this.startedAt);
        return since !== undefined && now - since >= config.AGENT_GRACE_MS;
      }),
    );
  }

  private async handOver(): Promise<number> {
    const { db, config, inventory, agents } = this.context;
    const now = Date.now();
    const queued = await tasks.queuedTaskLocations(db, config.SERVER_ID);
    const byCluster = new Map<string, { storageSystemId: string; clusterId: string; ids: string[] }>();
    for (const task of queued) {
      const location = inventory.locate(task.storage_system_id, task.device);
      if (!location) continue;
      const clusterId = location.cluster.cluster_id;
      const since = withoutAgentSince(agents, task.storage_system_id, clusterId, now, this.startedAt);
      if (since === undefined || now - since < config.AGENT_GRACE_MS) continue;
      const key = `${task.storage_system_id}/${clusterId}`;
      const group = byCluster.get(key) ?? { storageSystemId: task.storage_system_id, clusterId, ids: [] };
      group.ids.push(task.id);
      byCluster.set(key, group);
    }
    let moved = 0;
    for (const { storageSystemId, clusterId, ids } of byCluster.values()) {
      const [target] = await serversWithLiveAgent(db, config.SERVER_ID, storageSystemId, clusterId);
      if (!target) continue;
      const rows = await db.transaction(async (trx) => {
        const handed = await tasks.handOverQueuedTasks(trx, config.SERVER_ID, target, ids);
        await tasks.recordTransitions(trx, handed);
        return handed;
      });
      if (rows.length > 0) {
        this.context.metrics.handedOver();
        this.log.warn({ tasks: rows.length, cluster: clusterId, to_server: target }, 'no agent in the cluster: tasks handed to another server');
      }
      moved += rows.length;
    }
    return moved;
  }

  private async adoptOrphans(): Promise<number> {
    const { db, config } = this.context;
    const rows = await db.transaction(async (trx) => {
      const adopted = await tasks.adoptTasksOfExpiredServers(trx, config.SERVER_ID);
      await tasks.recordTransitions(trx, adopted);
      return adopted;
    });
    if (rows.length > 0) {
      this.context.metrics.adopted(rows.length);
      this.log.warn({ tasks: rows.length }, 'adopted the open tasks of a server whose lease ran out');
    }
    return rows.length;
  }

  close(): void {
    clearInterval(this.timer);
  }
}
