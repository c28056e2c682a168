/** The footprint benchmark's figures, and its tables for stdout. */
import type { ServiceRuntime } from '@duplex/shared';
import type { ServiceProcessInfo, StartTimes } from './local-topology.ts';
import { megabytes, type HeapBreakdown } from './service-memory.ts';
import { median } from './stats.ts';

export const targets = { idle_rss_max_bytes: 120 * 1024 * 1024, warm_ready_max_ms: 5_000 } as const;

export interface ProcessFootprint extends ServiceProcessInfo {
  idle_rss_bytes: number | null;
  idle_heap: HeapBreakdown | null;
  load_rss_max_bytes: number | null;
  load_rss_end_bytes: number | null;
  load_cpu_cores: number | null;
}

export interface StartRecord extends StartTimes {
  start: number;
  stop_ms: number | null;
  leftovers: string[];
}

export interface RuntimeFootprint {
  runtime: ServiceRuntime;
  starts: StartRecord[];
  /** The median ready time of the warm starts (every start but the first), or the only start's. */
  warm_ready_ms: number | null;
  processes: ProcessFootprint[];
  launcher_idle_rss_bytes: number | null;
  postgres_idle_rss_bytes: number | null;
  load: { ms: number; accepted: number; refused: number; first_error: string | null };
  /** The largest idle RSS of any service process. */
  max_idle_rss_bytes: number | null;
}

export function warmReadyMs(starts: readonly StartRecord[]): number | null {
  const warm = starts.length > 1 ? starts.slice(1) : starts;
  return median(warm.map((start) => start.ready_ms)) ?? null;
}

const seconds = (ms: number | null | undefined): string => (ms === null || ms === undefined ? '–' : `${(ms / 1000).toFixed(2)} s`);
const ratio = (value: number | null | undefined, base: number | null | undefined): string =>
  value === null || value === undefined || !base ? '–' : `${(value / base).toFixed(2)}`;

function table(header: string[], rows: string[][]): string {
  return [`| ${header.join(' | ')} |`, `| ${header.map(() => '---').join(' | ')} |`, ...rows.map((row) => `| ${row.join(' | ')} |`)].join('\n');
}

/** Ready times of each runtime, the first one (the bundle) against the second (the sources). */
export function startTable(runs: readonly RuntimeFootprint[]): string {
  const base = runs[1];
  return table(
    ['runtime', 'starts', 'warm: command → 4 agents', ...(base ? [`vs ${base.runtime}`] : []), 'target', 'drivers ready', 'servers ready', 'cluster-managers ready', 'every start'],
    runs.map((run) => {
      const last = run.starts.at(-1);
      const met = run.warm_ready_ms === null ? '–' : run.warm_ready_ms <= targets.warm_ready_max_ms ? 'met' : '**missed**';
      return [
        run.runtime,
        String(run.starts.length),
        seconds(run.warm_ready_ms),
        ...(base ? [ratio(run.warm_ready_ms, base.warm_ready_ms)] : []),
        run.runtime === 'bundle' ? `≤ ${seconds(targets.warm_ready_max_ms)}: ${met}` : '–',
        seconds(last?.drivers_ready_ms),
        seconds(last?.servers_ready_ms),
        seconds(last?.cluster_managers_ready_ms),
        run.starts.map((start) => `${seconds(start.ready_ms)}${start.built ? ' (built)' : ''}`).join(', '),
      ];
    }),
  );
}

/** Where the CPU time until ready went, in the last start of each runtime. */
export function cpuTable(runs: readonly RuntimeFootprint[]): string {
  const kinds = ['launcher', 'postgres', 'driver', 'server', 'cluster-manager', 'agent', 'spare agent', 'other'];
  return table(
    ['runtime', 'CPU until ready', ...kinds.map((kind) => (kind === 'other' ? 'other (npm, build, tsx helpers)' : kind))],
    runs.map((run) => {
      const cpu = run.starts.at(-1)?.cpu_ms ?? {};
      return [run.runtime, seconds(cpu.total), ...kinds.map((kind) => seconds(cpu[kind] ?? 0))];
    }),
  );
}

/** Every service process, its RSS idle and under load in each runtime. */
export function memoryTable(runs: readonly RuntimeFootprint[]): string {
  const names = [...new Set(runs.flatMap((run) => run.processes.map((process) => process.name)))].sort();
  const find = (run: RuntimeFootprint | undefined, name: string) => run?.processes.find((process) => process.name === name);
  const [first, second] = runs;
  const header = ['process', ...runs.map((run) => `${run.runtime} idle`), ...(second ? [`${first?.runtime}/${second.runtime}`] : []), 'target ≤ 120 MB idle', ...runs.map((run) => `${run.runtime} load max`)];
  const rows = names.map((name) => {
    const idle = runs.map((run) => find(run, name)?.idle_rss_bytes ?? null);
    const bundleIdle = find(runs.find((run) => run.runtime === 'bundle'), name)?.idle_rss_bytes;
    const met = bundleIdle === null || bundleIdle === undefined ? '–' : bundleIdle <= targets.idle_rss_max_bytes ? 'met' : '**missed**';
    return [
      name,
      ...idle.map((bytes) => megabytes(bytes)),
      ...(second ? [ratio(idle[0], idle[1])] : []),
      met,
      ...runs.map((run) => megabytes(find(run, name)?.load_rss_max_bytes)),
    ];
  });
  const extra = (label: string, pick: (run: RuntimeFootprint) => number | null) => [label, ...runs.map((run) => megabytes(pick(run))), ...(second ? ['–'] : []), '–', ...runs.map(() => '–')];
  rows.push(extra('(launcher)', (run) => run.launcher_idle_rss_bytes), extra('(postgres, all processes)', (run) => run.postgres_idle_rss_bytes));
  return table(header, rows);
}

/** Where each idle service process's memory is, in one runtime. */
export function heapTable(run: RuntimeFootprint): string {
  const space = (heap: HeapBreakdown | null, name: string) => megabytes(heap?.spaces_total_bytes[name]);
  return table(
    ['process', 'RSS', 'heap committed', 'heap used', 'new space', 'old space', 'large objects', 'code', 'external'],
    run.processes.map((process) => [
      process.name,
      megabytes(process.idle_rss_bytes),
      megabytes(process.idle_heap?.heap_total_bytes),
      megabytes(process.idle_heap?.heap_used_bytes),
      space(process.idle_heap, 'new'),
      space(process.idle_heap, 'old'),
      space(process.idle_heap, 'large_object'),
      space(process.idle_heap, 'code'),
      megabytes(process.idle_heap?.external_bytes),
    ]),
  );
}
