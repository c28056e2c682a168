/**
 * Footprint: how long the run command takes until every agent is registered, and how much
 * memory each service process holds, idle and under a short load: `npm start` (the build step,
 * then the bundled launcher and services), against the same-run baseline of the command as it
 * was before the bundles (`node --import tsx packages/cli/src/main.ts up`, everything from the
 * TypeScript sources through tsx).
 *
 *   node --import tsx bench/footprint.ts            # 2 starts per runtime, 10 s idle, 2 s load; about 1½ minutes
 *   node --import tsx bench/footprint.ts --smoke    # CI: one start of the bundles, 2 s idle, 1 s load
 *
 * Each start runs in the repository with `--topology FILE` (the shape of topology.yaml, on free
 * ports, in a private folder, with an embedded Postgres as a user gets without DATABASE_URL),
 * and ends with Ctrl-C's SIGINT to its process group; a process left running fails the run.
 */
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { ServiceRuntime } from '@duplex/shared';
import { sleep } from './lib/api.ts';
import { cpuTable, heapTable, memoryTable, startTable, targets, warmReadyMs, type ProcessFootprint, type RuntimeFootprint, type StartRecord } from './lib/footprint-report.ts';
import { LocalTopologyRun, runCommand, writeLocalTopology, type LocalTopology } from './lib/local-topology.ts';
import { ProcessMeter } from './lib/process-usage.ts';
import { heapOf, residentBytes } from './lib/service-memory.ts';
import { log, BenchSession } from './lib/session.ts';
import { TaskFeed, TaskSubmitter } from './lib/task-load.ts';

const usage = `usage: node --import tsx bench/footprint.ts [--smoke] [--starts N] [--idle-ms MS] [--load-ms MS] [--runtimes bundle,source] [--strict] [--results-dir DIR]

  --smoke              one start of the bundles only, 2 s idle, 1 s of load (CI: checks that it runs)
  --starts N           starts per runtime; the first is cold, the median of the others is the warm figure (default 2)
  --idle-ms MS         how long after the last agent registered the idle RSS is read (default 10000)
  --load-ms MS         how long tasks are submitted for the RSS under load (default 2000)
  --runtimes LIST      the runtimes to measure, in order (default bundle,source; with --smoke, bundle)
  --strict             exit 1 when a target is missed (by default only a run that fails does)
  --results-dir DIR    where the JSON goes (default: bench/results)`;

const { values } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    starts: { type: 'string' },
    'idle-ms': { type: 'string' },
    'load-ms': { type: 'string' },
    runtimes: { type: 'string' },
    strict: { type: 'boolean', default: false },
    'results-dir': { type: 'string', default: join(import.meta.dirname, 'results') },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  console.log(usage);
  process.exit(0);
}
const count = (name: string, raw: string | undefined, fallback: number): number => {
  const value = Number(raw ?? fallback);
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`--${name} must be a whole number, not '${raw}'\n${usage}`);
  return value;
};
const options = {
  starts: Math.max(1, count('starts', values.starts, values.smoke ? 1 : 2)),
  idleMs: count('idle-ms', values['idle-ms'], values.smoke ? 2_000 : 10_000),
  loadMs: count('load-ms', values['load-ms'], values.smoke ? 1_000 : 2_000),
  // The smoke runs what `npm start` runs; the baseline from the sources takes about as long again.
  runtimes: (values.runtimes ?? (values.smoke ? 'bundle' : 'bundle,source')).split(',').map((name) => name.trim()) as ServiceRuntime[],
};
for (const runtime of options.runtimes) if (runtime !== 'bundle' && runtime !== 'source') throw new Error(`unknown runtime '${runtime}'\n${usage}`);

/** A cold start initialises Postgres (and may build); on a machine busy with other work that has taken over a minute. */
const readyTimeoutMs = 180_000;
/** Requests in flight during the load, over both servers. */
const loadConcurrency = 16;

const session = new BenchSession('footprint');
const failures: string[] = [];

async function idleFigures(run: LocalTopologyRun, topology: LocalTopology): Promise<Pick<RuntimeFootprint, 'processes' | 'launcher_idle_rss_bytes' | 'postgres_idle_rss_bytes'>> {
  const { services, launcher, postgres } = run.processes();
  // Every RSS first, then the scrapes of /metrics, which allocate in the process they ask.
  const processes: ProcessFootprint[] = services.map((service) => ({
    ...service,
    idle_rss_bytes: residentBytes(service.pid),
    idle_heap: null,
    load_rss_max_bytes: null,
    load_rss_end_bytes: null,
    load_cpu_cores: null,
  }));
  const launcherRss = launcher.length > 0 ? residentBytes(launcher[0]!) : null;
  const postgresRss = postgres.reduce((sum, pid) => sum + (residentBytes(pid) ?? 0), 0);
  const agentUrls = await run.agentUrls();
  for (const process of processes) {
    const url = process.role === 'agent' ? agentUrls.get(process.pid) : topology.started.find((started) => started.name === process.name)?.url;
    if (url) process.idle_heap = await heapOf(url);
  }
  return { processes, launcher_idle_rss_bytes: launcherRss, postgres_idle_rss_bytes: postgres.length > 0 ? postgresRss : null };
}

/** Submits volume.create tasks to both servers for `loadMs`, reading every service's RSS every 100 ms meanwhile and for a second after. */
async function loadFigures(runtime: ServiceRuntime, topology: LocalTopology, processes: ProcessFootprint[]): Promise<RuntimeFootprint['load']> {
  const meters = processes.map((process) => new ProcessMeter(process.pid, 100));
  const feed = new TaskFeed(`footprint-${session.runId}-${runtime}`, topology.devices, topology.servers.length);
  const submitter = new TaskSubmitter(
    topology.servers.map((server) => server.url),
    loadConcurrency / topology.servers.length,
  );
  let accepted = 0;
  let refused = 0;
  let firstError: string | null = null;
  const endAt = performance.now() + options.loadMs;
  await Promise.all(
    Array.from({ length: loadConcurrency }, async () => {
      while (performance.now() < endAt) {
        const answer = await submitter.submit(feed.next());
        if (answer.ok) accepted += 1;
        else {
          refused += 1;
          firstError ??= answer.error;
        }
      }
    }),
  );
  await submitter.close();
  await sleep(1_000);
  meters.forEach((meter, index) => {
    const usage = meter.stop();
    const process = processes[index]!;
    process.load_rss_max_bytes = usage.rss_max_bytes;
    process.load_rss_end_bytes = usage.rss_end_bytes;
    process.load_cpu_cores = usage.cpu_cores;
  });
  return { ms: options.loadMs, accepted, refused, first_error: firstError };
}

async function measure(runtime: ServiceRuntime, topology: LocalTopology): Promise<RuntimeFootprint> {
  const result: RuntimeFootprint = {
    runtime,
    starts: [],
    warm_ready_ms: null,
    processes: [],
    launcher_idle_rss_bytes: null,
    postgres_idle_rss_bytes: null,
    load: { ms: options.loadMs, accepted: 0, refused: 0, first_error: null },
    max_idle_rss_bytes: null,
  };
  for (let start = 1; start <= options.starts; start += 1) {
    const run = new LocalTopologyRun(topology, runtime, join(topology.directory, `npm-start-${runtime}-${start}.log`));
    let record: StartRecord | undefined;
    try {
      const times = await run.waitUntilReady(readyTimeoutMs);
      record = { start, ...times, stop_ms: null, leftovers: [] };
      log(`${runtime} start ${start}: 4 agents registered ${(times.ready_ms / 1000).toFixed(2)} s after the command${times.built ? ' (it built the bundles)' : ''}`);
      if (start === options.starts) {
        await sleep(options.idleMs);
        Object.assign(result, await idleFigures(run, topology));
        result.load = await loadFigures(runtime, topology, result.processes);
        if (result.load.accepted === 0) failures.push(`${runtime}: no task was accepted under load (${result.load.first_error})`);
      }
    } catch (error) {
      failures.push(`${runtime} start ${start}: ${(error as Error).message}`);
    } finally {
      const stopped = await run.stop(session.marker);
      if (record) Object.assign(record, stopped);
      for (const leftover of stopped.leftovers) failures.push(`${runtime} start ${start}: left running after Ctrl-C: ${leftover}`);
      if (record) result.starts.push(record);
    }
    if (!record) break;
  }
  result.warm_ready_ms = warmReadyMs(result.starts);
  const idle = result.processes.flatMap((process) => (process.idle_rss_bytes === null ? [] : [process.idle_rss_bytes]));
  result.max_idle_rss_bytes = idle.length > 0 ? Math.max(...idle) : null;
  return result;
}

log(
  `footprint benchmark ${session.runId}: ${options.runtimes.join(' vs ')}, ${options.starts} start(s) each, idle ${options.idleMs} ms, load ${options.loadMs} ms`,
);
const topology = await writeLocalTopology(join(session.marker, 'topology'));
const loadAtStart = loadavg()[0] ?? null;
const runs: RuntimeFootprint[] = [];
for (const runtime of options.runtimes) runs.push(await measure(runtime, topology));
const loadAtEnd = loadavg()[0] ?? null;

const bundle = runs.find((run) => run.runtime === 'bundle');
const missed: string[] = [];
if (bundle) {
  for (const process of bundle.processes) {
    if (process.idle_rss_bytes !== null && process.idle_rss_bytes > targets.idle_rss_max_bytes) missed.push(`${process.name} idle RSS ${(process.idle_rss_bytes / 1024 / 1024).toFixed(1)} MB > 120 MB`);
  }
  if (bundle.warm_ready_ms !== null && bundle.warm_ready_ms > targets.warm_ready_max_ms) missed.push(`warm start ${(bundle.warm_ready_ms / 1000).toFixed(2)} s > 5 s`);
}

console.log(`## Footprint (${options.starts} start(s) per runtime; 1-minute load average ${loadAtStart?.toFixed(2)} → ${loadAtEnd?.toFixed(2)})\n`);
for (const runtime of options.runtimes) console.log(`- ${runtime}: \`${runCommand(runtime, 'FILE').join(' ').replace(process.execPath, 'node')}\``);
console.log('');
console.log(startTable(runs));
console.log(`\nCPU time the run used until the last agent registered (on ${cpus().length} cores a start takes at least total / ${cpus().length}, whatever else runs):\n`);
console.log(cpuTable(runs));
console.log(`\nRSS of each service process ${options.idleMs / 1000} s after the last agent registered (idle), and the most it reached under ${options.loadMs / 1000} s of task submissions:\n`);
console.log(memoryTable(runs));
for (const run of runs) {
  console.log(`\nWhere the idle memory is (${run.runtime}; from each service's /metrics):\n`);
  console.log(heapTable(run));
}
for (const run of runs) console.log(`\n${run.runtime} load: ${run.load.accepted} tasks accepted in ${run.load.ms} ms, ${run.load.refused} refused${run.load.first_error ? ` (first: ${run.load.first_error})` : ''}`);
if (missed.length > 0) console.log(`\nTargets missed: ${missed.join('; ')}`);
if (failures.length > 0) console.log(`\nFailures:\n${failures.map((failure) => `- ${failure}`).join('\n')}`);

const file = session.writeResults(values['results-dir'], {
  options: { ...options, smoke: values.smoke },
  commands: Object.fromEntries(options.runtimes.map((runtime) => [runtime, runCommand(runtime, 'FILE').join(' ').replace(process.execPath, 'node')])),
  load_avg_1m: { start: loadAtStart, end: loadAtEnd },
  targets,
  runs,
  targets_missed: missed,
  failures,
});
log(`results in ${file}`);
await session.exit(failures.length > 0 || (values.strict && missed.length > 0) ? 1 : 0);
