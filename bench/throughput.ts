/**
 * Throughput benchmark: sustained end-to-end tasks/s (submit to `succeeded`) through the whole
 * default topology (two servers, two clusters, four agents), first on the memory backend and
 * then on the file backend, each divided by the 1-hop floor measured just before it on the
 * same machine and the same Postgres (issue 5: target >= 0.75 x the floor).
 *
 *   node --import tsx bench/throughput.ts              # 10 s per backend after a 5 s warm-up
 *   node --import tsx bench/throughput.ts --smoke      # CI: 2 s per backend
 *   node --import tsx bench/throughput.ts --cpu-prof   # also profile every process of the topology
 *   node --import tsx bench/throughput.ts --runs 3     # three trials, and their medians
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TopologyHarness } from '@duplex/harness';
import { runClosedLoop, type ClosedLoopResult } from './lib/closed-loop.ts';
import { statementsFlags, statementsTable } from './lib/pg-statements.ts';
import { floorsTable, measureOneHopFloor, postgresLine, type FloorFigure } from './lib/floor.ts';
import { count, listFlag, ms, parseLoadFlags, positiveNumber, ratio, table } from './lib/load-options.ts';
import { idleCpu, type CpuShare } from './lib/process-cpu.ts';
import { profileFiles, summarizeProfiles, type ProfileSummary } from './lib/profile-summary.ts';
import type { PostgresSettings } from './lib/postgres.ts';
import { BenchSession, log } from './lib/session.ts';
import { readSettings } from './lib/settings.ts';
import { deviceCapacityBytes } from './lib/task-load.ts';
import { median } from './lib/stats.ts';
import { mediansTable, runsUsage, trialLabel, trialsWanted } from './lib/trials.ts';

const backends = ['memory', 'file'] as const;
type Backend = (typeof backends)[number];
/** Issue 5: end-to-end throughput >= 0.75 x the 1-hop floor measured in the same run. */
const targetRatio = 0.75;

const usage = `usage: node --import tsx bench/throughput.ts [--smoke] [--duration-s S] [--warmup-s S] [--concurrency N] [--backends memory,file] [--floor-connections N] [--cpu-prof] [--pg-statements] [--runs N] [--strict] [--results-dir DIR]

  --smoke                a short run that checks the benchmark works (2 s per backend and floor)
  --duration-s S         measured seconds per backend (default 10; 2 with --smoke); the floor runs as long
  --warmup-s S           unmeasured seconds of the same load first (default 5; 2 with --smoke)
  --concurrency N        tasks in flight (submitted and not yet ended) at once (default 2048)
  --floor-connections N  connections of the 1-hop floor's closed loop (default 64)
  --backends LIST        some of: ${backends.join(', ')} (default both, in that order)
  --drain-timeout-s S    how long to wait for the last tasks after the window (default 30)
  --cpu-prof             profile every process of the topology (as node --cpu-prof does) and print the top self-time functions in the window
  --pg-statements        load pg_stat_statements into the run's Postgres and print the statements it spent the window on
${runsUsage}
  --strict               exit 1 when the target is missed too (by the median with --runs; by default only failed tasks or errors do)
  --results-dir DIR      where the JSON (and profiles) go (default: bench/results)`;

const benchDir = fileURLToPath(new URL('.', import.meta.url));
const flags = parseLoadFlags(process.argv.slice(2), usage, join(benchDir, 'results'), {
  'duration-s': { type: 'string' },
  'warmup-s': { type: 'string' },
  concurrency: { type: 'string' },
  'floor-connections': { type: 'string' },
  backends: { type: 'string' },
  'drain-timeout-s': { type: 'string' },
  'cpu-prof': { type: 'boolean', default: false },
  'pg-statements': { type: 'boolean', default: false },
  runs: { type: 'string' },
});
const durationMs = positiveNumber(flags, 'duration-s', flags.smoke ? 2 : 10, usage) * 1_000;
// Even the smoke warms up for 2 s: the first tasks on a cold topology can take longer than a shorter window.
const warmupMs = positiveNumber(flags, 'warmup-s', flags.smoke ? 2 : 5, usage) * 1_000;
// Sustained throughput needs work waiting: with 128 in flight the run measured duplex's latency
// (about 240 ms from submit to succeeded) rather than what it can carry, since it batches
// dispatch, execution and reports per round and a round is fuller the more work waits.
const concurrency = positiveNumber(flags, 'concurrency', 2048, usage, true);
const floorConnections = positiveNumber(flags, 'floor-connections', 64, usage, true);
const drainTimeoutMs = positiveNumber(flags, 'drain-timeout-s', 30, usage) * 1_000;
const chosen = listFlag(flags, 'backends', backends, backends, usage);
const cpuProf = flags.values['cpu-prof'] === true;
const pgStatements = flags.values['pg-statements'] === true;
const trials = trialsWanted(flags, usage);
const floorWarmupMs = Math.min(warmupMs, flags.smoke ? 1_000 : 2_000);
const idleWindowMs = 3_000;

const settings = readSettings(process.env, { server: ['DATABASE_POOL_MAX', 'DISPATCH_BATCH_SIZE', 'DISPATCH_RETRY_MS', 'AGENT_HEARTBEAT_INTERVAL_MS'] });
const session = new BenchSession('throughput');
const { runId, stamp } = session;
session.begin(`${trials > 1 ? `${trials} trials of: ` : ''}${chosen.join(' then ')} backend; ${concurrency} tasks in flight; ${warmupMs / 1_000} s warm-up, ${durationMs / 1_000} s measured; 1-hop floor first`, settings);
const profileRoot = join(flags.resultsDir, `throughput-${stamp}-profiles`);
const profilerPreload = fileURLToPath(new URL('./lib/cpu-profiler.mjs', import.meta.url));

interface BackendRun {
  backend: Backend;
  /** Which of the `--runs` trials, from 1. */
  trial: number;
  floor: FloorFigure | null;
  postgres: PostgresSettings | null;
  load: ClosedLoopResult | null;
  /** CPU of the topology's processes at rest, measured after the boot. */
  idle_cpu: CpuShare[];
  profiles: ProfileSummary[];
  /** Postgres transactions committed (all clients, background work included) and rows written to the history, per task of the run. */
  database: DatabaseCounts | null;
  error: string | null;
}

interface DatabaseCounts {
  tasks: number;
  commits_per_task: number;
  history_rows_per_task: number;
  events_per_task: number;
  /** Tasks per commit that created, dispatched (last attempt) and ended them (rows of one transaction share its now()). */
  tasks_per_commit: { submit: number; dispatch: number; end: number };
  /** HTTP requests answered per task over the run, by service and route (from their /metrics). */
  requests_per_task: Record<string, number>;
}

/** Requests each service answered so far, by `service route` (every method and status). */
async function requestCounts(harness: TopologyHarness): Promise<Map<string, number>> {
  const services: [string, string][] = [
    ['servers', harness.serverUrl('A')],
    ['servers', harness.serverUrl('B')],
    ...harness.topology.storage_systems.flatMap((system) => system.clusters.map((cluster): [string, string] => ['drivers', cluster.driver_url])),
  ];
  const counts = new Map<string, number>();
  for (const [service, url] of services) {
    const text = await (await fetch(`${url}/metrics`)).text();
    for (const match of text.matchAll(/^duplex_http_request_duration_seconds_count\{(.*)\} (\S+)$/gm)) {
      const route = /route="([^"]*)"/.exec(match[1]!)?.[1] ?? '?';
      const key = `${service} ${/method="([^"]*)"/.exec(match[1]!)?.[1] ?? '?'} ${route}`;
      counts.set(key, (counts.get(key) ?? 0) + Number(match[2]));
    }
  }
  return counts;
}

async function tasksPerCommit(db: TopologyHarness['db']): Promise<DatabaseCounts['tasks_per_commit']> {
  const { rows } = await db.raw<{ rows: { tasks: string; submits: string; dispatches: string; ends: string }[] }>(
    `select count(*) as tasks, count(distinct created_at) as submits, count(distinct dispatched_at) as dispatches, count(distinct finished_at) as ends from tasks`,
  );
  const row = rows[0]!;
  const per = (commits: string) => (Number(commits) > 0 ? Number(row.tasks) / Number(commits) : 0);
  return { submit: per(row.submits), dispatch: per(row.dispatches), end: per(row.ends) };
}

/** Commits of the topology's database so far, and rows in the history and the outbox. */
async function databaseTotals(db: TopologyHarness['db']): Promise<{ commits: number; history: number; events: number }> {
  const { rows } = await db.raw<{ rows: { commits: string; history: string; events: string }[] }>(
    `select (select xact_commit from pg_stat_database where datname = current_database()) as commits,
            (select count(*) from task_history) as history, (select count(*) from events) as events`,
  );
  const row = rows[0]!;
  return { commits: Number(row.commits), history: Number(row.history), events: Number(row.events) };
}

const runs: BackendRun[] = [];

/** Profiles of each kind of process, summed over the processes of that kind, in the measured window. */
function readProfiles(directory: string, load: ClosedLoopResult): ProfileSummary[] {
  const files = profileFiles(directory);
  const roles: [string, RegExp][] = [
    ['servers', /^server-/],
    ['agents', /^agent-/],
    ['drivers', /^driver-/],
    ['cluster-managers', /^cluster-manager-/],
  ];
  return roles.flatMap(([, pattern]) => {
    const named = Object.entries(load.process_names).filter(([, name]) => pattern.test(name));
    const paths = named.flatMap(([pid]) => files.get(Number(pid)) ?? []);
    return paths.length > 0 ? [summarizeProfiles(named.map(([, name]) => name), paths, load.monotonic_window)] : [];
  });
}

/** A run's name in the log and the report: its backend, and its trial when there are several. */
const nameOf = (run: BackendRun): string => trialLabel(run.backend, run.trial, trials);

/** One trial of one backend: its floor, then the load on a fresh topology. */
async function measureBackend(backend: Backend, trial: number): Promise<void> {
  const run: BackendRun = { backend, trial, floor: null, postgres: null, load: null, idle_cpu: [], profiles: [], database: null, error: null };
  runs.push(run);
  const label = nameOf(run);
  const profileDir = join(profileRoot, trials > 1 ? `${backend}-${trial}` : backend);
  try {
    if (cpuProf) mkdirSync(profileDir, { recursive: true });
    // Node 20 refuses --cpu-prof in NODE_OPTIONS; the preload does the same from inside each process.
    const env: Record<string, string> = cpuProf ? { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import ${profilerPreload}`.trim(), DUPLEX_CPU_PROFILE_DIR: profileDir } : {};
    const topology = await session.startTopology(`${backend} topology`, env, { backend, capacityBytes: deviceCapacityBytes, postgresFlags: pgStatements ? statementsFlags : [] });
    const { harness } = topology;
    try {
      // The cluster-managers build their spare agents just after the boot; let that pass first.
      // The smoke only checks that the run works, so it skips this.
      if (!flags.smoke) {
        await new Promise((resolve) => setTimeout(resolve, 2_000));
        run.idle_cpu = await idleCpu(harness, idleWindowMs);
      }
      // The floor writes to the topology's own Postgres, while the topology idles.
      const floor = await measureOneHopFloor({ adminUrl: harness.databaseUrl, durationMs, warmupMs: floorWarmupMs, connections: floorConnections, log });
      run.floor = floor.figure;
      run.postgres = floor.postgres;
      // pg_stat_database lags by up to its flush interval: read it after a pause at each end.
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      const totalsBefore = await databaseTotals(harness.db);
      const requestsBefore = await requestCounts(harness);
      run.load = await runClosedLoop({
        harness,
        prefix: `tp-${runId}-${backend}-${trial}`,
        concurrency,
        warmupMs,
        durationMs,
        drainTimeoutMs,
        statements: pgStatements,
        log,
      });
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      const totalsAfter = await databaseTotals(harness.db);
      const requestsAfter = await requestCounts(harness);
      const tasksInRun = Object.values(run.load.states).reduce((a, b) => a + b, 0);
      if (tasksInRun > 0) {
        run.database = {
          tasks: tasksInRun,
          commits_per_task: (totalsAfter.commits - totalsBefore.commits) / tasksInRun,
          history_rows_per_task: (totalsAfter.history - totalsBefore.history) / tasksInRun,
          events_per_task: (totalsAfter.events - totalsBefore.events) / tasksInRun,
          tasks_per_commit: await tasksPerCommit(harness.db),
          requests_per_task: Object.fromEntries(
            [...requestsAfter]
              .map(([key, after]): [string, number] => [key, (after - (requestsBefore.get(key) ?? 0)) / tasksInRun])
              .filter(([key, perTask]) => perTask >= 0.005 && !key.includes('/metrics')),
          ),
        };
      }
      log(
        `${label}: ${run.load.tasks_per_s.toFixed(0)} tasks/s against a floor of ${run.floor.req_per_s.toFixed(0)}/s; ` +
          `${run.load.failed} failed, ${run.load.submit_errors} submit errors, ${run.load.unfinished} unfinished`,
      );
    } finally {
      await Promise.all([topology.servers.A.close(), topology.servers.B.close()]);
      await session.stopHarness();
    }
    // The processes write their profiles as they exit.
    if (cpuProf && run.load) run.profiles = readProfiles(profileDir, run.load);
  } catch (error) {
    run.error = (error as Error).message;
    log(`${label}: the run stopped: ${run.error}\n${(error as Error).stack ?? ''}`);
  }
}

for (let trial = 1; trial <= trials; trial++) {
  for (const backend of chosen) await measureBackend(backend, trial);
}

const problems = runs.flatMap((run) => {
  const found: string[] = [];
  if (run.error) found.push(`${nameOf(run)}: ${run.error}`);
  if (run.floor && run.floor.errors > 0) found.push(`${nameOf(run)}: the floor had ${run.floor.errors} failed requests`);
  if (run.load?.failed) found.push(`${nameOf(run)}: ${run.load.failed} task(s) failed`);
  if (run.load?.submit_errors) found.push(`${nameOf(run)}: ${run.load.submit_errors} submit(s) were not answered 202: ${JSON.stringify(run.load.submit_error_kinds)}`);
  if (run.load?.unfinished) found.push(`${nameOf(run)}: ${run.load.unfinished} task(s) had not ended after the drain`);
  return found;
});
const measured = runs.filter((run): run is BackendRun & { floor: FloorFigure; load: ClosedLoopResult } => run.floor !== null && run.load !== null);
/** Per backend, its trials' figures; the target is judged by the median of their ratios to the floor. */
const byBackend = chosen.map((backend) => {
  const trialsOf = measured.filter((run) => run.backend === backend);
  const ratios = trialsOf.map((run) => run.load.tasks_per_s / run.floor.req_per_s);
  return { backend, trialsOf, ratios, medianRatio: median(ratios) };
});
const missed = byBackend.filter((entry) => entry.medianRatio !== undefined && entry.medianRatio < targetRatio);

console.log(`## Throughput (${concurrency} tasks in flight, ${durationMs / 1_000} s measured after ${warmupMs / 1_000} s warm-up)\n`);
const postgres = runs.find((run) => run.postgres)?.postgres;
if (postgres) console.log(`${postgresLine(postgres)}. Tasks are \`volume.create\` of ${4_096} bytes, spread over both servers and all 8 devices.\n`);
console.log(
  table(
    ['backend', 'tasks/s (succeeded in window)', '1-hop floor, same run', 'ratio', 'target', 'met', 'failed', 'submit errors', 'unfinished', 'submit→succeeded p50', 'p99', 'load avg (1 min)'],
    runs.map((run) => {
      const load = run.load;
      const floor = run.floor;
      if (!load || !floor) return [nameOf(run), `**not measured**: ${run.error ?? '?'}`, floor ? `${count(floor.req_per_s)}/s` : '–', '–', `≥ ${targetRatio}×`, '–', '–', '–', '–', '–', '–', '–'];
      const met = load.tasks_per_s >= targetRatio * floor.req_per_s;
      return [
        nameOf(run),
        count(load.tasks_per_s),
        `${count(floor.req_per_s)}/s`,
        ratio(load.tasks_per_s, floor.req_per_s),
        `≥ ${targetRatio}×`,
        met ? 'yes' : `**no** (${((load.tasks_per_s / floor.req_per_s / targetRatio) * 100).toFixed(0)} % of the target)`,
        String(load.failed),
        String(load.submit_errors),
        String(load.unfinished),
        ms(load.end_to_end_ms.p50),
        ms(load.end_to_end_ms.p99),
        `${load.load_avg_1m.start.toFixed(2)} → ${load.load_avg_1m.end.toFixed(2)}`,
      ];
    }),
    [false, true, true, true, false, false, true, true, true, true, true, true],
  ),
);
console.log('');
if (trials > 1) {
  console.log(`Medians of the ${trials} trials (each on a fresh topology, with its own floor):\n`);
  console.log(
    mediansTable(
      'backend',
      byBackend.map(({ backend, trialsOf, ratios, medianRatio }) => ({
        name: backend,
        figures: [
          { heading: 'tasks/s', values: trialsOf.map((run) => run.load.tasks_per_s), format: count },
          { heading: '1-hop floor/s', values: trialsOf.map((run) => run.floor.req_per_s), format: count },
          { heading: 'ratio', values: ratios, format: (value) => `${value.toFixed(2)}×` },
          { heading: 'submit→succeeded p99', values: trialsOf.map((run) => run.load.end_to_end_ms.p99 ?? Infinity), format: ms },
        ],
        verdict: medianRatio === undefined ? 'not measured' : `≥ ${targetRatio}×: ${medianRatio >= targetRatio ? 'met' : '**missed**'}`,
      })),
    ),
  );
  console.log('');
}
console.log('The 1-hop floor of each row, measured just before it on the topology\'s Postgres (the topology idle):\n');
console.log(floorsTable(runs.flatMap((run) => (run.floor ? [{ ...run.floor, title: `${run.floor.title} (before ${nameOf(run)})` }] : []))));
console.log('');
console.log(
  table(
    ['backend', 'median (p99) moment each state was entered, after the task was created'],
    measured.map((run) => [nameOf(run), Object.entries(run.load.phases_ms).map(([state, at]) => `${state} ${ms(at.p50)} (${ms(at.p99)})`).join(' → ')]),
  ),
);
console.log('');
console.log(
  table(
    ['backend', 'succeeded in each second of the window', 'tasks re-dispatched', 'tasks in the run'],
    measured.map((run) => [nameOf(run), run.load.per_second.map((value) => count(value)).join(', '), String(run.load.redispatched), count(Object.values(run.load.states).reduce((a, b) => a + b, 0))]),
  ),
);
console.log('');
for (const run of measured) {
  console.log(`CPU of the run's processes during the ${nameOf(run)} window (% of one core; the machine has 2):\n`);
  const idle = new Map(run.idle_cpu.map((share) => [share.name, share.cpu_percent]));
  console.log(
    table(
      ['process', 'processes', 'CPU under load', 'CPU at rest (after the boot)'],
      run.load.cpu.map((share) => [share.name, String(share.processes), `${share.cpu_percent.toFixed(0)} %`, idle.has(share.name) ? `${idle.get(share.name)!.toFixed(0)} %` : '–']),
      [false, true, true, true],
    ),
  );
  const total = (shares: CpuShare[]) => shares.reduce((sum, share) => sum + share.cpu_percent, 0);
  if (run.database) {
    console.log(
      `\nPostgres over the whole run (${count(run.database.tasks)} tasks, warm-up and drain included; every client, background work too): ` +
        `${run.database.commits_per_task.toFixed(2)} commits, ${run.database.history_rows_per_task.toFixed(2)} history rows and ${run.database.events_per_task.toFixed(2)} events per task; ` +
        `${run.database.tasks_per_commit.submit.toFixed(1)} tasks per submit commit, ${run.database.tasks_per_commit.dispatch.toFixed(1)} per dispatch commit, ${run.database.tasks_per_commit.end.toFixed(1)} per commit that ended them.`,
    );
    console.log(`HTTP requests per task: ${Object.entries(run.database.requests_per_task).map(([key, perTask]) => `${key} ${perTask.toFixed(3)}`).join('; ')}.`);
  }
  console.log(`\nIn all: ${total(run.load.cpu).toFixed(0)} % under load (${run.load.tasks_per_s > 0 ? ((total(run.load.cpu) / 100 / run.load.tasks_per_s) * 1_000).toFixed(1) : '–'} ms of CPU per task), ${run.idle_cpu.length > 0 ? `${total(run.idle_cpu).toFixed(0)} % at rest` : 'not measured at rest'}.`);
  console.log('');
  console.log(`\nPostgres client backends during the ${nameOf(run)} window, on average over ${run.load.postgres_waits.samples} samples (application: state / what they waited for):\n`);
  console.log(table(['application: state / wait', 'backends'], run.load.postgres_waits.waits.slice(0, 12).map((wait) => [wait.what, wait.backends.toFixed(2)]), [false, true]));
  console.log('');
  const statements = run.load.postgres_waits.statements;
  if (statements) {
    console.log(`Statements Postgres ran in the ${nameOf(run)} window, by execution time (${ms(statements.total_ms)} in all, ${count(statements.total_wal_bytes / Math.max(run.load.succeeded_in_window, 1))} WAL bytes per task; per task = per task succeeded in the window):\n`);
    console.log(statementsTable(statements, run.load.succeeded_in_window, 'task'));
    console.log('');
  }
  for (const profile of run.profiles) {
    console.log(`Top self time in ${profile.processes.join(', ')} during the ${nameOf(run)} window (${count(profile.busy_ms)} ms busy, ${count(profile.idle_ms)} ms idle):\n`);
    console.log(table(['function', 'where', 'self', 'share of busy'], profile.top.map((entry) => [`\`${entry.function}\``, entry.location, ms(entry.self_ms), `${entry.percent.toFixed(1)} %`]), [false, false, true, true]));
    console.log('');
    console.log(table(['package', 'self', 'share of busy'], profile.packages.map((entry) => [entry.package, ms(entry.self_ms), `${entry.percent.toFixed(1)} %`]), [false, true, true]));
    console.log('');
  }
}

const file = session.writeResults(flags.resultsDir, {
  smoke: flags.smoke,
  duration_ms: durationMs,
  warmup_ms: warmupMs,
  concurrency,
  floor_connections: floorConnections,
  target_ratio: targetRatio,
  settings,
  problems,
  runs,
});
console.log(`JSON: ${file}${cpuProf ? `\nprofiles: ${profileRoot}` : ''}`);
for (const problem of problems) console.log(`- ${problem}`);
await session.exit(problems.length > 0 || (flags.strict && missed.length > 0) ? 1 : 0);
