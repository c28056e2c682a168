import { Counter, Gauge, Histogram, latencyBuckets, secondsBetween, type Database, type Registry } from '@duplex/shared';
import type { FastifyBaseLogger } from 'fastify';
import type { InventoryView } from './lib/inventory-view.ts';
import { openStates, terminalStates } from './lib/task-rules.ts';
import { countTasksByStateAndKind, type TaskRow } from './repositories/tasks.ts';

const taskStates = [...openStates, ...terminalStates];

/**
 * What a server counts and times. Gauges of state (tasks, inventory versions) are read when
 * Prometheus scrapes; counters and histograms are recorded where things happen, through the
 * methods below, whose label children are made once so that recording allocates nothing.
 */
export class ServerMetrics {
  private readonly tasksSubmitted: Counter<'kind'>;
  private readonly firstDispatch: Histogram.Internal<'attempt'>;
  private readonly retryDispatch: Histogram.Internal<'attempt'>;
  private readonly succeeded: Histogram.Internal<'outcome'>;
  private readonly failed: Histogram.Internal<'outcome'>;
  private readonly heartbeatRenewed: Counter.Internal;
  private readonly heartbeatRefused: Counter.Internal;
  private readonly agentLeaseExpiries: Counter;
  private readonly serverLeaseExpiries: Counter;
  private readonly adoptedTasks: Counter;
  private readonly failovers: Counter<'kind'>;
  private countedServerExpiry = 0;

  constructor(registry: Registry, sources: { db: Database; inventory: InventoryView; log: FastifyBaseLogger }) {
    const registers = [registry];
    const kindsSeen = new Set<string>();
    const tasks: Gauge<'state' | 'kind'> = new Gauge({
      name: 'duplex_tasks',
      help: 'Tasks in the shared task store, by state and kind (every server reports the same totals).',
      labelNames: ['state', 'kind'],
      registers,
      async collect() {
        try {
          const counts = await countTasksByStateAndKind(sources.db);
          for (const { kind } of counts) kindsSeen.add(kind);
          // A state that emptied reads 0 rather than vanishing from the series.
          for (const kind of kindsSeen) for (const state of taskStates) tasks.set({ state, kind }, 0);
          for (const { state, kind, count } of counts) tasks.set({ state, kind }, count);
        } catch (error) {
          // The scrape still answers with the other metrics; these keep their last values.
          sources.log.warn({ err: (error as Error).message }, 'could not count the tasks for the metrics');
        }
      },
    });
    const inventoryVersion: Gauge<'storage_system_id' | 'cluster_id'> = new Gauge({
      name: 'duplex_inventory_version',
      help: "The inventory version of each cluster in this server's view, as its agents reported it.",
      labelNames: ['storage_system_id', 'cluster_id'],
      registers,
      collect() {
        for (const storageSystemId of sources.inventory.storageSystemIds()) {
          for (const view of sources.inventory.clustersOf(storageSystemId)) {
            inventoryVersion.set({ storage_system_id: storageSystemId, cluster_id: view.cluster_id }, view.version);
          }
        }
      },
    });
    this.tasksSubmitted = new Counter({ name: 'duplex_tasks_submitted_total', help: 'Tasks accepted by this server (replays not counted), by kind.', labelNames: ['kind'], registers });
    const dispatchLatency = new Histogram({
      name: 'duplex_task_dispatch_latency_seconds',
      help: "Time from a task's creation to its dispatch to an agent; attempt=first is the queueing delay, attempt=retry a dispatch after a requeue, hand-over or adoption.",
      labelNames: ['attempt'],
      buckets: [...latencyBuckets],
      registers,
    });
    this.firstDispatch = dispatchLatency.labels('first');
    this.retryDispatch = dispatchLatency.labels('retry');
    const endToEndLatency = new Histogram({
      name: 'duplex_task_end_to_end_latency_seconds',
      help: "Time from a task's creation to its final state, by outcome, observed by the server that applied the final report.",
      labelNames: ['outcome'],
      buckets: [...latencyBuckets],
      registers,
    });
    this.succeeded = endToEndLatency.labels('succeeded');
    this.failed = endToEndLatency.labels('failed');
    const heartbeats = new Counter({
      name: 'duplex_heartbeats_received_total',
      help: "Agent heartbeats received, by outcome: renewed, or refused (the agent's registration is unknown or older).",
      labelNames: ['outcome'],
      registers,
    });
    this.heartbeatRenewed = heartbeats.labels('renewed');
    this.heartbeatRefused = heartbeats.labels('refused');
    this.agentLeaseExpiries = new Counter({ name: 'duplex_agent_lease_expiries_total', help: "Leases of this server's agents that ran out without a heartbeat.", registers });
    this.serverLeaseExpiries = new Counter({
      name: 'duplex_server_lease_expiries_total',
      help: "Times this server's own lease ran out before it renewed it (it dispatches nothing until it holds it again).",
      registers,
    });
    this.adoptedTasks = new Counter({ name: 'duplex_task_adoptions_total', help: 'Open tasks this server adopted from servers whose lease ran out.', registers });
    this.failovers = new Counter({
      name: 'duplex_failovers_total',
      help: "Failovers this server carried out: handover (a cluster's queued tasks given to another server's agent) and adoption (a lost server's tasks taken over).",
      labelNames: ['kind'],
      registers,
    });
    this.failovers.labels('handover').inc(0);
    this.failovers.labels('adoption').inc(0);
  }

  submitted(kind: string): void {
    this.tasksSubmitted.labels(kind).inc();
  }

  /** Rows just committed as dispatched. */
  dispatched(rows: readonly TaskRow[]): void {
    for (const row of rows) {
      if (!row.dispatched_at) continue;
      (row.attempt > 1 ? this.retryDispatch : this.firstDispatch).observe(secondsBetween(row.created_at, row.dispatched_at));
    }
  }

  /** Rows changed by reports; those that reached a final state are timed from their creation. */
  settled(rows: readonly TaskRow[]): void {
    for (const row of rows) {
      if (!row.finished_at) continue;
      if (row.state === 'succeeded') this.succeeded.observe(secondsBetween(row.created_at, row.finished_at));
      else if (row.state === 'failed') this.failed.observe(secondsBetween(row.created_at, row.finished_at));
    }
  }

  heartbeat(renewed: boolean): void {
    (renewed ? this.heartbeatRenewed : this.heartbeatRefused).inc();
  }

  /** Agents just marked lost because their lease ran out: each lost lease is marked, and counted, once. */
  agentLeasesExpired(count: number): void {
    if (count > 0) this.agentLeaseExpiries.inc(count);
  }

  /** Counts this server's own lease running out (seen at the next renewal attempt), once per expiry. */
  noticeOwnLease(expiresAt: number, now: number): void {
    if (expiresAt === 0 || expiresAt > now || this.countedServerExpiry === expiresAt) return;
    this.countedServerExpiry = expiresAt;
    this.serverLeaseExpiries.inc();
  }

  handedOver(): void {
    this.failovers.labels('handover').inc();
  }

  adopted(tasks: number): void {
    this.failovers.labels('adoption').inc();
    this.adoptedTasks.inc(tasks);
  }
}
