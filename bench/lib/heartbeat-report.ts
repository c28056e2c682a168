/**
 * The heartbeat benchmark's figures and how they are printed: one measured window per target
 * (the duplex server, the bare Fastify floor) and level, the detection of stopped agents, and
 * the issue's targets.
 */
import type { LossFigures } from './agent-loss.ts';
import type { ProfileSummary, ProfileWindow } from './profile-summary.ts';
import type { WindowFigures } from './heartbeat-generator.ts';
import type { ProcessUsage } from './process-usage.ts';

export interface TargetWindow {
  agents: number;
  offered_per_s: number;
  answered_per_s: number;
  generator: WindowFigures;
  /** The process answering the heartbeats. */
  process: ProcessUsage;
  /**
   * In the floor's windows: the duplex server meanwhile, up but with no agents yet. Its fixed
   * cost (lease renewals, failover checks, dispatch sweeps), which the server's windows include.
   */
  idle_server: ProcessUsage | null;
  /** CPU of the Postgres backends serving the duplex server's connections (null for the floor, or when /proc does not show them). */
  postgres_cpu_cores: number | null;
  postgres_backends: number | null;
  /** The whole machine's busy time over the window, in cores. */
  machine_busy_cores: number | null;
  /** Bytes the process wrote to its log per second (request logging, at the LOG_LEVEL in force). */
  log_bytes_per_s: number | null;
  load_avg_1m: { start: number; end: number };
  /** Epoch ms. */
  started_at: number;
  ended_at: number;
  /** The window on the monotonic clock, which CPU profiles use too. */
  monotonic_window: ProfileWindow;
}

export interface LevelResult {
  agents: number;
  floor: TargetWindow | null;
  server: TargetWindow | null;
  registration: { added: number; ms: number; per_s: number } | null;
  loss: LossFigures | null;
  /** Agents counted lost during the level that the benchmark did not stop. */
  false_losses: number | null;
  profile: ProfileSummary | null;
}

export interface TargetCheck {
  target: string;
  measured: string;
  met: boolean | null;
}

/**
 * A generator whose sends (or event loop) ran later than this at the p99 did not keep its
 * schedule: in that window it, or the machine, was a bottleneck, not only the target.
 */
export const generatorLagLimitMs = 10;

const ms = (value: number | null | undefined, digits = 1): string => (value === null || value === undefined ? '–' : `${value.toFixed(digits)} ms`);
const cores = (value: number | null | undefined): string => (value === null || value === undefined ? '–' : value.toFixed(2));
const mb = (bytes: number | null | undefined): string => (bytes === null || bytes === undefined ? '–' : `${(bytes / 1024 / 1024).toFixed(0)} MB`);
const ratio = (value: number | null | undefined, base: number | null | undefined): string =>
  value === null || value === undefined || base === null || base === undefined || base <= 0 ? '–' : `${(value / base).toFixed(1)}×`;
const errors = (window: WindowFigures): string =>
  window.error_count === 0
    ? '0'
    : `${window.error_count} (${Object.entries(window.errors)
        .map(([kind, count]) => `${kind}: ${count}`)
        .join(', ')})`;

/** CPU in cores, with the kernel's share: `0.78 (34 % sys)`. */
const processCpu = (usage: ProcessUsage): string =>
  usage.cpu_cores === null ? '–' : `${cores(usage.cpu_cores)}${usage.cpu_ms && usage.system_cpu_ms !== null ? ` (${Math.round((100 * usage.system_cpu_ms) / usage.cpu_ms)} % sys)` : ''}`;

export const keptUp = (window: WindowFigures): boolean =>
  (window.send_lag_ms.p99 ?? 0) <= generatorLagLimitMs && window.generator_loop_delay_ms.p99 <= generatorLagLimitMs;

/** The target answered the whole offered load, on time: no heartbeat waited for the one before it. */
export const carried = (window: TargetWindow): boolean => window.generator.deferred === 0 && window.generator.error_count === 0 && window.answered_per_s >= 0.99 * window.offered_per_s;

export function windowTable(rows: readonly (readonly [string, TargetWindow])[]): string {
  const lines = rows.map(([name, w]) => {
    const g = w.generator;
    return `| ${name} | ${w.agents} | ${w.answered_per_s.toFixed(0)} | ${g.deferred} | ${errors(g)} | ${ms(g.latency_ms.p50)} | ${ms(g.latency_ms.p99)} | ${ms(g.latency_ms.max)} | ${processCpu(w.process)} | ${mb(w.process.rss_max_bytes)} | ${cores(w.postgres_cpu_cores)} | ${cores(g.generator_cpu_cores)} | ${ms(g.send_lag_ms.p99)} / ${ms(g.generator_loop_delay_ms.p99)}${keptUp(g) ? '' : ' **(behind)**'} | ${cores(w.machine_busy_cores)} | ${w.load_avg_1m.start.toFixed(1)}→${w.load_avg_1m.end.toFixed(1)} |`;
  });
  return [
    '| target | agents | answered/s | deferred | errors | p50 | p99 | max | CPU (cores) | RSS max | Postgres CPU | generator CPU | generator send lag / loop delay p99 | machine busy (cores) | load 1m |',
    '| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    ...lines,
  ].join('\n');
}

export function ratioTable(levels: readonly LevelResult[]): string {
  const lines = levels.flatMap((level) => {
    const { server, floor } = level;
    if (!server) return [];
    const perThousand = (w: TargetWindow | null) => (w && w.process.cpu_cores !== null && w.answered_per_s > 0 ? (w.process.cpu_cores / w.answered_per_s) * 1000 : null);
    const yesNo = (w: TargetWindow | null) => (w === null ? '–' : carried(w) ? 'yes' : '**no**');
    return [
      `| ${level.agents} | ${yesNo(server)} | ${yesNo(floor)} | ${cores(perThousand(server))} | ${cores(perThousand(floor))} | ${ratio(perThousand(server), perThousand(floor))} | ${ratio(server.generator.latency_ms.p50, floor?.generator.latency_ms.p50)} | ${ratio(server.generator.latency_ms.p99, floor?.generator.latency_ms.p99)} |`,
    ];
  });
  return [
    '| agents | server carried the load | floor carried the load | server CPU per 1,000 heartbeats/s | floor CPU per 1,000 heartbeats/s | CPU per heartbeat ÷ floor | p50 ÷ floor | p99 ÷ floor |',
    '| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |',
    ...lines,
  ].join('\n');
}

export function lossTable(levels: readonly LevelResult[], leaseTtlMs: number): string {
  const lines = levels.flatMap((level) => {
    const loss = level.loss;
    if (!loss) return [];
    const s = (spread: LossFigures['since_first_missed_ms']) => `${ms(spread.p50, 0)} / ${ms(spread.p99, 0)} / ${ms(spread.max, 0)}`;
    const within = loss.counted_lost === loss.stopped && loss.since_first_missed_ms.max !== null && loss.since_first_missed_ms.max <= leaseTtlMs;
    return [
      `| ${level.agents} | ${loss.stopped} | ${loss.counted_lost} | ${loss.renewed_after_stop} | ${loss.lost_events} | ${loss.api_expired} | ${s(loss.since_first_missed_ms)} | ${s(loss.since_last_renewal_ms)} | ${s(loss.past_lease_end_ms)} | ${level.false_losses ?? '–'} | ${within ? 'yes' : '**no**'} |`,
    ];
  });
  return [
    `| agents | stopped | counted lost | renewed after the stop | agent.lost events | API shows expired | since first missed heartbeat p50 / p99 / max | since last renewal | past lease end | live agents counted lost | all within the lease (${leaseTtlMs} ms) |`,
    '| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | ---: | --- |',
    ...lines,
  ].join('\n');
}

/** The issue's targets, at the 5,000-agent level when the run had it. */
export function checkTargets(levels: readonly LevelResult[], leaseTtlMs: number): TargetCheck[] {
  const level = levels.find((candidate) => candidate.agents === 5_000);
  if (!level?.server) {
    return [{ target: '5,000 agents at 1 Hz on one server', measured: 'the run had no 5,000 level', met: null }];
  }
  const { server, loss } = level;
  const cpu = server.process.cpu_cores;
  const { p99 } = server.generator.latency_ms;
  const carriedNote = carried(server) ? '' : ` while answering ${server.answered_per_s.toFixed(0)}/s of ${server.offered_per_s}/s offered (${server.generator.deferred} deferred)`;
  const detectedWithin = loss !== null && loss.counted_lost === loss.stopped && loss.since_first_missed_ms.max !== null && loss.since_first_missed_ms.max <= leaseTtlMs;
  return [
    // A server that did not answer the whole load may have used less CPU only because it did less.
    { target: 'server CPU ≤ 1 core answering 5,000 heartbeats/s', measured: `${cores(cpu)} cores${carriedNote}`, met: cpu === null ? null : cpu <= 1 && carried(server) },
    {
      target: 'heartbeat p99 ≤ 20 ms at 5,000 agents, no errors',
      measured: `${ms(p99)}, ${errors(server.generator)} errors${carriedNote}`,
      met: p99 === null ? null : p99 <= 20 && carried(server),
    },
    {
      target: `stopped agents counted lost within their lease (${leaseTtlMs} ms after the first missed heartbeat)`,
      measured: loss ? `${loss.counted_lost}/${loss.stopped} counted, slowest ${ms(loss.since_first_missed_ms.max, 0)}` : 'not measured',
      met: loss ? detectedWithin : null,
    },
  ];
}

export function targetTable(checks: readonly TargetCheck[]): string {
  return [
    '| target | measured | met |',
    '| --- | --- | --- |',
    ...checks.map((check) => `| ${check.target} | ${check.measured} | ${check.met === null ? '–' : check.met ? 'yes' : '**no**'} |`),
  ].join('\n');
}

export function profileTable(level: LevelResult): string {
  const profile = level.profile;
  if (!profile) return '';
  const functions = profile.top.map((entry) => `| ${entry.percent.toFixed(1)} % | ${entry.self_ms.toFixed(0)} ms | \`${entry.function}\`${entry.location ? ` ${entry.location}` : ''} |`);
  const packages = profile.packages.map((entry) => `| ${entry.percent.toFixed(1)} % | ${entry.self_ms.toFixed(0)} ms | ${entry.package} |`);
  return [
    `Server CPU profile at ${level.agents} agents: ${profile.busy_ms.toFixed(0)} ms busy, ${profile.idle_ms.toFixed(0)} ms idle in the window.\n`,
    '| self | ms | function |',
    '| ---: | ---: | --- |',
    ...functions,
    '',
    '| self | ms | package |',
    '| ---: | ---: | --- |',
    ...packages,
  ].join('\n');
}
