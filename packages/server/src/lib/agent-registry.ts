import { matchesCredential, type StoredCredential } from './agent-credentials.ts';

/** This server's own agents, for routing. Only this process writes its agents' rows. */
export interface RegisteredAgent {
  id: string;
  storage_system_id: string;
  cluster_id: string;
  url: string;
  incarnation: number;
  leaseExpiresAt: number;
  /** Dispatch skips the agent until then, after it failed to take a dispatch. */
  unreachableUntil: number;
  /** The agent's credentials (hashes), newest first: its requests must carry one of them. */
  credentials: StoredCredential[];
  /**
   * The credential the agent last showed it holds (issued at its registration, or presented
   * since), which dispatches carry so the agent knows its server. Kept in memory only: after a
   * restart the server routes to the agent from its first heartbeat on.
   */
  dispatchCredential?: string;
}

/** Who presented a credential for an agent: that agent, another agent of this server, or nobody known. */
export type CredentialCheck = 'agent' | 'other-agent' | 'unknown';

export class AgentRegistry {
  private readonly agents = new Map<string, RegisteredAgent>();
  /**
   * The same agents by cluster, in registration order: routing and the failover watcher look
   * up one cluster at a time, and a server may have thousands of agents.
   */
  private readonly byCluster = new Map<string, Map<string, RegisteredAgent>>();

  private static clusterKey(storageSystemId: string, clusterId: string): string {
    return `${storageSystemId}/${clusterId}`;
  }

  /** Adds or updates an agent; without `credentials` it keeps those it holds. */
  upsert(agent: Omit<RegisteredAgent, 'unreachableUntil' | 'credentials'> & { credentials?: StoredCredential[] }): void {
    const previous = this.agents.get(agent.id);
    const registered: RegisteredAgent = {
      ...agent,
      unreachableUntil: 0,
      credentials: agent.credentials ?? previous?.credentials ?? [],
      dispatchCredential: agent.dispatchCredential ?? previous?.dispatchCredential,
    };
    const key = AgentRegistry.clusterKey(agent.storage_system_id, agent.cluster_id);
    if (previous) {
      const previousKey = AgentRegistry.clusterKey(previous.storage_system_id, previous.cluster_id);
      if (previousKey !== key) this.byCluster.get(previousKey)?.delete(agent.id);
    }
    // Registering again keeps the agent's place, in both maps.
    this.agents.set(agent.id, registered);
    const cluster = this.byCluster.get(key) ?? new Map<string, RegisteredAgent>();
    cluster.set(agent.id, registered);
    this.byCluster.set(key, cluster);
  }

  get(id: string): RegisteredAgent | undefined {
    return this.agents.get(id);
  }

  /** Replaces the agent's credentials (a rotation or a new registration). */
  setCredentials(id: string, credentials: StoredCredential[]): void {
    const agent = this.agents.get(id);
    if (agent) agent.credentials = credentials;
  }

  /** Records the credential agent `id` just presented (and so holds): its dispatches carry it from now on. */
  notePresented(id: string, secret: string): void {
    const agent = this.agents.get(id);
    if (agent) agent.dispatchCredential = secret;
  }

  /**
   * Whether a credential (its hash) is agent `id`'s own; if not, whether it belongs to another
   * of this server's agents, which is a refusal (403) rather than a stranger (401).
   */
  checkCredential(id: string, presentedSha256: string, now = Date.now()): CredentialCheck {
    const agent = this.agents.get(id);
    if (agent && matchesCredential(presentedSha256, agent.credentials, now)) return 'agent';
    for (const other of this.agents.values()) {
      if (other.id !== id && matchesCredential(presentedSha256, other.credentials, now)) return 'other-agent';
    }
    return 'unknown';
  }

  all(): IterableIterator<RegisteredAgent> {
    return this.agents.values();
  }

  renew(id: string, leaseExpiresAt: number): void {
    const agent = this.agents.get(id);
    if (agent) agent.leaseExpiresAt = leaseExpiresAt;
  }

  markUnreachable(id: string, until: number): void {
    const agent = this.agents.get(id);
    if (agent) agent.unreachableUntil = until;
  }

  inCluster(storageSystemId: string, clusterId: string): RegisteredAgent[] {
    return [...(this.byCluster.get(AgentRegistry.clusterKey(storageSystemId, clusterId))?.values() ?? [])];
  }

  /** The agent this server routes a cluster's tasks to: live, not known to be unreachable, and with a credential to call it with. */
  routeFor(storageSystemId: string, clusterId: string, now: number): RegisteredAgent | undefined {
    const cluster = this.byCluster.get(AgentRegistry.clusterKey(storageSystemId, clusterId));
    if (!cluster) return undefined;
    for (const agent of cluster.values()) {
      if (agent.leaseExpiresAt > now && agent.unreachableUntil <= now && agent.dispatchCredential !== undefined) return agent;
    }
    return undefined;
  }
}

/**
 * Since when this server has had no live agent in a cluster: the moment its agent's lease
 * ran out, or the server's own start when no agent of it has registered there. Undefined
 * while it has one.
 */
export function withoutAgentSince(registry: AgentRegistry, storageSystemId: string, clusterId: string, now: number, startedAt: number): number | undefined {
  if (registry.routeFor(storageSystemId, clusterId, now)) return undefined;
  const known = registry.inCluster(storageSystemId, clusterId);
  if (known.length === 0) return startedAt;
  // An agent that still holds its lease but missed a dispatch is not lost yet.
  return Math.max(...known.map((agent) => (agent.leaseExpiresAt <= now ? agent.leaseExpiresAt : now)));
}
