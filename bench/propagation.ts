/**
 * Change-propagation benchmark: how long a device change takes to show at every server, on
 * the whole topology as real processes (two servers, one storage system with two clusters on
 * the file backend, embedded Postgres). Three kinds of change: one the driver's probe finds (a
 * FAILED marker written, then removed), one an operator makes through server A (set-state
 * offline, then available), and the first kind again on a topology whose cluster-managers drop
 * every broadcast, so that only the agents' heartbeat reconciliation carries it.
 *
 *   node --import tsx bench/propagation.ts                # 20 trials per case (BENCH_TRIALS)
 *   node --import tsx bench/propagation.ts --trials 1     # CI smoke, under a minute
 *
 * Timing settings are the services' defaults unless set in this process's environment
 * (the harness passes it on to every process), e.g. DRIVER_PROBE_INTERVAL_MS=250. See bench/README.md.
 */
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parsePropagationOptions } from './lib/args.ts';
import {
  caseIds,
  deliveredRound,
  droppedRound,
  pollingFloor,
  propagationTargets,
  runTrial,
  emptyResult,
  type CaseId,
  type PropagationContext,
  type PropagationResult,
} from './lib/propagation.ts';
import { phaseTable, resultsTable, seconds, summarizeTrials, type Row } from './lib/report.ts';
import { BenchSession, exitedProcesses, log } from './lib/session.ts';
import { propagationKeys, readSettings, settingValue } from './lib/settings.ts';
import { summarize } from './lib/stats.ts';

const benchDir = fileURLToPath(new URL('.', import.meta.url));
const options = parsePropagationOptions(process.argv.slice(2), process.env, join(benchDir, 'results'));
/** The pause between one answer of a server and the next GET: short next to the figures, light on the servers. */
const pollIntervalMs = 5;
const floorSamples = 50;

const settings = readSettings(process.env, propagationKeys);
const probeIntervalMs = settingValue(settings, 'DRIVER_PROBE_INTERVAL_MS');
const caseTargets = propagationTargets(settings);
const session = new BenchSession('propagation');
const { startedAt, stamp } = session;
session.begin(`${options.trials} trial(s) per case; trial timeout ${options.trialTimeoutMs} ms`, settings);

const results: PropagationResult[] = [];
const floor: number[] = [];
const logCopies: string[] = [];
let aborted: string | null = null;

/** The two topologies the cases run on: the second's cluster-managers drop every broadcast. */
const topologies = [
  { label: 'broadcasts-delivered', env: {}, round: deliveredRound },
  { label: 'broadcasts-dropped', env: { FAULT_DROP_BROADCAST_RATE: '1' }, round: droppedRound },
] as const;

/** Boots a topology, runs the round `options.trials` times on it (after one unmeasured round), and stops it. Returns why it stopped early, if it did. */
async function onTopology(label: string, env: Record<string, string>, round: readonly CaseId[], measureFloor: boolean): Promise<string | null> {
  const topology = await session.startTopology(`topology ${label}`, env);
  const { harness: running, servers } = topology;
  const context: PropagationContext = { ...topology, trialTimeoutMs: options.trialTimeoutMs, probeIntervalMs, pollIntervalMs };
  const before = results.length;
  let stoppedBy: string | null = null;
  try {
    if (measureFloor) floor.push(...(await pollingFloor(context, floorSamples)));
    // Warm up every path the trials take (probe, set-state, both servers' GETs), so the first
    // trial does not pay for cold connections and JIT; not measured.
    for (const caseId of round) {
      const warmUp = await runTrial(context, caseId, 0);
      if (!warmUp.ok) {
        stoppedBy = `the warm-up ${caseId} failed: ${warmUp.error}`;
        return stoppedBy;
      }
    }
    let brokenInARow = 0;
    for (let trial = 1; trial <= options.trials && !stoppedBy; trial += 1) {
      for (const caseId of round) {
        stoppedBy = session.cannotGoOn(running, brokenInARow, 'the devices do not come back to their state before the change');
        // The benchmark stops none of the topology's processes; one that ended was stopped from outside, and every later trial would only time out.
        const exited = exitedProcesses(running);
        if (exited.length > 0) stoppedBy ??= `${exited.join(', ')} ended during the run; the benchmark stops none of them, so something outside it did`;
        if (stoppedBy) break;
        const load = loadavg()[0] ?? null;
        let result: PropagationResult;
        try {
          result = await runTrial(context, caseId, trial);
        } catch (error) {
          result = { ...emptyResult(caseId, trial), error: `the trial could not run: ${(error as Error).message}` };
        }
        result.load_avg_1m = load;
        if (!result.ok && exitedProcesses(running).length > 0) result.notes.push(`ended during the trial: ${exitedProcesses(running).join(', ')}`);
        results.push(result);
        brokenInARow = result.error?.startsWith('the trial could not run') ? brokenInARow + 1 : 0;
        const where = result.ok ? `A ${seconds(result.seen.A?.seen_ms)}, B ${seconds(result.seen.B?.seen_ms)}` : '';
        const request = result.request_ms === null ? '' : `; set-state answered in ${seconds(result.request_ms)}`;
        const dropped = result.broadcasts_dropped > 0 ? `; ${result.broadcasts_dropped} broadcast(s) dropped` : '';
        const notes = result.notes.length > 0 ? ` [${result.notes.join('; ')}]` : '';
        log(`${caseId} #${trial}: ${result.ok ? `${seconds(result.ms)} (${where}${request}${dropped})` : `FAILED: ${result.error}`}${notes} — load ${load?.toFixed(2) ?? '?'}`);
      }
    }
    return stoppedBy;
  } finally {
    const failedHere = results.slice(before).some((result) => !result.ok);
    try {
      if (failedHere || stoppedBy || options.keepLogs) {
        const copy = session.keepLogs(join(options.resultsDir, `propagation-${stamp}-logs`, label));
        if (copy) logCopies.push(copy);
      }
    } catch (error) {
      log(`could not copy the logs: ${(error as Error).message}`);
    }
    await Promise.all([servers.A.close(), servers.B.close()]);
    await session.stopHarness();
  }
}

try {
  for (const [index, topology] of topologies.entries()) {
    aborted = await onTopology(topology.label, topology.env, topology.round, index === 0);
    if (aborted) break;
  }
} catch (error) {
  aborted = `the benchmark stopped: ${(error as Error).message}`;
  log(`${aborted}\n${(error as Error).stack ?? ''}`);
}

const floorTrials = floor.map((ms, index) => ({ trial: index + 1, ok: true, ms, error: null, phases: {} }));
const floorSummary = summarizeTrials(floorTrials, undefined);
const summaries = caseIds.map((caseId) => ({
  case: caseId,
  ...summarizeTrials(
    results.filter((result) => result.case === caseId),
    caseTargets[caseId],
  ),
}));
const requestSummaries = caseIds
  .filter((caseId) => caseId.startsWith('operator'))
  .map((caseId) => {
    const values = results.flatMap((result) => (result.case === caseId && result.request_ms !== null ? [result.request_ms] : []));
    return { case: caseId, ...summarize(values.length, values) };
  });
const finishedAt = new Date();
const failed = results.filter((result) => !result.ok);
const missed = summaries.filter((summary) => summary.met === false);
const floorP50 = floorSummary.p50_ms;
const rows: Row[] = [[`polling floor (one GET at A and B, ${floor.length} samples)`, floorSummary], ...summaries.map((summary) => [summary.case, summary] as const)];

console.log(`## Results (${options.trials} trial(s) per case, ${seconds(finishedAt.getTime() - startedAt.getTime())} in all)\n`);
if (aborted) console.log(`**The run was cut short: ${aborted}.**\n`);
console.log(
  `Time from the change until both servers' GET of the device shows it (polled every ${pollIntervalMs} ms after each answer). Percentiles by nearest rank: with 20 trials p99 is the maximum.\n`,
);
console.log(resultsTable('case', rows));
console.log('');
console.log(`| case | p50 | p50 ÷ polling floor (${seconds(floorP50)}) | p50 ÷ probe interval (${seconds(probeIntervalMs)}) |`);
console.log('| --- | ---: | ---: | ---: |');
for (const summary of summaries) {
  const ratio = (base: number | undefined) => (summary.p50_ms === undefined || !base ? '–' : `${(summary.p50_ms / base).toFixed(1)}×`);
  console.log(`| ${summary.case} | ${seconds(summary.p50_ms)} | ${ratio(floorP50)} | ${ratio(probeIntervalMs)} |`);
}
console.log('');
console.log('| set-state through A | requests | p50 | p99 | max |');
console.log('| --- | ---: | ---: | ---: | ---: |');
for (const summary of requestSummaries) console.log(`| ${summary.case} | ${summary.ok} | ${seconds(summary.p50_ms)} | ${seconds(summary.p99_ms)} | ${seconds(summary.max_ms)} |`);
console.log('');
console.log(phaseTable('case', rows.slice(1), 'the change'));
console.log('');

const file = session.writeResults(options.resultsDir, {
  trials_per_case: options.trials,
  trial_timeout_ms: options.trialTimeoutMs,
  poll_interval_ms: pollIntervalMs,
  aborted,
  settings,
  polling_floor: { ...floorSummary, samples_ms: floor },
  summaries,
  set_state_requests: requestSummaries,
  trials: results,
  logs: logCopies,
});
console.log(`JSON: ${file}${logCopies.length > 0 ? `\nlogs: ${logCopies.join(', ')}` : ''}`);
for (const result of failed) console.log(`- ${result.case} #${result.trial} failed: ${result.error}`);
await session.exit(aborted || failed.length > 0 || (options.strict && missed.length > 0) ? 1 : 0);
