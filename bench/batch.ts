/**
 * Batch submission benchmark (issue 5: "a bulk endpoint for many tasks in one request, in
 * tasks/s", target >= 20,000 tasks/s on this machine): clients post batches of tasks to
 * `POST /v1/tasks:batch` on both servers of the default topology (memory backend), each client
 * sending its next batch when the last is answered. Beside it, in the same run on the same
 * Postgres: the floor, a bare multi-row INSERT of the same rows in one transaction per batch,
 * and the peer, pg-boss 10's `insert()` of the same batch.
 *
 *   node --import tsx bench/batch.ts              # 4 clients × 1,000 tasks a batch, 10 s each after 3 s warm-up
 *   node --import tsx bench/batch.ts --smoke      # CI: 2 clients × 100 tasks, 2 s each
 *   node --import tsx bench/batch.ts --cpu-prof   # also profile the servers
 *   node --import tsx bench/batch.ts --runs 3     # three trials, each on a fresh topology, and their medians
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sleep } from './lib/api.ts';
import { runBatchLoad, type BatchLoadResult, type SendBatch } from './lib/batch-clients.ts';
import { checkStore, DuplexBatchSubmitter } from './lib/batch-duplex.ts';
import { InsertFloor } from './lib/batch-floor.ts';
import { PgBossPeer } from './lib/batch-pgboss.ts';
import {
  cpuTable,
  measurementIds,
  measurementTitles,
  perSecondTable,
  profileTables,
  resultsTable,
  storeTable,
  targetTasksPerS,
  waitsTable,
  type Measurement,
  type MeasurementId,
  type StoreCount,
} from './lib/batch-report.ts';
import type { BatchShape } from './lib/batch-tasks.ts';
import { postgresLine } from './lib/floor.ts';
import { count, listFlag, ms, parseLoadFlags, positiveNumber } from './lib/load-options.ts';
import { statementsFlags, statementsTable } from './lib/pg-statements.ts';
import { postgresSettings, type PostgresSettings } from './lib/postgres.ts';
import { processNames } from './lib/process-cpu.ts';
import { profileFiles, summarizeProfiles, type ProfileSummary } from './lib/profile-summary.ts';
import { BenchSession, log, type RunningTopology } from './lib/session.ts';
import { readSettings } from './lib/settings.ts';
import { median } from './lib/stats.ts';
import { deviceCapacityBytes, volumeSizeBytes } from './lib/task-load.ts';
import { mediansTable, runsUsage, trialLabel, trialsWanted } from './lib/trials.ts';

/** The endpoint takes at most this many tasks in one request (openapi/server.yaml, TaskBatch). */
const maxBatchSize = 1_000;
const comparisons = ['insert', 'pg-boss'] as const;

const usage = `usage: node --import tsx bench/batch.ts [--smoke] [--duration-s S] [--warmup-s S] [--batch-size B] [--clients N] [--compare insert,pg-boss] [--cpu-prof] [--pg-statements] [--strict] [--results-dir DIR]

  --smoke              a short run that checks the benchmark works (2 clients × 100 tasks, 2 s each after 1 s warm-up)
  --duration-s S       measured seconds of each load: duplex, the floor and the peer (default 10; 2 with --smoke)
  --warmup-s S         unmeasured seconds of the same load first (default 3; 1 with --smoke)
  --batch-size B       tasks per request, at most ${maxBatchSize} (default ${maxBatchSize}; 100 with --smoke)
  --clients N          clients, each with one batch in flight; client c posts to server c mod 2 (default 4; 2 with --smoke)
  --compare LIST       the same-run comparisons, some of: ${comparisons.join(', ')} (default both)
  --drain-timeout-s S  how long the batches in flight at the window's end may take (default 60)
  --cpu-prof           profile the servers (as node --cpu-prof does) and print their top self-time functions in the window
  --pg-statements      load pg_stat_statements into the run's Postgres and print the statements it spent each window on
${runsUsage}
  --strict             exit 1 when the target (${count(targetTasksPerS)} tasks/s) is missed too (by the median with --runs)
  --results-dir DIR    where the JSON (and profiles) go (default: bench/results)`;

const benchDir = fileURLToPath(new URL('.', import.meta.url));
const flags = parseLoadFlags(process.argv.slice(2), usage, join(benchDir, 'results'), {
  'duration-s': { type: 'string' },
  'warmup-s': { type: 'string' },
  'batch-size': { type: 'string' },
  clients: { type: 'string' },
  compare: { type: 'string' },
  'drain-timeout-s': { type: 'string' },
  'cpu-prof': { type: 'boolean', default: false },
  'pg-statements': { type: 'boolean', default: false },
  runs: { type: 'string' },
});
const durationMs = positiveNumber(flags, 'duration-s', flags.smoke ? 2 : 10, usage) * 1_000;
const warmupMs = positiveNumber(flags, 'warmup-s', flags.smoke ? 1 : 3, usage) * 1_000;
const batchSize = positiveNumber(flags, 'batch-size', flags.smoke ? 100 : maxBatchSize, usage, true);
if (batchSize > maxBatchSize) throw new Error(`--batch-size must be at most ${maxBatchSize}, the endpoint's limit\n${usage}`);
const clients = positiveNumber(flags, 'clients', flags.smoke ? 2 : 4, usage, true);
const chosen = listFlag(flags, 'compare', comparisons, comparisons, usage);
const drainTimeoutMs = positiveNumber(flags, 'drain-timeout-s', 60, usage) * 1_000;
const cpuProf = flags.values['cpu-prof'] === true;
const pgStatements = flags.values['pg-statements'] === true;
const trials = trialsWanted(flags, usage);

const settings = readSettings(process.env, { server: ['DATABASE_POOL_MAX', 'DISPATCH_BATCH_SIZE'] });
const session = new BenchSession('batch');
const { runId, stamp } = session;
session.begin(`${trials > 1 ? `${trials} trials of: ` : ''}${clients} clients × ${batchSize} tasks a batch; ${warmupMs / 1_000} s warm-up, ${durationMs / 1_000} s measured; ${[...chosen, 'duplex'].join(', then ')}`, settings);
const profileDir = join(flags.resultsDir, `batch-${stamp}-profiles`);
const profilerPreload = fileURLToPath(new URL('./lib/cpu-profiler.mjs', import.meta.url));

const measurements: Measurement[] = [];
let postgres: PostgresSettings | null = null;
let serverProfile: ProfileSummary | null = null;
let dispatch: { states: Record<string, number>; volumes_in_catalog: number } | null = null;

/** One load of `clients` batch clients, recorded as a measurement whatever happens. */
async function measure(id: MeasurementId, trial: number, topology: RunningTopology, send: SendBatch, countStore: (load: BatchLoadResult) => Promise<StoreCount>): Promise<void> {
  const measurement: Measurement = { id, trial, load: null, store: null, error: null };
  measurements.push(measurement);
  const name = trialLabel(id, trial, trials);
  try {
    log(`${name}: ${measurementTitles[id]}`);
    const load = await runBatchLoad({ clients, warmupMs, durationMs, drainTimeoutMs, send, processNames: await processNames(topology.harness), db: topology.harness.db, statements: pgStatements, log });
    measurement.load = load;
    measurement.store = await countStore(load);
    log(`${name}: ${count(load.tasks_per_s)} tasks/s; batch p50 ${Math.round(load.batch_ms.p50 ?? 0)} ms, p99 ${Math.round(load.batch_ms.p99 ?? 0)} ms; ${load.batch_errors} batch errors`);
  } catch (error) {
    measurement.error = (error as Error).message;
    log(`${name}: the measurement stopped: ${measurement.error}\n${(error as Error).stack ?? ''}`);
  }
}

/** A store that counts rows only: what it holds against what the answers accepted. */
const rowCount = (accepted: number, stored: number): StoreCount => ({ accepted, stored, lost: Math.max(0, accepted - stored), doubled: null, unanswered: Math.max(0, stored - accepted) });

/**
 * One trial on a fresh topology: the floor and the peer first, while it idles, then duplex
 * (whose backlog its dispatcher then works through).
 */
async function runTrial(trial: number): Promise<void> {
  try {
    if (cpuProf) mkdirSync(profileDir, { recursive: true });
    // Node 20 refuses --cpu-prof in NODE_OPTIONS; the preload does the same from inside each process.
    const env: Record<string, string> = cpuProf ? { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import ${profilerPreload}`.trim(), DUPLEX_CPU_PROFILE_DIR: profileDir } : {};
    const topology = await session.startTopology('memory topology', env, { backend: 'memory', capacityBytes: deviceCapacityBytes, postgresFlags: pgStatements ? statementsFlags : [] });
    const { harness } = topology;
    let duplexWindow: BatchLoadResult['monotonic_window'] | null = null;
    let duplexNames = new Map<number, string>();
    try {
      // The cluster-managers build their spare agents just after the boot; let that pass before
      // the first window (the floor's). The smoke only checks that the run works, so it skips this.
      if (!flags.smoke) await sleep(2_000);
      postgres = await postgresSettings(harness.db);
      const system = harness.topology.storage_systems[0]!;
      const shapeOf = (what: string): BatchShape => ({ prefix: `b${runId}-${trial}-${what}`, storageSystemId: system.id, devices: system.devices.map((device) => device.id), size: batchSize });
      // The floor and the peer go first, while the topology idles: once duplex has accepted its
      // batches, its dispatcher works through them for minutes and would load their windows.
      if (chosen.includes('insert')) {
        const floor = await InsertFloor.open(harness.databaseUrl, clients, shapeOf('floor'));
        try {
          await measure('insert', trial, topology, floor.send, async () => rowCount(floor.committed, await floor.rowsInStore()));
        } finally {
          await floor.close();
        }
      }
      if (chosen.includes('pg-boss')) {
        let peer: PgBossPeer | undefined;
        try {
          peer = await PgBossPeer.open(harness.databaseUrl, clients, shapeOf('pgboss'), log);
          const opened = peer;
          await measure('pg-boss', trial, topology, opened.send, async () => rowCount(opened.committed, await opened.jobsInStore()));
        } catch (error) {
          measurements.push({ id: 'pg-boss', trial, load: null, store: null, error: `pg-boss did not start: ${(error as Error).message}` });
        } finally {
          await peer?.close();
        }
      }
      const duplexShape = shapeOf('duplex');
      const submitter = new DuplexBatchSubmitter([harness.serverUrl('A'), harness.serverUrl('B')], clients, duplexShape);
      try {
        duplexNames = await processNames(harness);
        await measure('duplex', trial, topology, submitter.send, async (load) => {
          duplexWindow = load.monotonic_window;
          const check = await checkStore(harness.db, duplexShape.prefix, submitter.acceptedIds);
          dispatch = { states: check.states, volumes_in_catalog: check.volumes_in_catalog };
          // Items answered `replayed` are in the store but not among the accepted ids.
          return { accepted: check.accepted_answered, stored: check.tasks_in_store, lost: check.lost, doubled: check.doubled, unanswered: check.unanswered - submitter.replayed };
        });
      } finally {
        await submitter.close();
      }
    } finally {
      await Promise.all([topology.servers.A.close(), topology.servers.B.close()]);
      await session.stopHarness();
    }
    // The servers write their profiles as they exit.
    if (cpuProf && duplexWindow) {
      const files = profileFiles(profileDir);
      const servers = [...duplexNames].filter(([, name]) => name.startsWith('server-'));
      const paths = servers.flatMap(([pid]) => files.get(pid) ?? []);
      if (paths.length > 0) serverProfile = summarizeProfiles(servers.map(([, name]) => name), paths, duplexWindow);
    }
  } catch (error) {
    log(`${trialLabel('the trial', trial, trials)} stopped: ${(error as Error).message}\n${(error as Error).stack ?? ''}`);
    if (!measurements.some((m) => m.id === 'duplex' && m.trial === trial)) measurements.push({ id: 'duplex', trial, load: null, store: null, error: (error as Error).message });
  }
}

for (let trial = 1; trial <= trials; trial++) await runTrial(trial);

const ordered = [...measurements].sort((a, b) => a.trial - b.trial || measurementIds.indexOf(a.id) - measurementIds.indexOf(b.id));
const problems = ordered.flatMap((m) => {
  const found: string[] = [];
  const what = measurementTitles[m.id];
  if (m.error) found.push(`${what}: ${m.error}`);
  if (m.load?.batch_errors) found.push(`${what}: ${m.load.batch_errors} batch(es) failed: ${JSON.stringify(m.load.error_kinds)}`);
  if (m.load?.refused) found.push(`${what}: ${m.load.refused} task(s) refused: ${JSON.stringify(m.load.error_kinds)}`);
  if (m.load?.abandoned) found.push(`${what}: ${m.load.abandoned} batch(es) still unanswered after the drain`);
  if (m.store && (m.store.lost > 0 || (m.store.doubled ?? 0) > 0 || m.store.unanswered > 0)) {
    found.push(`${what}: the store does not hold exactly the accepted tasks: ${m.store.lost} lost, ${m.store.doubled ?? '?'} made twice, ${m.store.unanswered} without an answer`);
  }
  return found;
});
/** Per measurement, each trial's tasks/s; the target is judged by duplex's median. */
const tasksPerS = (id: MeasurementId): number[] => ordered.flatMap((m) => (m.id === id && m.load ? [m.load.tasks_per_s] : []));
const duplexMedian = median(tasksPerS('duplex'));
const missed = duplexMedian === undefined || duplexMedian < targetTasksPerS;

console.log(`## Batch submission (${clients} clients × ${batchSize} tasks a batch, ${durationMs / 1_000} s measured after ${warmupMs / 1_000} s warm-up, each)\n`);
if (postgres) console.log(`${postgresLine(postgres)}. Tasks are \`volume.create\` of ${volumeSizeBytes} bytes, each batch spread over all 8 devices; client c posts to server c mod 2.\n`);
console.log(resultsTable(ordered));
console.log('');
if (trials > 1) {
  console.log(`Medians of the ${trials} trials (each on a fresh topology, the floor and the peer measured before duplex each time):\n`);
  const perTrial = (id: MeasurementId, trial: number) => ordered.find((m) => m.id === id && m.trial === trial)?.load?.tasks_per_s;
  const ratios = (id: MeasurementId) =>
    Array.from({ length: trials }, (_, index) => [perTrial('duplex', index + 1), perTrial(id, index + 1)]).flatMap(([value, floor]) => (value !== undefined && floor ? [value / floor] : []));
  const times = (value: number) => `${value.toFixed(2)}×`;
  console.log(
    mediansTable('what', [
      {
        name: measurementTitles.duplex,
        figures: [
          { heading: 'tasks/s', values: tasksPerS('duplex'), format: count },
          { heading: 'INSERT floor tasks/s', values: tasksPerS('insert'), format: count },
          { heading: '÷ INSERT floor', values: ratios('insert'), format: times },
          { heading: 'pg-boss tasks/s', values: tasksPerS('pg-boss'), format: count },
          { heading: '÷ pg-boss', values: ratios('pg-boss'), format: times },
        ],
        verdict: `≥ ${count(targetTasksPerS)}/s: ${missed ? '**missed**' : 'met'}`,
      },
    ]),
  );
  console.log('');
}
console.log('What each store holds after the load, against what the answers accepted:\n');
console.log(storeTable(ordered));
console.log('');
console.log(perSecondTable(ordered));
console.log('');
console.log('CPU of the run\'s processes in each window (% of one core; the machine has 2; the whole topology runs in every window):\n');
console.log(cpuTable(ordered));
console.log('');
for (const { id, load } of ordered) {
  if (!load) continue;
  console.log(`Postgres client backends during the ${id} window, on average over ${load.postgres_waits.samples} samples (application: state / what they waited for):\n`);
  console.log(waitsTable(load));
  console.log('');
  const statements = load.postgres_waits.statements;
  if (statements) {
    const tasks = load.tasks_in_window;
    console.log(`Statements Postgres ran in the ${id} window, by execution time (${ms(statements.total_ms)} in all, ${count(statements.total_wal_bytes / Math.max(tasks, 1))} WAL bytes per task accepted):\n`);
    console.log(statementsTable(statements, tasks, 'task'));
    console.log('');
  }
}
if (dispatch !== null) {
  const { states, volumes_in_catalog: volumes } = dispatch as { states: Record<string, number>; volumes_in_catalog: number };
  console.log(`The dispatcher runs the accepted tasks meanwhile. When the store was checked (after the drain${trials > 1 ? ', in the last trial' : ''}): ${Object.entries(states).map(([state, n]) => `${count(n)} ${state}`).join(', ')}; ${count(volumes)} volumes in the catalog.\n`);
}
if (serverProfile) {
  const profile = serverProfile as ProfileSummary;
  console.log(`Top self time in ${profile.processes.join(', ')} during the duplex window (${count(profile.busy_ms)} ms busy, ${count(profile.idle_ms)} ms idle):\n`);
  console.log(profileTables(profile));
  console.log('');
}

const file = session.writeResults(flags.resultsDir, {
  smoke: flags.smoke,
  duration_ms: durationMs,
  warmup_ms: warmupMs,
  batch_size: batchSize,
  clients,
  target_tasks_per_s: targetTasksPerS,
  settings,
  postgres,
  problems,
  measurements: ordered,
  dispatch,
  server_profile: serverProfile,
});
console.log(`JSON: ${file}${cpuProf ? `\nprofiles: ${profileDir}` : ''}`);
for (const problem of problems) console.log(`- ${problem}`);
await session.exit(problems.length > 0 || (flags.strict && missed) ? 1 : 0);
