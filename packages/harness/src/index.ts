import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkTopology, prepareTopology, processSpecs, stopChild, tlsSettingsOf, waitUntilReady, type ProcessSpec, type Topology } from '@duplex/cli';
import {
  createDatabase,
  JsonClient,
  loadTls,
  runtimeFromEnvironment,
  spawnService,
  startEmbeddedPostgres,
  useClientTls,
  withoutSecrets,
  type Database,
  type EmbeddedPostgresServer,
  type ServiceRuntime,
} from '@duplex/shared';
import { bearer, createTestDatabase, freePort, testAdminToken, testClusterToken, testJoinToken, testServiceToken, waitFor, type TestCertificates, type TestDatabase } from '@duplex/testkit';

/**
 * Leases long enough that a loaded machine never fails a live process over, for tests that
 * follow work through named processes (this server, that agent) rather than test failover.
 */
export const steadyLeases: Record<string, string> = { SERVER_LEASE_TTL_MS: '10000', CLUSTER_LEASE_TTL_MS: '5000', AGENT_LEASE_TTL_MS: '10000' };

export interface HarnessOptions {
  /** Devices per cluster (default 4). */
  devicesPerCluster?: number;
  capacityBytes?: number;
  backend?: 'file' | 'memory';
  /** Run a Postgres of its own (embedded), so that it can be restarted. */
  ownPostgres?: boolean;
  /** Settings for that Postgres's command line (`-c name=value` …). */
  postgresFlags?: string[];
  /** Extra environment for every process (timings, log level). */
  env?: Record<string, string>;
  /**
   * How the processes run (default: DUPLEX_RUNTIME, else `source`, so that tests run the code
   * as it is now and never a bundle built before an edit).
   */
  runtime?: ServiceRuntime;
  /** Run every process over HTTPS with mutual TLS, with these certificates (made by makeTestCertificates). */
  tls?: Pick<TestCertificates, 'certFile' | 'keyFile' | 'caFile'>;
}

const bootTimeoutMs = 90_000;

interface Running {
  spec: ProcessSpec;
  child: ChildProcess;
}

/**
 * The whole topology (two servers, one storage system with two clusters) as real processes
 * on free ports, for tests that inject faults: each process can be killed, stopped,
 * continued and restarted, and so can Postgres when the harness runs its own.
 */
export class TopologyHarness {
  readonly processes = new Map<string, Running>();
  db!: Database;
  databaseUrl!: string;
  topology!: Topology;
  private testDatabase: TestDatabase | undefined;
  private postgres: EmbeddedPostgresServer | undefined;
  private constructor(
    readonly directory: string,
    private readonly options: HarnessOptions,
  ) {}

  static async start(options: HarnessOptions = {}): Promise<TopologyHarness> {
    const directory = mkdtempSync(join(tmpdir(), 'duplex-harness-'));
    // As root, the embedded Postgres runs as its own user, which must reach its data folder.
    chmodSync(directory, 0o755);
    const harness = new TopologyHarness(directory, options);
    try {
      await harness.boot();
    } catch (error) {
      await harness.stop();
      throw error;
    }
    return harness;
  }

  get deviceRoot(): string {
    return join(this.directory, 'devices');
  }

  serverUrl(id: 'A' | 'B'): string {
    return this.topology.servers.find((server) => server.id === id)!.url;
  }

  private async boot(): Promise<void> {
    if (this.options.ownPostgres) {
      const port = await freePort();
      this.postgres = await startEmbeddedPostgres({ dataDir: join(this.directory, 'postgres'), port, flags: this.options.postgresFlags });
      this.databaseUrl = this.postgres.adminUrl;
      this.db = createDatabase(this.databaseUrl, { poolMax: 4 });
    } else {
      this.testDatabase = await createTestDatabase('duplex_harness');
      this.databaseUrl = this.testDatabase.url;
      this.db = this.testDatabase.db;
    }
    const perCluster = this.options.devicesPerCluster ?? 4;
    const capacity = this.options.capacityBytes ?? 256 * 1024 * 1024;
    const { tls } = this.options;
    const url = async () => `${tls ? 'https' : 'http'}://127.0.0.1:${await freePort()}`;
    this.topology = checkTopology(
      {
        servers: [
          { id: 'A', url: await url() },
          { id: 'B', url: await url() },
        ],
        storage_systems: [
          {
            id: 'ss1',
            backend: this.options.backend ?? 'file',
            device_root: this.deviceRoot,
            devices: Array.from({ length: perCluster * 2 }, (_, index) => ({ id: `d${index}`, home_cluster: index < perCluster ? 'c0' : 'c1', capacity_bytes: capacity })),
            clusters: [
              { id: 'c0', manager_url: await url(), driver_url: await url(), servers: ['A', 'B'] },
              { id: 'c1', manager_url: await url(), driver_url: await url(), servers: ['A', 'B'] },
            ],
          },
        ],
        logs_dir: join(this.directory, 'logs'),
        ...(tls ? { tls: { cert_file: tls.certFile, key_file: tls.keyFile, ca_file: tls.caFile, client_auth: 'require' } } : {}),
      },
      this.directory,
    );
    // The harness's own calls present and trust what the processes do.
    useClientTls(loadTls(tlsSettingsOf(this.topology)).client);
    mkdirSync(this.topology.logs_dir, { recursive: true });
    await prepareTopology(this.topology, this.databaseUrl, () => {});
    const specs = processSpecs(this.topology, this.databaseUrl, {
      adminToken: testAdminToken,
      joinTokens: { ss1: testJoinToken },
      serviceToken: testServiceToken,
      clusterTokens: { 'ss1/c0': testClusterToken('c0'), 'ss1/c1': testClusterToken('c1') },
    });
    for (const role of ['driver', 'server', 'cluster-manager'] as const) {
      await Promise.all(specs.filter((spec) => spec.role === role).map((spec) => this.launch(spec)));
    }
    // Generous: on a loaded machine (a CI host running other suites) 20-odd processes start slowly.
    await this.waitForAgents(4, bootTimeoutMs);
    await this.waitForInventory(bootTimeoutMs);
  }

  /** Waits until every server has been told of every device (the agents report after registering). */
  async waitForInventory(timeoutMs = 30_000): Promise<void> {
    const expected = this.topology.storage_systems.reduce((sum, system) => sum + system.devices.length, 0);
    for (const server of this.topology.servers) {
      await waitFor(
        `server ${server.id} to know every device`,
        async () => {
          const client = new JsonClient(server.url, { name: `server ${server.id}`, connections: 1, headers: bearer(testAdminToken) });
          try {
            const response = await client.call<{ items: unknown[] }>('GET', '/v1/storage-systems/ss1/devices?limit=500');
            return response.status === 200 && response.body.items.length >= expected ? true : undefined;
          } catch {
            return undefined;
          } finally {
            await client.close();
          }
        },
        timeoutMs,
        100,
      );
    }
  }

  private async launch(spec: ProcessSpec): Promise<void> {
    const log = openSync(join(this.topology.logs_dir, `${spec.name}.log`), 'a');
    const child = spawnService(spec.role, {
      runtime: this.options.runtime ?? runtimeFromEnvironment(process.env) ?? 'source',
      env: { ...withoutSecrets(process.env), LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'info', ...this.options.env, ...spec.env },
      stdio: ['ignore', log, log],
    });
    this.processes.set(spec.name, { spec, child });
    await waitUntilReady(spec, child);
  }

  names(role?: ProcessSpec['role']): string[] {
    return [...this.processes.values()].filter(({ spec }) => role === undefined || spec.role === role).map(({ spec }) => spec.name);
  }

  /** Sends a signal to one of the topology's processes (SIGKILL, SIGSTOP, SIGCONT, ...). */
  signal(name: string, signal: NodeJS.Signals): void {
    const running = this.processes.get(name);
    if (!running) throw new Error(`no process named ${name}`);
    running.child.kill(signal);
  }

  /** Starts a process again (after it was killed) and waits until it is ready. */
  async restart(name: string): Promise<void> {
    const running = this.processes.get(name);
    if (!running) throw new Error(`no process named ${name}`);
    if (running.child.exitCode === null && running.child.signalCode === null) await stopChild(running.child);
    await this.launch(running.spec);
  }

  /** The live agent processes, by name (ss1-c0-A ...), as the cluster-managers stored them. */
  async agentPids(): Promise<Map<string, number>> {
    const rows: { name: string; pid: number | null }[] = await this.db('agent_identities').select('name', 'pid');
    return new Map(rows.filter((row) => row.pid !== null).map((row) => [row.name, row.pid!]));
  }

  async signalAgent(name: string, signal: NodeJS.Signals): Promise<number> {
    const pid = (await this.agentPids()).get(name);
    if (!pid) throw new Error(`no live agent named ${name}`);
    process.kill(pid, signal);
    return pid;
  }

  /** Kills a whole cluster at once: its cluster-manager, its agents and its driver. */
  async killCluster(clusterId: string): Promise<void> {
    await this.signalCluster(clusterId, 'SIGKILL');
  }

  /** Sends a signal to every process of a cluster (SIGSTOP freezes it as a partition would). Returns the agents' pids. */
  async signalCluster(clusterId: string, signal: NodeJS.Signals, agentPids?: number[]): Promise<number[]> {
    const pids = agentPids ?? [...(await this.agentPids())].filter(([name]) => name.startsWith(`ss1-${clusterId}-`)).map(([, pid]) => pid);
    this.signal(`cluster-manager-ss1-${clusterId}`, signal);
    this.signal(`driver-ss1-${clusterId}`, signal);
    for (const pid of pids) {
      try {
        process.kill(pid, signal);
      } catch {
        // already gone
      }
    }
    return pids;
  }

  async restartPostgres(downMs: number): Promise<void> {
    if (!this.postgres) throw new Error('the harness does not run its own Postgres');
    await this.postgres.stop();
    await new Promise((resolve) => setTimeout(resolve, downMs));
    await this.postgres.start();
  }

  async waitForAgents(count: number, timeoutMs = 30_000): Promise<void> {
    await waitFor(
      `${count} active agents`,
      async () => {
        const rows: { count: string }[] = await this.db('agents').where('lease_expires_at', '>', this.db.fn.now()).count('* as count');
        return Number(rows[0]?.count ?? 0) >= count ? true : undefined;
      },
      timeoutMs,
      100,
    );
  }

  async stop(): Promise<void> {
    const running = [...this.processes.values()];
    for (const role of ['cluster-manager', 'server', 'driver'] as const) {
      await Promise.all(
        running
          .filter(({ spec }) => spec.role === role)
          .map(async ({ child }) => {
            if (child.signalCode === 'SIGSTOP') child.kill('SIGCONT');
            await stopChild(child);
          }),
      );
    }
    for (const [, pid] of await this.agentPids().catch(() => new Map<string, number>())) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    if (this.testDatabase) await this.testDatabase.drop();
    else await this.db?.destroy();
    // Stopping a Postgres that already died never settles; do not let that hang the run.
    await Promise.race([this.postgres?.stop().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 10_000).unref())]);
    // KEEP_HARNESS=1 keeps the logs and devices for a post-mortem.
    if (process.env.KEEP_HARNESS) process.stderr.write(`harness kept in ${this.directory}\n`);
    else rmSync(this.directory, { recursive: true, force: true });
  }
}
