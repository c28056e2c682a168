import { Counter, Gauge, type Registry } from '@duplex/shared';

export type BroadcastOutcome = 'delivered' | 'refused' | 'failed' | 'dropped';

/** What a cluster-manager counts; the inventory version is read when Prometheus scrapes. */
export class ClusterManagerMetrics {
  private readonly takeovers: Counter;
  private readonly failbacks: Counter;
  private readonly agentRestarts: Counter<'server_id'>;
  private readonly leaseRenewFailures: Counter;
  private readonly broadcasts: Record<BroadcastOutcome, Counter.Internal>;

  constructor(registry: Registry, cluster: { storageSystemId: string; clusterId: string }, inventoryVersion: () => number | undefined) {
    const registers = [registry];
    const version: Gauge<'storage_system_id' | 'cluster_id'> = new Gauge({
      name: 'duplex_inventory_version',
      help: "The version of this cluster's stored inventory (configuration and state).",
      labelNames: ['storage_system_id', 'cluster_id'],
      registers,
      collect() {
        const current = inventoryVersion();
        if (current !== undefined) version.set({ storage_system_id: cluster.storageSystemId, cluster_id: cluster.clusterId }, current);
      },
    });
    this.takeovers = new Counter({ name: 'duplex_cluster_takeovers_total', help: 'Failovers: the peer cluster was lost and this cluster took its devices over.', registers });
    this.failbacks = new Counter({ name: 'duplex_cluster_failbacks_total', help: 'Failbacks: this recovering cluster took its home devices back.', registers });
    this.agentRestarts = new Counter({ name: 'duplex_agent_restarts_total', help: 'Agents of this cluster restarted after they exited, by server.', labelNames: ['server_id'], registers });
    this.leaseRenewFailures = new Counter({ name: 'duplex_cluster_lease_renew_failures_total', help: "Attempts to renew this cluster's lease that failed.", registers });
    const broadcasts = new Counter({
      name: 'duplex_inventory_broadcasts_total',
      help: 'Notices of a new inventory version sent to agents, by outcome: delivered, refused (not 202), failed (no answer) or dropped (fault injection).',
      labelNames: ['outcome'],
      registers,
    });
    this.broadcasts = {
      delivered: broadcasts.labels('delivered'),
      refused: broadcasts.labels('refused'),
      failed: broadcasts.labels('failed'),
      dropped: broadcasts.labels('dropped'),
    };
  }

  takeover(): void {
    this.takeovers.inc();
  }

  failback(): void {
    this.failbacks.inc();
  }

  agentRestarted(serverId: string): void {
    this.agentRestarts.labels(serverId).inc();
  }

  leaseRenewFailed(): void {
    this.leaseRenewFailures.inc();
  }

  broadcast(outcome: BroadcastOutcome): void {
    this.broadcasts[outcome].inc();
  }
}
