/**
 * Latency benchmark: submit latency (POST /v1/tasks answered 202) and end-to-end latency
 * (to the task's committed `succeeded`) at fixed offered loads, with an open-loop generator
 * measuring from each request's intended send time, on the whole topology (memory backend).
 * At each load the floor's POST + INSERT and 1-hop task path get the same schedule first, in
 * the same run, and duplex's p99s are divided by theirs. Issue 5's target: submit p99 <= 10 ms at 1,000/s.
 *
 *   node --import tsx bench/latency.ts              # 500, 1000 and 2000 tasks/s, 10 s each
 *   node --import tsx bench/latency.ts --smoke      # CI: 2 s at 200/s
 *   node --import tsx bench/latency.ts --pg-statements  # also the statements Postgres spent each load on
 *   node --import tsx bench/latency.ts --runs 3     # every rate three times in turn, and the medians
 */
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FloorClient, postgresLine, startFloorServices, type FloorId, type FloorServices } from './lib/floor.ts';
import { count, ms, parseLoadFlags, positiveNumber, ratio, table } from './lib/load-options.ts';
import { distribution, runOpenLoop, type Distribution, type OpenLoopRun } from './lib/open-loop.ts';
import type { PostgresSettings } from './lib/postgres.ts';
import { BenchSession, log, type RunningTopology } from './lib/session.ts';
import { readStatements, resetStatements, statementsFlags, statementsTable, type StatementProfile } from './lib/pg-statements.ts';
import { cpuBetween, cpuSharesTable, processNames, snapshotCpu, type CpuShare } from './lib/process-cpu.ts';
import { readSettings } from './lib/settings.ts';
import { median } from './lib/stats.ts';
import { mediansTable, trialLabel, trialsWanted } from './lib/trials.ts';
import { deviceCapacityBytes, settleTasks, TaskFeed, TaskSubmitter, waitForQuiet } from './lib/task-load.ts';

/** Issue 5: submit p99 <= 10 ms at 1,000 tasks/s offered. */
const target = { ratePerS: 1_000, submitP99Ms: 10 };

const usage = `usage: node --import tsx bench/latency.ts [--smoke] [--rates 500,1000,2000] [--duration-s S] [--warmup-s S] [--settle-timeout-s S] [--connections N] [--pg-statements] [--strict] [--results-dir DIR]

  --smoke               a short run that checks the benchmark works (2 s at 200/s)
  --rates LIST          offered loads, tasks/s (default 500,1000,2000; 200 with --smoke)
  --duration-s S        seconds of load at each rate (default 10; 2 with --smoke)
  --warmup-s S          unmeasured seconds at the first rate before the first (default 2; 0.5 with --smoke)
  --settle-timeout-s S  after a load, how long the answers and the tasks may take to end before they count as unfinished (default 30)
  --connections N       connections per server (and to the floor) the generator may open (default 256)
  --pg-statements       load pg_stat_statements into the run's Postgres and print the statements it spent each load on
  --runs N              measure every rate (and its floors) N times in turn, on the same topology, and print the medians (default 1)
  --strict              exit 1 when the target is missed (by the median with --runs) or tasks are left unfinished too
  --results-dir DIR     where the JSON goes (default: bench/results)`;

const benchDir = fileURLToPath(new URL('.', import.meta.url));
const flags = parseLoadFlags(process.argv.slice(2), usage, join(benchDir, 'results'), {
  rates: { type: 'string' },
  'duration-s': { type: 'string' },
  'warmup-s': { type: 'string' },
  'settle-timeout-s': { type: 'string' },
  connections: { type: 'string' },
  'pg-statements': { type: 'boolean', default: false },
  runs: { type: 'string' },
});
const rates = (typeof flags.values.rates === 'string' ? flags.values.rates : flags.smoke ? '200' : '500,1000,2000').split(',').map((raw) => {
  const value = Number(raw.trim());
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--rates: '${raw}' is not a positive number\n${usage}`);
  return value;
});
const durationMs = positiveNumber(flags, 'duration-s', flags.smoke ? 2 : 10, usage) * 1_000;
const warmupMs = positiveNumber(flags, 'warmup-s', flags.smoke ? 0.5 : 2, usage) * 1_000;
const settleTimeoutMs = positiveNumber(flags, 'settle-timeout-s', 30, usage) * 1_000;
const connections = positiveNumber(flags, 'connections', 256, usage, true);
const pgStatements = flags.values['pg-statements'] === true;
const trials = trialsWanted(flags, usage);
/** Every rate in turn, once per trial: [trial, rate]. */
const schedule = Array.from({ length: trials }, (_, index) => rates.map((rate): [number, number] => [index + 1, rate])).flat();

const settings = readSettings(process.env, { server: ['DATABASE_POOL_MAX', 'DISPATCH_BATCH_SIZE', 'AGENT_HEARTBEAT_INTERVAL_MS'] });
const session = new BenchSession('latency');
const { runId } = session;
session.begin(`${rates.join(', ')} tasks/s offered, ${durationMs / 1_000} s each, open loop; memory backend; the floors get the same schedules`, settings);

interface SubmitFigures {
  sent: number;
  /** Answered with the expected status (202 for duplex). */
  ok: number;
  /** Answered 503: the service refused for want of capacity (a documented answer under overload). */
  refused: number;
  /** Answered with another status, or failed on the wire. */
  errors: number;
  /** Not answered within the settle timeout after the last was due. */
  unanswered: number;
  error_kinds: Record<string, number>;
  /** ok answers per second, from the first intended send to the last answer. */
  achieved_per_s: number;
  /** Intended send → answer, every request (unanswered ones as never). */
  latency: Distribution;
  /** How late the generator sent (its own lag, included in the latency). */
  send_lag: Distribution;
}

interface RatePhase {
  rate_per_s: number;
  /** Which of the `--runs` trials, from 1. */
  trial: number;
  load_avg_1m: number;
  submit: SubmitFigures;
  end_to_end: Distribution & { succeeded: number; failed: number; unfinished: number; completed_per_s: number };
  floor_insert: SubmitFigures;
  floor_one_hop: SubmitFigures;
  /** CPU of the run's processes while the load ran (not while it settled). */
  cpu: CpuShare[];
  /** With --pg-statements: what Postgres spent the load on. */
  statements: StatementProfile | null;
}

/** Infinity (never answered, never ended) as null in the JSON, '∞' in the tables. */
const finite = (value: number | null): number | null => (value === null || Number.isFinite(value) ? value : null);
const msOrNever = (value: number | null): string => (value === Infinity ? '∞ (unfinished)' : ms(value));

function submitFigures(run: OpenLoopRun): SubmitFigures {
  const errorKinds: Record<string, number> = {};
  let ok = 0;
  let refused = 0;
  let unanswered = 0;
  let lastAnswer = 0;
  for (const sample of run.samples) {
    if (!Number.isFinite(sample.latency_ms)) unanswered += 1;
    else lastAnswer = Math.max(lastAnswer, sample.intended_ms + sample.latency_ms);
    if (sample.ok) ok += 1;
    else if (sample.status === 503) refused += 1;
    if (!sample.ok && Number.isFinite(sample.latency_ms)) {
      const kind = (sample.error ?? 'unknown').slice(0, 160);
      if (errorKinds[kind] !== undefined || Object.keys(errorKinds).length < 10) errorKinds[kind] = (errorKinds[kind] ?? 0) + 1;
    }
  }
  const first = run.samples[0]?.intended_ms ?? 0;
  return {
    sent: run.samples.length,
    ok,
    refused,
    errors: run.samples.length - ok - refused - unanswered,
    unanswered,
    error_kinds: errorKinds,
    achieved_per_s: lastAnswer > first ? ok / ((lastAnswer - first) / 1_000) : 0,
    latency: distribution(run.samples.map((sample) => sample.latency_ms)),
    send_lag: distribution(run.samples.map((sample) => sample.send_lag_ms)),
  };
}

async function duplexPhase(topology: RunningTopology, feed: TaskFeed, submitter: TaskSubmitter, ratePerS: number, ms: number, names: Map<number, string>) {
  const { db } = topology.harness;
  if (pgStatements) await resetStatements(db);
  const before = snapshotCpu(names);
  const run = await runOpenLoop(ratePerS, ms, settleTimeoutMs, (_index, signal) => submitter.submit(feed.next(), signal));
  const cpu = cpuBetween(before, snapshotCpu(names));
  const statements = pgStatements ? await readStatements(db) : null;
  const ids = run.samples.flatMap((sample) => (sample.ok && sample.task_id ? [sample.task_id] : []));
  const ends = await settleTasks(db, ids, settleTimeoutMs);
  return { run, ends, cpu, statements };
}

async function floorPhase(client: FloorClient, floor: FloorId, ratePerS: number, ms: number): Promise<OpenLoopRun> {
  return runOpenLoop(ratePerS, ms, settleTimeoutMs, (_index, signal) => client.send(floor, signal));
}

const phases: RatePhase[] = [];
const notes: string[] = [];
let postgres: PostgresSettings | null = null;
let aborted: string | null = null;
try {
  const topology = await session.startTopology('memory topology', {}, { backend: 'memory', capacityBytes: deviceCapacityBytes, postgresFlags: pgStatements ? statementsFlags : [] });
  const { harness } = topology;
  const names = await processNames(harness);
  let floor: FloorServices | undefined;
  const devices = harness.topology.storage_systems.flatMap((system) => system.devices.map((device) => device.id));
  const feed = new TaskFeed(`lt-${runId}`, devices, 2);
  const submitter = new TaskSubmitter([harness.serverUrl('A'), harness.serverUrl('B')], connections);
  let floorClient: FloorClient | undefined;
  try {
    floor = await startFloorServices(harness.databaseUrl);
    postgres = floor.postgres;
    floorClient = new FloorClient(floor.url, connections);
    const first = rates[0]!;
    log(`warm-up: ${warmupMs} ms at ${first}/s against duplex and each floor`);
    await floorPhase(floorClient, 'insert', first, warmupMs);
    await floorPhase(floorClient, 'one-hop', first, warmupMs);
    await duplexPhase(topology, feed, submitter, first, warmupMs, names);
    for (const [trial, rate] of schedule) {
      const name = trialLabel(`${rate}/s`, trial, trials);
      // The floors go first, on a topology with nothing left to do, so that duplex's backlog
      // (submits given up on are still committed and run) never loads the floors' Postgres.
      const quiet = await waitForQuiet(harness.db, settleTimeoutMs);
      if (!quiet) notes.push(`${name}: the topology still had open tasks or new submits ${settleTimeoutMs / 1_000} s after the previous load; the floors shared the machine with them`);
      log(`${name} for ${durationMs} ms: the floor's POST + INSERT, then its 1-hop task path`);
      const loadAvg = loadavg()[0] ?? 0;
      const insert = await floorPhase(floorClient, 'insert', rate, durationMs);
      const oneHop = await floorPhase(floorClient, 'one-hop', rate, durationMs);
      log(`${name} for ${durationMs} ms: duplex`);
      const { run, ends, cpu, statements } = await duplexPhase(topology, feed, submitter, rate, durationMs, names);
      const endToEnd: number[] = [];
      let succeeded = 0;
      let failed = 0;
      let unfinished = 0;
      let lastFinish = 0;
      for (const sample of run.samples) {
        if (!sample.ok || !sample.task_id) continue;
        const end = ends.get(sample.task_id);
        if (end?.state === 'succeeded' && end.finished_ms !== null) {
          succeeded += 1;
          endToEnd.push(end.finished_ms - sample.intended_ms);
          lastFinish = Math.max(lastFinish, end.finished_ms);
        } else if (end?.state === 'failed' || end?.state === 'cancelled') {
          failed += 1;
        } else {
          unfinished += 1;
          endToEnd.push(Infinity);
        }
      }
      const firstIntended = run.samples[0]?.intended_ms ?? 0;
      const phase: RatePhase = {
        rate_per_s: rate,
        trial,
        load_avg_1m: loadAvg,
        submit: submitFigures(run),
        end_to_end: { ...distribution(endToEnd), succeeded, failed, unfinished, completed_per_s: lastFinish > firstIntended ? succeeded / ((lastFinish - firstIntended) / 1_000) : 0 },
        floor_insert: submitFigures(insert),
        floor_one_hop: submitFigures(oneHop),
        cpu,
        statements,
      };
      phases.push(phase);
      log(
        `${name}: submit p99 ${msOrNever(phase.submit.latency.p99_ms)} (floor ${msOrNever(phase.floor_insert.latency.p99_ms)}), ` +
          `end-to-end p99 ${msOrNever(phase.end_to_end.p99_ms)} (floor ${msOrNever(phase.floor_one_hop.latency.p99_ms)}); ` +
          `${phase.submit.refused} refused (503), ${phase.submit.errors} errors, ${phase.submit.unanswered} unanswered, ${failed} failed, ${unfinished} unfinished`,
      );
    }
  } finally {
    await Promise.all([submitter.close(), floorClient?.close(), topology.servers.A.close(), topology.servers.B.close()]);
    await floor?.stop();
    await session.stopHarness();
  }
} catch (error) {
  aborted = `the benchmark stopped: ${(error as Error).message}`;
  log(`${aborted}\n${(error as Error).stack ?? ''}`);
}

console.log(`## Latency (open loop, ${durationMs / 1_000} s per offered load, memory backend)\n`);
if (aborted) console.log(`**The run was cut short: ${aborted}.**\n`);
if (postgres) console.log(`${postgresLine(postgres)}. Latency counts from each request's intended send time. At each load the floors got the same schedule first, on a quiet topology.\n`);
/** A phase's row name: its rate, and its trial when there are several. */
const rateLabel = (phase: RatePhase): string => trialLabel(`${count(phase.rate_per_s)}/s`, phase.trial, trials);
const p99Ratio = (value: number | null, floor: number | null): string => (value === null || floor === null || !Number.isFinite(value) || !Number.isFinite(floor) ? '–' : ratio(value, floor));
console.log('Submit: POST /v1/tasks answered 202 (floor: fastify POST + one durable INSERT, same schedule)\n');
console.log(
  table(
    ['offered/s', 'sent', '202', '503', 'errors', 'unanswered', 'achieved/s', 'p50', 'p99', 'max', 'floor p50', 'floor p99', 'p99 ÷ floor p99', 'generator lag p99', 'load avg (1 min)'],
    phases.map((phase) => [
      rateLabel(phase),
      count(phase.submit.sent),
      count(phase.submit.ok),
      count(phase.submit.refused),
      count(phase.submit.errors),
      count(phase.submit.unanswered),
      count(phase.submit.achieved_per_s),
      msOrNever(phase.submit.latency.p50_ms),
      msOrNever(phase.submit.latency.p99_ms),
      msOrNever(phase.submit.latency.max_ms),
      msOrNever(phase.floor_insert.latency.p50_ms),
      msOrNever(phase.floor_insert.latency.p99_ms),
      p99Ratio(phase.submit.latency.p99_ms, phase.floor_insert.latency.p99_ms),
      ms(phase.submit.send_lag.p99_ms),
      phase.load_avg_1m.toFixed(2),
    ]),
    true,
  ),
);
console.log('');
console.log("End to end: intended send → the task's `succeeded` committed (floor: the 1-hop task path's answer, same schedule)\n");
console.log(
  table(
    ['offered/s', 'succeeded', 'failed', 'unfinished', 'completed/s', 'p50', 'p99', 'max', 'floor p50', 'floor p99', 'p99 ÷ floor p99', 'floor errors'],
    phases.map((phase) => [
      rateLabel(phase),
      count(phase.end_to_end.succeeded),
      count(phase.end_to_end.failed),
      count(phase.end_to_end.unfinished),
      count(phase.end_to_end.completed_per_s),
      msOrNever(phase.end_to_end.p50_ms),
      msOrNever(phase.end_to_end.p99_ms),
      msOrNever(phase.end_to_end.max_ms),
      msOrNever(phase.floor_one_hop.latency.p50_ms),
      msOrNever(phase.floor_one_hop.latency.p99_ms),
      p99Ratio(phase.end_to_end.p99_ms, phase.floor_one_hop.latency.p99_ms),
      count(phase.floor_one_hop.errors + phase.floor_one_hop.unanswered + phase.floor_insert.errors + phase.floor_insert.unanswered),
    ]),
    true,
  ),
);
console.log('');
if (phases.length > 0) {
  console.log("CPU of the run's processes while each load ran (% of one core; the machine has 2; the whole topology and the load generator):\n");
  console.log(cpuSharesTable(phases.map((phase) => ({ label: rateLabel(phase), cpu: phase.cpu, unitsPerS: phase.submit.achieved_per_s }))));
  console.log('');
}
for (const phase of phases) {
  if (!phase.statements) continue;
  console.log(`Statements Postgres ran while ${rateLabel(phase)} were offered, by execution time (${ms(phase.statements.total_ms)} in all):\n`);
  console.log(statementsTable(phase.statements, phase.submit.ok, 'task'));
  console.log('');
}
if (trials > 1) {
  console.log(`Medians of the ${trials} trials (every rate in turn, then again; the floors measured before duplex each time):\n`);
  console.log(
    mediansTable(
      'offered/s',
      rates.map((rate) => {
        const ofRate = phases.filter((phase) => phase.rate_per_s === rate);
        const figure = (heading: string, values: (number | null)[]) => ({ heading, values: values.map((value) => value ?? Infinity), format: msOrNever });
        const times = (value: number) => (Number.isFinite(value) ? `${value.toFixed(2)}×` : '–');
        const p99 = ofRate.map((phase) => phase.submit.latency.p99_ms);
        const middle = median(p99.map((value) => value ?? Infinity));
        return {
          name: `${count(rate)}/s`,
          figures: [
            figure('submit p99', p99),
            figure('POST + INSERT floor p99', ofRate.map((phase) => phase.floor_insert.latency.p99_ms)),
            { heading: 'submit p99 ÷ floor p99', values: ofRate.map((phase) => (phase.submit.latency.p99_ms ?? Infinity) / (phase.floor_insert.latency.p99_ms ?? 0)), format: times },
            figure('end-to-end p99', ofRate.map((phase) => phase.end_to_end.p99_ms)),
            figure('1-hop floor p99', ofRate.map((phase) => phase.floor_one_hop.latency.p99_ms)),
          ],
          verdict: rate === target.ratePerS && middle !== undefined ? `submit p99 ≤ ${target.submitP99Ms} ms: ${middle <= target.submitP99Ms ? 'met' : '**missed**'}` : '–',
        };
      }),
    ),
  );
  console.log('');
}
const atTarget = phases.filter((phase) => phase.rate_per_s === target.ratePerS);
/** The target's figure: the submit p99 at its rate, the median of the trials'. */
const targetP99 = median(atTarget.map((phase) => phase.submit.latency.p99_ms ?? Infinity));
const targetMet = targetP99 !== undefined ? atTarget.every((phase) => phase.submit.unanswered === 0) && targetP99 <= target.submitP99Ms : null;
console.log(
  targetP99 !== undefined
    ? `Target: submit p99 ≤ ${target.submitP99Ms} ms at ${count(target.ratePerS)}/s offered: ${msOrNever(targetP99)}${trials > 1 ? ' (the median of the trials)' : ''}, ${targetMet ? 'met' : '**missed**'}.\n`
    : `Target: submit p99 ≤ ${target.submitP99Ms} ms at ${count(target.ratePerS)}/s offered: not measured in this run (rates ${rates.join(', ')}).\n`,
);

const problems = phases.flatMap((phase) => {
  const found: string[] = [];
  if (phase.submit.errors > 0) found.push(`${rateLabel(phase)}: ${phase.submit.errors} submit(s) were not answered 202: ${JSON.stringify(phase.submit.error_kinds)}`);
  if (phase.end_to_end.failed > 0) found.push(`${rateLabel(phase)}: ${phase.end_to_end.failed} task(s) failed`);
  return found;
});
if (aborted) problems.unshift(aborted);
const slow = phases.flatMap((phase) =>
  phase.submit.unanswered + phase.submit.refused + phase.end_to_end.unfinished > 0
    ? [
        `${rateLabel(phase)}: ${phase.submit.refused} submit(s) refused with 503, ${phase.submit.unanswered} unanswered and ${phase.end_to_end.unfinished} task(s) unfinished ${settleTimeoutMs / 1_000} s after the load`,
      ]
    : [],
);
const json = (figures: SubmitFigures) => ({
  ...figures,
  latency: { ...figures.latency, p50_ms: finite(figures.latency.p50_ms), p99_ms: finite(figures.latency.p99_ms), max_ms: finite(figures.latency.max_ms) },
});
const file = session.writeResults(flags.resultsDir, {
  smoke: flags.smoke,
  rates,
  duration_ms: durationMs,
  warmup_ms: warmupMs,
  settle_timeout_ms: settleTimeoutMs,
  connections,
  target: { rate_per_s: target.ratePerS, submit_p99_ms: target.submitP99Ms, met: targetMet },
  settings,
  postgres,
  problems,
  slow,
  notes,
  phases: phases.map((phase) => ({
    ...phase,
    submit: json(phase.submit),
    end_to_end: { ...phase.end_to_end, p50_ms: finite(phase.end_to_end.p50_ms), p99_ms: finite(phase.end_to_end.p99_ms), max_ms: finite(phase.end_to_end.max_ms) },
    floor_insert: json(phase.floor_insert),
    floor_one_hop: json(phase.floor_one_hop),
  })),
});
console.log(`JSON: ${file}`);
for (const line of [...problems, ...slow, ...notes]) console.log(`- ${line}`);
await session.exit(problems.length > 0 || (flags.strict && (targetMet === false || slow.length > 0)) ? 1 : 0);
