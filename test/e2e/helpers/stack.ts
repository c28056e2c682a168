import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase, repositoryRoot, startProcess, testAdminToken, waitFor, type ServiceProcess, type TestDatabase } from '@duplex/testkit';
import { logTails, pidsInLogs } from './logs.ts';
import { acceptsConnections, commandLine, descendants, isAlive } from './processes.ts';
import { writeTopology, type E2eTopology } from './topology.ts';

export const upBanner = 'duplex is up.';
export const stoppedLine = 'duplex: stopped';

export interface AgentIdentityRow {
  storage_system_id: string;
  cluster_id: string;
  server_id: string;
  name: string;
  pid: number | null;
  state: string;
  started_at: Date;
}

export interface Survivor {
  pid: number;
  what: string;
  command: string;
}

export interface ShutdownReport {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** Processes of the run still alive after the launcher exited. */
  survivors: Survivor[];
  /** Ports of the run that still accept connections. */
  openPorts: { port: number; what: string }[];
  /** How many processes and ports were checked. */
  checked: { processes: number; ports: number };
}

/**
 * One `duplex up` run on its own database, ports and temporary folder. start() launches it;
 * shutdown() stops it with SIGTERM and reports what it left behind; dispose() always cleans
 * up (kills leftovers of this run by pid, drops the database, removes the folder).
 */
export class Stack {
  dir: string | undefined;
  tdb: TestDatabase | undefined;
  topology: E2eTopology | undefined;
  launcher: ServiceProcess | undefined;
  private launcherExit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** Every process id seen to belong to this run, with what it is. */
  private readonly known = new Map<number, string>();
  private shutdownReport: ShutdownReport | undefined;

  get db(): TestDatabase['db'] {
    if (!this.tdb) throw new Error('the stack has no database');
    return this.tdb.db;
  }

  get topo(): E2eTopology {
    if (!this.topology) throw new Error('the stack has no topology');
    return this.topology;
  }

  async start(timeoutMs = 60_000): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), 'duplex-e2e-'));
    this.tdb = await createTestDatabase('duplex_e2e');
    this.topology = await writeTopology(this.dir);
    const launcher = startProcess('duplex', 'packages/cli/src/main.ts', { DATABASE_URL: this.tdb.url, ADMIN_TOKEN: testAdminToken, LOG_LEVEL: 'info' }, [
      'up',
      '--topology',
      this.topology.file,
    ]);
    this.launcher = launcher;
    if (launcher.child.pid) this.known.set(launcher.child.pid, 'launcher');
    launcher.child.once('exit', (code, signal) => {
      this.launcherExit = { code, signal };
    });
    const outcome = await waitFor(
      `"${upBanner}" from the launcher`,
      async () => {
        if (launcher.output().includes(upBanner)) return 'up';
        if (this.launcherExit) return 'exited';
        return undefined;
      },
      timeoutMs,
      100,
    );
    await this.rememberProcesses();
    if (outcome === 'exited') throw new Error(`the launcher exited during start (${JSON.stringify(this.launcherExit)})`);
  }

  /** Adds the run's current processes to what shutdown checks and dispose cleans up. */
  async rememberProcesses(): Promise<void> {
    const launcherPid = this.launcher?.child.pid;
    if (launcherPid && isAlive(launcherPid)) for (const pid of descendants(launcherPid)) if (!this.known.has(pid)) this.known.set(pid, commandLine(pid));
    if (this.topology) for (const [pid, service] of await pidsInLogs(this.topology.logsDir)) this.known.set(pid, service);
    if (this.tdb) {
      try {
        const identities = await this.tdb.db<AgentIdentityRow>('agent_identities').select('name', 'pid');
        for (const { name, pid } of identities) if (pid) this.known.set(pid, `agent ${name}`);
        const agents = await this.tdb.db<{ name: string; pid: number }>('agents').select('name', 'pid');
        for (const { name, pid } of agents) this.known.set(pid, `agent ${name}`);
      } catch {
        // the database may already be gone
      }
    }
  }

  /** Every TCP port the run listens on: servers, cluster-managers, drivers and agents. */
  private async ports(): Promise<{ port: number; what: string }[]> {
    const ports = (this.topology?.services ?? []).map((service) => ({ port: service.port, what: service.name }));
    if (this.tdb) {
      try {
        for (const { id, url } of await this.tdb.db<{ id: string; url: string }>('agents').select('id', 'url')) {
          ports.push({ port: Number(new URL(url).port), what: `agent ${id}` });
        }
      } catch {
        // the database may already be gone
      }
    }
    return ports;
  }

  /** Sends SIGTERM to the launcher, waits for it to exit, and reports the processes and ports left. */
  async shutdown(graceMs = 5_000): Promise<ShutdownReport> {
    if (this.shutdownReport) return this.shutdownReport;
    const launcher = this.launcher;
    if (!launcher) throw new Error('the stack was not started');
    await this.rememberProcesses();
    const ports = await this.ports();
    const exitCode = await launcher.stop('SIGTERM');
    const signal = launcher.child.signalCode;
    // Whatever the launcher did not stop gets a moment to finish exiting before it counts.
    const survivors = () =>
      [...this.known]
        .filter(([pid]) => pid !== launcher.child.pid && isAlive(pid))
        .map(([pid, what]) => ({ pid, what, command: commandLine(pid) }));
    const openPorts = async () => {
      const open: { port: number; what: string }[] = [];
      for (const entry of ports) if (await acceptsConnections(entry.port, 500)) open.push(entry);
      return open;
    };
    await waitFor('every process of the run to exit', async () => ((survivors().length === 0 && (await openPorts()).length === 0) ? true : undefined), graceMs, 100).catch(
      () => undefined,
    );
    this.shutdownReport = {
      exitCode,
      signal,
      survivors: survivors(),
      openPorts: await openPorts(),
      checked: { processes: this.known.size, ports: ports.length },
    };
    return this.shutdownReport;
  }

  /** The tail of the launcher's output and of every log file. */
  async diagnostics(): Promise<string> {
    const output = this.launcher?.output() ?? '';
    const launcherTail = output.length > 4_000 ? `...${output.slice(-4_000)}` : output;
    const logs = this.topology ? await logTails(this.topology.logsDir) : '(no topology)';
    return `=== launcher output (tail) ===\n${launcherTail}\n=== logs ===\n${logs}`;
  }

  /**
   * Stops the launcher if it still runs, kills (SIGKILL) any process of this run still alive
   * (only pids recorded for this run whose command is still one of this repository's), drops
   * the database and removes the folder. Answers what had to be killed.
   */
  async dispose(): Promise<Survivor[]> {
    const killed: Survivor[] = [];
    if (this.launcher && !this.shutdownReport) await this.shutdown().catch(() => undefined);
    for (const [pid, what] of this.known) {
      if (!isAlive(pid)) continue;
      const command = commandLine(pid);
      if (!command.includes(repositoryRoot.replace(/\/$/, '')) && !command.includes('esbuild') && !command.includes('packages/cli/src/main.ts')) continue;
      try {
        process.kill(pid, 'SIGKILL');
        killed.push({ pid, what, command });
      } catch {
        // already gone
      }
    }
    if (this.tdb) await this.tdb.drop().catch((error: unknown) => process.stderr.write(`e2e: could not drop the database: ${(error as Error).message}\n`));
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
    return killed;
  }
}
