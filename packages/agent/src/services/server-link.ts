import type { ClusterManagerApi, ServerApi } from '@duplex/contracts';
import { backoffDelayMs, bearer, JsonClient, sameSecret, sleep } from '@duplex/shared';
import type { FastifyBaseLogger } from 'fastify';
import type { AgentConfig } from '../config.ts';
import type { AgentMetrics } from '../metrics.ts';
import { ReportBuffer, type TaskReport } from '../lib/report-buffer.ts';

type Registration = ServerApi.components['schemas']['AgentRegistration'];
type HeartbeatResponse = ServerApi.components['schemas']['HeartbeatResponse'];
type Inventory = ClusterManagerApi.components['schemas']['Inventory'];

const reportBatchLimit = 1000;
/**
 * How long a task's `running` report waits before it is sent: a task that ends sooner is
 * reported once, as ended (one update, history row and event on the server instead of two).
 */
const runningReportHoldMs = 100;

/**
 * The server no longer takes this registration: it does not know the agent (404), a newer
 * incarnation is registered (409), or the credential is unknown or expired (401). The agent
 * registers again.
 */
const registrationLost = (status: number): boolean => status === 401 || status === 404 || status === 409;
/** The version check runs once a heartbeat; a cluster-manager this slow is checked again at the next. */
const reconcileTimeoutMs = 1_000;

/**
 * Everything the agent sends to its server: the registration and its heartbeats, the
 * cluster's inventory, and task reports. The agent registers on start, retrying with backoff
 * while the server is down, and registers again whenever the server no longer knows it.
 */
export class ServerLink {
  registration: Registration | undefined;
  reportedInventoryVersion: number | null = null;
  /** The cluster-manager's entity tag for the reported version. */
  private reportedInventoryEtag: string | undefined;
  readonly reports: ReportBuffer;
  /** The credential a rotation replaced: the server may still dispatch with it until it expires. */
  private previousCredential: { secret: string; expiresAt: number } | undefined;

  private readonly server: JsonClient;
  private readonly clusterManager: JsonClient;
  private readonly abort = new AbortController();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private registering: Promise<void> | undefined;
  private flushing = false;
  private flushAgain = false;
  private flushFailures = 0;
  /** Set while held `running` reports wait to fall due. */
  private heldFlushTimer: NodeJS.Timeout | undefined;
  private inventoryRunning = false;
  private inventoryAgain = false;
  private reconciling = false;

  constructor(
    private readonly config: AgentConfig,
    private readonly log: FastifyBaseLogger,
    private readonly identity: { url: string; pid: number; startedAt: string },
    private readonly metrics?: AgentMetrics,
  ) {
    this.reports = new ReportBuffer(runningReportHoldMs);
    this.server = new JsonClient(config.SERVER_URL, { name: `server ${config.SERVER_ID}`, timeoutMs: 5_000 });
    this.clusterManager = new JsonClient(config.CLUSTER_MANAGER_URL, { name: 'cluster-manager', timeoutMs: 5_000, headers: bearer(config.CLUSTER_TOKEN) });
  }

  /**
   * Whether a caller presented this agent's credential (or the one a rotation just replaced):
   * only its server, which issued it, has it. The server dispatches with it.
   */
  holdsCredential(secret: string, now = Date.now()): boolean {
    const current = this.registration?.credential;
    const previous = this.previousCredential;
    const isCurrent = sameSecret(secret, current);
    const isPrevious = previous !== undefined && previous.expiresAt > now && sameSecret(secret, previous.secret);
    return isCurrent || isPrevious;
  }

  get registered(): boolean {
    return this.registration !== undefined;
  }

  start(): void {
    void this.register();
  }

  /** Registers (once at a time), then reports the inventory and any pending task reports. */
  register(): Promise<void> {
    this.registration = undefined;
    this.registering ??= this.registerUntilDone().finally(() => {
      this.registering = undefined;
    });
    return this.registering;
  }

  private async registerUntilDone(): Promise<void> {
    clearTimeout(this.heartbeatTimer);
    const body = {
      name: this.config.AGENT_NAME,
      server_id: this.config.SERVER_ID,
      storage_system_id: this.config.STORAGE_SYSTEM_ID,
      cluster_id: this.config.CLUSTER_ID,
      url: this.identity.url,
      pid: this.identity.pid,
      started_at: this.identity.startedAt,
    };
    for (let attempt = 0; !this.abort.signal.aborted; attempt += 1) {
      try {
        const response = await this.server.call<Registration>('POST', '/v1/agents', { body, headers: bearer(this.config.JOIN_TOKEN) });
        if (response.status === 200 || response.status === 201) {
          this.registration = response.body;
        this.previousCredential = undefined;
          this.log.info({ agent_id: response.body.id, incarnation: response.body.incarnation }, 'registered with the server');
          this.scheduleHeartbeat();
          this.reportInventory();
          this.flushReports();
          return;
        }
        this.log.warn({ status: response.status, problem: response.body }, 'registration refused');
      } catch (error) {
        if (attempt === 0 || attempt % 20 === 0) this.log.info({ err: (error as Error).message }, 'server not reachable; retrying registration');
      }
      await sleep(backoffDelayMs(attempt, 50, this.config.REGISTER_RETRY_MAX_MS), this.abort.signal);
    }
  }

  private scheduleHeartbeat(): void {
    clearTimeout(this.heartbeatTimer);
    const interval = this.registration?.heartbeat_interval_ms ?? 1000;
    this.heartbeatTimer = setTimeout(() => void this.heartbeat(), interval);
  }

  private async heartbeat(): Promise<void> {
    const registration = this.registration;
    if (!registration || this.abort.signal.aborted) return;
    try {
      const response = await this.server.call<HeartbeatResponse>('POST', `/v1/agents/${encodeURIComponent(registration.id)}/heartbeats`, {
        body: { incarnation: registration.incarnation, ...(this.reportedInventoryVersion !== null ? { inventory_version: this.reportedInventoryVersion } : {}) },
        headers: bearer(registration.credential),
      });
      this.metrics?.heartbeat(response.status === 200 ? 'renewed' : registrationLost(response.status) ? 'refused' : 'failed');
      if (response.status === 200 && response.body.credential && response.body.credential_expires_at) {
        // The server rotated the credential: the old one stays valid until it expires, for requests already sent.
        this.previousCredential = { secret: registration.credential, expiresAt: Date.parse(registration.credential_expires_at) };
        registration.credential = response.body.credential;
        registration.credential_expires_at = response.body.credential_expires_at;
      }
      if (registrationLost(response.status)) {
        this.log.warn({ status: response.status }, 'the server no longer knows this registration; registering again');
        void this.register();
        return;
      }
      // Reconcile by version: the server's view is behind (it restarted), or the cluster-manager
      // stored a version this agent has not reported (a broadcast was lost): report again.
      // The check runs beside the heartbeats, so a slow cluster-manager never delays them.
      const serverBehind = response.status === 200 && response.body.inventory_version !== this.reportedInventoryVersion;
      if (serverBehind) this.reportInventory();
      else void this.reconcileWithClusterManager();
    } catch (error) {
      this.metrics?.heartbeat('failed');
      this.log.warn({ err: (error as Error).message }, 'heartbeat failed');
    }
    this.scheduleHeartbeat();
  }

  /** Reports again when the cluster-manager holds a newer inventory than the one reported (a conditional GET: 304 when not). */
  private async reconcileWithClusterManager(): Promise<void> {
    if (this.reconciling || this.inventoryRunning) return;
    this.reconciling = true;
    try {
      let ahead = this.reportedInventoryVersion === null;
      if (this.reportedInventoryEtag !== undefined) {
        const response = await this.clusterManager.call('GET', '/v1/inventory', {
          headers: { 'if-none-match': this.reportedInventoryEtag },
          timeoutMs: reconcileTimeoutMs,
        });
        ahead = response.status === 200;
      }
      if (ahead) {
        this.log.info({ reported_version: this.reportedInventoryVersion }, 'the cluster-manager holds a newer inventory than reported (a broadcast was missed); reporting it');
        this.reportInventory();
      }
    } catch (error) {
      this.log.debug({ err: (error as Error).message }, 'could not check the inventory version');
    } finally {
      this.reconciling = false;
    }
  }

  /** Reads the cluster's stored inventory from the cluster-manager and sends it to the server. */
  reportInventory(): void {
    if (this.inventoryRunning) {
      this.inventoryAgain = true;
      return;
    }
    this.inventoryRunning = true;
    void (async () => {
      do {
        this.inventoryAgain = false;
        await this.sendInventoryOnce();
      } while (this.inventoryAgain && !this.abort.signal.aborted);
      this.inventoryRunning = false;
    })();
  }

  private async sendInventoryOnce(): Promise<void> {
    const registration = this.registration;
    if (!registration) return;
    try {
      const inventory = await this.clusterManager.call<Inventory>('GET', '/v1/inventory');
      if (inventory.status !== 200) throw new Error(`the cluster-manager answered ${inventory.status}`);
      const response = await this.server.call<{ accepted: boolean; version: number }>(
        'PUT',
        `/v1/agents/${encodeURIComponent(registration.id)}/inventory`,
        { body: inventory.body, headers: bearer(registration.credential) },
      );
      if (registrationLost(response.status)) {
        void this.register();
        return;
      }
      if (response.status !== 200) throw new Error(`the server answered ${response.status}`);
      this.reportedInventoryVersion = inventory.body.version;
      const etag = inventory.headers.etag;
      this.reportedInventoryEtag = typeof etag === 'string' ? etag : undefined;
      this.log.info({ version: inventory.body.version, accepted: response.body.accepted }, 'inventory reported');
    } catch (error) {
      // The next heartbeat sees the server behind and tries again.
      this.log.warn({ err: (error as Error).message }, 'could not report the inventory');
    }
  }

  addReport(report: TaskReport): void {
    this.reports.add(report);
    // A held `running` report goes with the next flush after it falls due (scheduled below).
    if (report.state === 'running') this.scheduleHeldFlush();
    else this.flushReports();
  }

  /** Flushes when the next held report falls due (one timer at a time). */
  private scheduleHeldFlush(): void {
    // Unregistered, the registration flushes what is pending.
    if (this.heldFlushTimer || this.abort.signal.aborted || !this.registration) return;
    const next = this.reports.nextDueAt();
    if (next === undefined) return;
    this.heldFlushTimer = setTimeout(() => {
      this.heldFlushTimer = undefined;
      this.flushReports();
    }, Math.max(0, next - Date.now()));
  }

  /** Sends due reports in batches; one batch in flight at a time, retried until the server takes it. */
  flushReports(): void {
    if (this.flushing) {
      this.flushAgain = true;
      return;
    }
    this.flushing = true;
    void (async () => {
      while (!this.abort.signal.aborted && this.reports.size > 0 && this.registration) {
        this.flushAgain = false;
        const batch = this.reports.take(reportBatchLimit);
        if (batch.length === 0) break;
        if (await this.sendReports(batch)) {
          this.flushFailures = 0;
          this.reports.acknowledge(batch);
        } else {
          this.flushFailures += 1;
          await sleep(backoffDelayMs(this.flushFailures, 50, 2_000), this.abort.signal);
        }
      }
      this.flushing = false;
      if (this.flushAgain && this.reports.take(1).length > 0) this.flushReports();
      else this.scheduleHeldFlush();
    })();
  }

  private async sendReports(batch: TaskReport[]): Promise<boolean> {
    const registration = this.registration;
    if (!registration) return false;
    try {
      const response = await this.server.call<{ results: { task_id: string; outcome: string }[] }>(
        'POST',
        `/v1/agents/${encodeURIComponent(registration.id)}/task-reports`,
        { body: { reports: batch }, headers: bearer(registration.credential) },
      );
      if (response.status === 200) {
        const stale = response.body.results.filter((result) => result.outcome !== 'applied');
        if (stale.length > 0) this.log.info({ stale: stale.length }, 'the server refused stale reports');
        return true;
      }
      // Every report was stale: newer attempts own these tasks, so there is nothing to resend.
      if (response.status === 409) {
        this.log.info({ stale: batch.length }, 'the server refused stale reports');
        return true;
      }
      // Reports on tasks this agent was never given can never be taken: they are dropped, not resent.
      if (response.status === 403) {
        this.log.warn({ reports: batch.length, problem: response.body }, 'the server refused reports on tasks not dispatched to this agent; dropped');
        return true;
      }
      if (registrationLost(response.status)) void this.register();
      this.log.warn({ status: response.status }, 'the server refused the reports');
    } catch (error) {
      this.log.warn({ err: (error as Error).message }, 'could not send reports');
    }
    return false;
  }

  async close(): Promise<void> {
    this.abort.abort();
    clearTimeout(this.heartbeatTimer);
    clearTimeout(this.heldFlushTimer);
    await Promise.all([this.server.close(), this.clusterManager.close()]);
  }
}
