import type { ChildProcess } from 'node:child_process';
import { backoffDelayMs, JsonClient, spawnService, withoutSecrets, type Database } from '@duplex/shared';
import type { FastifyBaseLogger } from 'fastify';
import type { ClusterManagerConfig, ConfiguredServer } from '../config.ts';
import type { ClusterManagerMetrics } from '../metrics.ts';
import { saveAgentIdentity, type AgentIdentity } from '../repositories/cluster-store.ts';

interface SupervisedAgent {
  server: ConfiguredServer;
  identity: AgentIdentity;
  child: ChildProcess | undefined;
  url: string | undefined;
  /**
   * One kept-alive connection to the agent for its health and readiness checks, while it has a
   * URL. A client made for each check opened and closed a connection on both sides several
   * times a second per agent, at rest too.
   */
  checks: JsonClient | undefined;
  quickExits: number;
  restartTimer: NodeJS.Timeout | undefined;
  failedChecks: number;
  persisting: Promise<void>;
}

/** An agent that ran this long before exiting is restarted without backoff. */
const stableRunMs = 10_000;

/**
 * Launches one agent per configured server (and none for any other), records each agent's
 * identity in Postgres, and restarts an agent that exits, with backoff.
 */
export class AgentSupervisor {
  private readonly agents = new Map<string, SupervisedAgent>();
  private stopping = false;
  private fenced = false;
  private spare: { child: ChildProcess; ready: boolean } | undefined;
  /**
   * Every agent has been ready (registered with its server) once: from then on, a spare is kept
   * ready. Loading a spare earlier took CPU from the agents' own start, which is what the
   * cluster's start waits for.
   */
  private everyAgentReady = false;
  private healthTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly config: ClusterManagerConfig,
    private readonly db: Database,
    private readonly log: FastifyBaseLogger,
    private readonly metrics?: ClusterManagerMetrics,
  ) {}

  start(): void {
    for (const server of this.config.servers) {
      const identity: AgentIdentity = {
        storage_system_id: this.config.STORAGE_SYSTEM_ID,
        cluster_id: this.config.CLUSTER_ID,
        server_id: server.id,
        name: `${this.config.STORAGE_SYSTEM_ID}-${this.config.CLUSTER_ID}-${server.id}`,
        pid: null,
        state: 'starting',
        restarts: 0,
        started_at: new Date(),
      };
      const agent: SupervisedAgent = { server, identity, child: undefined, url: undefined, checks: undefined, quickExits: 0, restartTimer: undefined, failedChecks: 0, persisting: Promise.resolve() };
      this.agents.set(server.id, agent);
      this.launch(agent);
    }
    this.healthTimer = setInterval(() => void this.checkHealth(), this.config.AGENT_HEALTH_INTERVAL_MS);
  }

  /** A hung agent answers no health check; after enough misses it is killed, and restarted on exit. */
  private async checkHealth(): Promise<void> {
    await Promise.all(
      [...this.agents.values()].map(async (agent) => {
        if (!agent.url || !agent.child) return;
        const healthy = await this.answersOk(agent, '/healthz');
        agent.failedChecks = healthy ? 0 : agent.failedChecks + 1;
        if (agent.failedChecks >= this.config.AGENT_HEALTH_FAILURES && agent.child) {
          this.log.warn({ agent: agent.identity.name, failed_checks: agent.failedChecks }, 'agent does not answer its health check; killing it');
          agent.failedChecks = 0;
          agent.child.kill('SIGKILL');
        }
      }),
    );
    if (!this.everyAgentReady && !this.stopping) await this.startSpareOnceEveryAgentIsReady();
  }

  /** Whether the agent answers 200 at `path` within a health interval; false while it has no URL. */
  private async answersOk(agent: SupervisedAgent, path: '/healthz' | '/readyz'): Promise<boolean> {
    return (await agent.checks?.answersOk(path, this.config.AGENT_HEALTH_INTERVAL_MS)) ?? false;
  }

  /** The agent's URL, as it announced it (or none), with the connection its checks use. */
  private setUrl(agent: SupervisedAgent, url: string | undefined): void {
    if (agent.url === url) return;
    void agent.checks?.close().catch(() => {});
    agent.url = url;
    agent.checks = url ? new JsonClient(url, { name: `agent ${agent.identity.name}`, connections: 1 }) : undefined;
  }

  private async startSpareOnceEveryAgentIsReady(): Promise<void> {
    const agents = [...this.agents.values()];
    const ready = await Promise.all(agents.map((agent) => this.answersOk(agent, '/readyz')));
    if (this.everyAgentReady || !ready.every(Boolean)) return;
    this.everyAgentReady = true;
    this.startSpare();
  }

  /** Tells every agent whether the cluster holds its lease; a fenced agent refuses tasks. */
  setFenced(fenced: boolean): void {
    this.fenced = fenced;
    for (const agent of this.agents.values()) agent.child?.send({ type: 'fence', fenced });
  }

  /**
   * The environment every agent of this cluster shares; agents need no database. It keeps
   * DUPLEX_RUNTIME, so the agents run as this process does (bundle or sources).
   */
  private commonEnv(): Record<string, string | undefined> {
    // Agents hold neither the database nor the control plane's secrets: only the two tokens below.
    return {
      ...withoutSecrets(process.env),
      STORAGE_SYSTEM_ID: this.config.STORAGE_SYSTEM_ID,
      CLUSTER_ID: this.config.CLUSTER_ID,
      DRIVER_URL: this.config.DRIVER_URL,
      CLUSTER_MANAGER_URL: this.config.CM_PUBLIC_URL,
      JOIN_TOKEN: this.config.JOIN_TOKEN,
      CLUSTER_TOKEN: this.config.CLUSTER_TOKEN,
      AGENT_HOST: this.config.AGENT_HOST,
      AGENT_PUBLIC_HOST: this.config.AGENT_PUBLIC_HOST ?? this.config.AGENT_HOST,
      AGENT_PORT: '0',
    };
  }

  private identityEnv(agent: SupervisedAgent): Record<string, string> {
    return { AGENT_NAME: agent.identity.name, SERVER_ID: agent.server.id, SERVER_URL: agent.server.url };
  }

  /**
   * A spare agent process, loaded and waiting for an identity. Starting Node and loading the
   * agent takes most of a restart; a spare makes a crashed agent's replacement register
   * within milliseconds instead of about a second.
   */
  private startSpare(): void {
    if (this.stopping || this.spare) return;
    const child = spawnService('agent', { env: { ...this.commonEnv(), AGENT_STANDBY: '1' }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const spare = { child, ready: false };
    this.spare = spare;
    child.on('message', (message: unknown) => {
      if ((message as { type?: unknown } | null)?.type === 'standby') spare.ready = true;
    });
    child.once('exit', () => {
      if (this.spare !== spare) return;
      this.spare = undefined;
      if (!this.stopping) setTimeout(() => this.startSpare(), this.config.AGENT_RESTART_MAX_MS).unref();
    });
  }

  private takeSpare(): ChildProcess | undefined {
    const spare = this.spare;
    if (!spare?.ready || spare.child.exitCode !== null) return undefined;
    this.spare = undefined;
    return spare.child;
  }

  private launch(agent: SupervisedAgent): void {
    const startedAt = new Date();
    const spare = this.takeSpare();
    let child: ChildProcess;
    if (spare) {
      child = spare;
      child.send({ type: 'assume', env: this.identityEnv(agent) });
      if (this.fenced) child.send({ type: 'fence', fenced: true });
    } else {
      child = spawnService('agent', { env: { ...this.commonEnv(), ...this.identityEnv(agent) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      child.once('spawn', () => {
        if (this.fenced) child.send({ type: 'fence', fenced: true });
      });
    }
    // A restart used the spare up (or found none): load the next one now. At the cluster's start
    // the spare waits until every agent is ready, so that it does not slow the agents down.
    if (this.everyAgentReady) setImmediate(() => this.startSpare());
    agent.child = child;
    this.setUrl(agent, undefined);
    agent.failedChecks = 0;
    agent.identity = { ...agent.identity, pid: child.pid ?? null, state: 'running', started_at: startedAt };
    this.persist(agent);
    child.on('message', (message: unknown) => {
      const url = (message as { url?: unknown } | null)?.url;
      if (typeof url !== 'string') return;
      this.setUrl(agent, url);
    });
    child.once('exit', (code, signal) => {
      agent.child = undefined;
      this.setUrl(agent, undefined);
      if (this.stopping) return;
      const ranMs = Date.now() - startedAt.getTime();
      agent.quickExits = ranMs >= stableRunMs ? 0 : agent.quickExits + 1;
      const delay = agent.quickExits === 0 ? 0 : backoffDelayMs(agent.quickExits - 1, this.config.AGENT_RESTART_BASE_MS, this.config.AGENT_RESTART_MAX_MS);
      this.log.warn({ agent: agent.identity.name, code, signal, restart_in_ms: delay }, 'agent exited; restarting');
      this.metrics?.agentRestarted(agent.server.id);
      agent.identity = { ...agent.identity, pid: null, state: 'restarting', restarts: agent.identity.restarts + 1 };
      this.persist(agent);
      agent.restartTimer = setTimeout(() => this.launch(agent), delay);
    });
  }

  /** Writes one agent's identity changes in order, so a quick restart cannot be overwritten by the exit before it. */
  private persist(agent: SupervisedAgent): void {
    const identity = agent.identity;
    agent.persisting = agent.persisting
      .then(() => saveAgentIdentity(this.db, identity))
      .catch((error: unknown) => {
        this.log.warn({ err: error, agent: identity.name }, 'could not store the agent identity');
      });
  }

  urls(): string[] {
    return [...this.agents.values()].flatMap((agent) => (agent.url ? [agent.url] : []));
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.healthTimer);
    this.spare?.child.kill('SIGTERM');
    const exits = [...this.agents.values()].map(async (agent) => {
      clearTimeout(agent.restartTimer);
      const child = agent.child;
      if (!child || child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(killer);
      agent.identity = { ...agent.identity, pid: null, state: 'stopped' };
      this.persist(agent);
      await agent.persisting;
    });
    await Promise.all(exits);
  }
}
