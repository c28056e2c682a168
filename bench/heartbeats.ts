/**
 * Heartbeat-scale benchmark: simulated agents (1,000, 5,000 and 10,000 by default), each
 * heartbeating once a second over the real protocol, against ONE real server process on a
 * fresh database. Per level it measures the server's CPU and RSS, the heartbeats' latency
 * and errors, and how long the server takes to count a sample of stopped agents lost. The
 * same heartbeat rate against a bare Fastify route, in the same run, is the floor.
 *
 *   node --import tsx bench/heartbeats.ts                       # 1,000 / 5,000 / 10,000 agents, 20 s each
 *   node --import tsx bench/heartbeats.ts --smoke               # CI smoke: 200 agents for 5 s
 *   node --import tsx bench/heartbeats.ts --levels 5000 --cpu-prof   # where the server's time goes
 *
 * Uses the Postgres at DATABASE_URL when set (a fresh database on it), else an embedded one.
 * Timing settings are the server's defaults unless set in this process's environment, e.g.
 * AGENT_LEASE_TTL_MS=2000; LOG_LEVEL (default info) too. See bench/README.md.
 */
import { mkdirSync, statSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { JsonClient } from '@duplex/shared';
import { bearer, freePort, testAdminToken, testJoinToken, testServiceToken } from '@duplex/testkit';
import { countLostWithinMs, evenSample, falseLosses, resumeAgents, timeAgentLoss } from './lib/agent-loss.ts';
import { sleep } from './lib/api.ts';
import { openBenchDatabase, type BenchDatabase } from './lib/bench-database.ts';
import { HeartbeatGenerator, type SimulatedAgent } from './lib/heartbeat-generator.ts';
import { parseHeartbeatOptions } from './lib/heartbeat-options.ts';
import { checkTargets, keptUp, lossTable, profileTable, ratioTable, targetTable, windowTable, type LevelResult, type TargetWindow } from './lib/heartbeat-report.ts';
import { MachineMeter, ProcessGroupMeter, ProcessMeter, rssBytes } from './lib/process-usage.ts';
import { monotonicMicros, profileFiles, summarizeProfiles } from './lib/profile-summary.ts';
import { seconds } from './lib/report.ts';
import { startServiceProcess, type ServiceProcess } from './lib/service-process.ts';
import { BenchSession, log } from './lib/session.ts';
import { readSettings, settingValue } from './lib/settings.ts';
import { registerAgents, simulatedAgentId } from './lib/simulated-agents.ts';

const benchDir = fileURLToPath(new URL('.', import.meta.url));
const options = parseHeartbeatOptions(process.argv.slice(2), join(benchDir, 'results'));
const serverId = 'A';
const periodMs = 1_000;
/** A heartbeat not answered within this long counts as an error (its agent would have lost its lease long before). */
const requestTimeoutMs = 10_000;
const registrationConcurrency = 16;
/** Agents registered before they start heartbeating: well under a lease's worth at the slowest registration seen (72/s). */
const registrationChunk = 64;

const settings = readSettings(process.env, { server: ['AGENT_LEASE_TTL_MS', 'AGENT_HEARTBEAT_INTERVAL_MS', 'FAILOVER_CHECK_INTERVAL_MS', 'DATABASE_POOL_MAX'] });
const leaseTtlMs = settingValue(settings, 'AGENT_LEASE_TTL_MS');
const logLevel = process.env.LOG_LEVEL ?? 'info';
const session = new BenchSession('heartbeats');
const { startedAt, stamp } = session;
session.begin(
  `levels ${options.levels.join(', ')} agents at 1 Hz; ${options.warmUpSeconds} s warm-up + ${options.seconds} s measured per level; ${options.sample} stopped per level; ${options.connections} connections; server LOG_LEVEL ${logLevel}${options.cpuProf ? '; server under --cpu-prof' : ''}`,
  settings,
);

const levels: LevelResult[] = [];
const startedProcesses: ServiceProcess[] = [];
let database: BenchDatabase | undefined;
let aborted: string | null = null;
const failures: string[] = [];
let serverIdleRss: number | null = null;
let profileFile: string | null = null;
const profileDir = join(options.resultsDir, `heartbeats-${stamp}-profile`);

/**
 * Runs the generator for the warm-up, then measures one window of `options.seconds`: the
 * target, and the idle duplex server beside the floor (`idleServer`).
 */
async function measureWindow(
  generator: HeartbeatGenerator,
  target: ServiceProcess,
  agents: number,
  watch: { postgresPids?: () => Promise<number[]>; idleServer?: ServiceProcess } = {},
): Promise<TargetWindow> {
  const { postgresPids, idleServer } = watch;
  await sleep(options.warmUpSeconds * 1000);
  const loadStart = loadavg()[0] ?? 0;
  const postgres = postgresPids ? new ProcessGroupMeter(postgresPids) : undefined;
  await postgres?.start();
  const machine = new MachineMeter(cpus().length);
  const meter = new ProcessMeter(target.pid);
  const idleMeter = idleServer && new ProcessMeter(idleServer.pid);
  const logBytesAtStart = target.logBytes();
  const windowStart = Date.now();
  const fromUs = monotonicMicros();
  generator.beginWindow();
  await sleep(options.seconds * 1000);
  const windowEnd = Date.now();
  const toUs = monotonicMicros();
  const usage = meter.stop();
  const idleUsage = idleMeter?.stop() ?? null;
  const machineBusy = machine.stop();
  const postgresUsage = await postgres?.stop();
  const logBytes = target.logBytes() - logBytesAtStart;
  const figures = await generator.endWindow();
  return {
    agents,
    offered_per_s: (agents * 1000) / periodMs,
    answered_per_s: figures.ok / (figures.wall_ms / 1000),
    generator: figures,
    process: usage,
    idle_server: idleUsage,
    postgres_cpu_cores: postgresUsage?.cpu_cores ?? null,
    postgres_backends: postgresUsage?.processes ?? null,
    machine_busy_cores: machineBusy,
    log_bytes_per_s: logBytes / ((windowEnd - windowStart) / 1000),
    load_avg_1m: { start: loadStart, end: loadavg()[0] ?? 0 },
    started_at: windowStart,
    ended_at: windowEnd,
    monotonic_window: { fromUs, toUs },
  };
}

/** `min–max` of a per-second series. */
const range = (values: readonly (number | null)[]): string => {
  const known = values.filter((value): value is number => value !== null);
  return known.length === 0 ? '–' : `${Math.min(...known)}–${Math.max(...known)}`;
};

function describe(name: string, window: TargetWindow): string {
  const g = window.generator;
  return (
    `${name} ${window.agents} agents: ${window.answered_per_s.toFixed(0)}/s answered, ${g.error_count} errors, p50 ${g.latency_ms.p50} ms, p99 ${g.latency_ms.p99} ms, CPU ${window.process.cpu_cores?.toFixed(2)} cores, generator ${g.generator_cpu_cores.toFixed(2)} cores (lag p99 ${g.send_lag_ms.p99} ms${keptUp(g) ? '' : ', BEHIND'}), load ${window.load_avg_1m.end.toFixed(1)}\n` +
    // A second's p99 beside the generator's own stall in it: a stall of the generator is measured as latency too.
    `  per second: p99 ${g.p99_by_second_ms.map((p99) => (p99 === null ? '–' : Math.round(p99))).join(' ')} ms\n` +
    `  generator loop delay max ${g.loop_delay_max_by_second_ms.map(Math.round).join(' ')} ms; waiting for a connection, max ${range(g.waiting_for_connection_max_by_second)}`
  );
}

try {
  const logsDir = join(session.marker, 'logs');
  mkdirSync(logsDir, { recursive: true });
  const floorPort = await freePort();
  const floorStart = startServiceProcess({
    name: 'floor',
    entry: new URL('./lib/heartbeat-floor-server.ts', import.meta.url),
    url: `http://127.0.0.1:${floorPort}`,
    readyPath: '/healthz',
    env: { ...process.env, HEARTBEAT_FLOOR_PORT: String(floorPort) },
    logFile: join(logsDir, 'floor.log'),
  }).then((started) => (startedProcesses.push(started), started));
  database = await openBenchDatabase(session.marker, 'duplex_bench_heartbeats');
  log(`database: ${database.source}; ${Object.entries(database.settings).map(([name, value]) => `${name}=${value}`).join(', ')}`);
  const serverPort = await freePort();
  const serverUrl = `http://127.0.0.1:${serverPort}`;
  if (options.cpuProf) mkdirSync(profileDir, { recursive: true });
  const server = await startServiceProcess({
    name: `server-${serverId}`,
    entry: new URL('../packages/server/src/server.ts', import.meta.url),
    url: serverUrl,
    readyPath: '/readyz',
    env: {
      ...process.env,
      SERVER_ID: serverId,
      SERVER_HOST: '127.0.0.1',
      SERVER_PORT: String(serverPort),
      SERVER_PUBLIC_URL: serverUrl,
      DATABASE_URL: database.url,
      ADMIN_TOKEN: testAdminToken,
      // Thousands of simulated storage systems: one join token serves them all.
      JOIN_TOKENS: `*=${testJoinToken}`,
      SERVICE_TOKEN: testServiceToken,
      LOG_LEVEL: logLevel,
    },
    logFile: join(logsDir, 'server.log'),
    nodeArgs: options.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [],
  });
  startedProcesses.push(server);
  const floor = await floorStart;
  log(`server and floor ready ${Date.now() - startedAt.getTime()} ms after the start (database included); server log: ${server.logFile}`);
  serverIdleRss = rssBytes(server.pid) ?? null;
  const db = database.db;
  const serverPids = async () => {
    const rows: { pid: number }[] = (
      await db.raw(`select pid from pg_stat_activity where application_name like ? and datname = current_database()`, [`duplex-server-${serverId}%`])
    ).rows;
    return rows.map((row) => row.pid);
  };
  const maxLevel = options.levels.at(-1)!;
  const generatorOptions = { connections: options.connections, periodMs, timeoutMs: requestTimeoutMs };

  // The floor first, every level, while the server has no agents yet: the two never share the machine.
  const floorGenerator = new HeartbeatGenerator(floor.url, generatorOptions);
  const floorAgents: SimulatedAgent[] = Array.from({ length: maxLevel }, (_, index) => ({ id: simulatedAgentId(index, serverId), incarnation: 1 }));
  const floorWindows = new Map<number, TargetWindow>();
  try {
    floorGenerator.start();
    for (const agents of options.levels) {
      floorGenerator.setAgents(floorAgents.slice(0, agents));
      const window = await measureWindow(floorGenerator, floor, agents, { idleServer: server });
      floorWindows.set(agents, window);
      log(describe('floor', window));
    }
  } finally {
    await floorGenerator.close();
    await floor.stop();
  }

  const client = new JsonClient(serverUrl, { name: `server ${serverId}`, timeoutMs: 10_000, connections: registrationConcurrency, headers: bearer(testAdminToken) });
  const generator = new HeartbeatGenerator(serverUrl, generatorOptions);
  const agentsStartedAt = new Date();
  const registered: SimulatedAgent[] = [];
  let generatorStarted = false;
  try {
    for (const [index, agents] of options.levels.entries()) {
      if (server.ended() !== null) throw new Error(`the server ended during the run (${server.ended()}):\n${server.logTail()}`);
      const registrationStart = Date.now();
      const added: SimulatedAgent[] = [];
      // Agents heartbeat from their registration on, a chunk at a time, as real ones do. (Waiting
      // for the whole level, seconds, let the lease of the first ones run out.)
      while (registered.length < agents) {
        const range = { from: registered.length, to: Math.min(agents, registered.length + registrationChunk) };
        const chunk = await registerAgents(client, serverId, testJoinToken, agentsStartedAt, range, registrationConcurrency);
        added.push(...chunk);
        registered.push(...chunk);
        generator.setAgents(registered);
        if (!generatorStarted) generator.start();
        generatorStarted = true;
      }
      const registrationMs = Date.now() - registrationStart;
      log(`registered ${added.length} agents in ${registrationMs} ms (${agents} in all)`);
      const levelStart = new Date();
      const window = await measureWindow(generator, server, agents, { postgresPids: serverPids });
      log(describe('server', window));
      // Detection, under the load of the other agents: stop a sample spread over the phases.
      const stopped = evenSample(registered, options.sample).map((agent) => agent.id);
      const loss = await timeAgentLoss({ db, generator, server: client, ids: stopped, minWaitMs: leaseTtlMs + periodMs + countLostWithinMs });
      const lossEnd = new Date();
      const falseLost = await falseLosses(db, levelStart, lossEnd, stopped);
      log(
        `detection at ${agents} agents: ${loss.counted_lost}/${loss.stopped} counted lost; since the first missed heartbeat p50 ${loss.since_first_missed_ms.p50} ms, max ${loss.since_first_missed_ms.max} ms; past the lease end max ${loss.past_lease_end_ms.max} ms; ${falseLost} live agents counted lost`,
      );
      if (loss.counted_lost < loss.stopped) {
        failures.push(`${loss.stopped - loss.counted_lost} of ${loss.stopped} stopped agents at ${agents} agents were not counted lost within ${countLostWithinMs} ms of their lease's end (or 60 s of the stop)`);
      }
      levels.push({
        agents,
        floor: floorWindows.get(agents) ?? null,
        server: window,
        registration: { added: added.length, ms: registrationMs, per_s: added.length / Math.max(registrationMs / 1000, 0.001) },
        loss,
        false_losses: falseLost,
        profile: null,
      });
      // The next level starts with every agent live; after the last there is nothing to wait for.
      if (index < options.levels.length - 1 && !(await resumeAgents(db, generator, stopped, 10_000))) {
        failures.push(`the stopped agents did not all come back within 10 s of resuming their heartbeats at ${agents} agents`);
      }
    }
  } finally {
    await generator.close();
    await client.close();
  }
} catch (error) {
  aborted = (error as Error).message;
  log(`the benchmark stopped: ${aborted}\n${(error as Error).stack ?? ''}`);
} finally {
  for (const started of startedProcesses) await started.stop();
  await database?.close();
}

// The server writes its profile when it exits. A profile's clock is the monotonic clock this
// process reads too, so each window is cut out of it by the same instants.
if (options.cpuProf) {
  const server = startedProcesses.find((started) => started.name.startsWith('server'));
  // The main thread's profile is the largest (the tsx loader's thread writes a small one too).
  const largest = (server ? (profileFiles(profileDir).get(server.pid) ?? []) : []).sort((a, b) => statSync(b).size - statSync(a).size)[0];
  if (server && largest) {
    profileFile = largest;
    for (const level of levels) {
      if (level.server) level.profile = summarizeProfiles([server.name], [largest], level.server.monotonic_window, 15);
    }
  } else {
    failures.push(`--cpu-prof: no profile was written to ${profileDir}`);
  }
}

const finishedAt = new Date();
const checks = checkTargets(levels, leaseTtlMs);
const missed = checks.filter((check) => check.met === false);
const windows = levels.flatMap((level) => [
  ...(level.floor ? [[`floor (bare Fastify)`, level.floor] as const] : []),
  ...(level.server ? [[`duplex server`, level.server] as const] : []),
]);

const idleCpu = levels.flatMap((level) => (level.floor?.idle_server?.cpu_cores == null ? [] : [level.floor.idle_server.cpu_cores]));
const idleServerCpu = idleCpu.length === 0 ? null : idleCpu.reduce((sum, value) => sum + value, 0) / idleCpu.length;

console.log(`## Results (${seconds(finishedAt.getTime() - startedAt.getTime())} in all)\n`);
if (aborted) console.log(`**The run was cut short: ${aborted}**\n`);
console.log(
  `One window of ${options.seconds} s per target and level, after ${options.warmUpSeconds} s of unmeasured load; heartbeats spread evenly over each second, at most one in flight per agent (a heartbeat due while the previous is unanswered is deferred), ${options.connections} connections. Latency: send to answer, nearest-rank percentiles. CPU and RSS: the answering process, from /proc (1.00 = one core). Postgres CPU: the backends of the server's connections. The server with no agents (during the floor's windows): CPU ${idleServerCpu === null ? '–' : idleServerCpu.toFixed(3)} cores, RSS ${serverIdleRss === null ? '–' : `${(serverIdleRss / 1024 / 1024).toFixed(0)} MB`}. Database: ${database?.source ?? '–'} (${Object.entries(database?.settings ?? {}).map(([name, value]) => `${name}=${value}`).join(', ')}).\n`,
);
console.log(windowTable(windows));
console.log('');
console.log(ratioTable(levels));
console.log('');
console.log(`Detection: ${options.sample} agents stopped at each level, spread over the heartbeat phases; the others kept heartbeating. Times are p50 / p99 / max.\n`);
console.log(lossTable(levels, leaseTtlMs));
console.log('');
console.log(targetTable(checks));
console.log('');
for (const level of levels) {
  if (level.profile) {
    console.log(profileTable(level));
    console.log('');
  }
}

const file = session.writeResults(options.resultsDir, {
  options,
  aborted,
  failures,
  settings,
  server_log_level: logLevel,
  database: database ? { source: database.source, settings: database.settings } : null,
  server_idle_rss_bytes: serverIdleRss,
  server_idle_cpu_cores: idleServerCpu,
  levels,
  targets: checks,
  profile: profileFile,
});
console.log(`JSON: ${file}${profileFile ? `\nprofile: ${profileFile}` : ''}`);
for (const failure of failures) console.log(`- ${failure}`);
await session.exit(aborted || failures.length > 0 || (options.strict && missed.length > 0) ? 1 : 0);
