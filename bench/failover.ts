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
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseOptions } from './lib/args.ts';
import { device, emptyResult, roundOrder, storageSystemId, trials, type BenchContext, type TrialResult } from './lib/faults.ts';
import { phaseTable, resultsTable, seconds, summarizeFault, targets } from './lib/report.ts';
import { BenchSession, log, managerUrlsOf } from './lib/session.ts';
import { timingSettings } from './lib/settings.ts';

const benchDir = fileURLToPath(new URL('.', import.meta.url));
const options = parseOptions(process.argv.slice(2), process.env, join(benchDir, 'results'));

const settings = timingSettings(process.env);
const faultTargets = targets(settings);
const session = new BenchSession('failover');
const { runId, startedAt, stamp } = session;
session.begin(`${options.trials} trial(s) of ${options.only.join(', ')}; trial timeout ${options.trialTimeoutMs} ms`, settings);

const results: TrialResult[] = [];
let aborted: string | null = null;

try {
  const topology = await session.startTopology('topology');
  const { harness: running, servers } = topology;
  const context: BenchContext = {
    ...topology,
    trialTimeoutMs: options.trialTimeoutMs,
    managerUrls: managerUrlsOf(running),
    marker: session.marker,
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
      aborted = session.cannotGoOn(running, brokenInARow, 'the topology does not come back to its steady state');
      if (aborted) break rounds;
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
const rows = summaries.map((summary) => [summary.fault, summary] as const);
console.log(resultsTable('fault', rows));
console.log('');
console.log(phaseTable('fault', rows));
console.log('');

let logsCopy: string | null = null;
try {
  if (failed.length > 0 || aborted || options.keepLogs) logsCopy = session.keepLogs(join(options.resultsDir, `failover-${stamp}-logs`));
} catch (error) {
  log(`could not copy the logs: ${(error as Error).message}`);
}
const file = session.writeResults(options.resultsDir, {
  trials_per_fault: options.trials,
  trial_timeout_ms: options.trialTimeoutMs,
  aborted,
  settings,
  summaries,
  trials: results,
  logs: logsCopy,
});
console.log(`JSON: ${file}${logsCopy ? `\nlogs: ${logsCopy}` : ''}`);
for (const result of failed) console.log(`- ${result.fault} #${result.trial} failed: ${result.error}`);
await session.exit(aborted || failed.length > 0 || (options.strict && missed.length > 0) ? 1 : 0);
