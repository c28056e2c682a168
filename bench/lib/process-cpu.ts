/**
 * CPU time of the run's processes over a measurement window, from /proc (Linux): which
 * process spends the machine's cores while the load runs. The run's processes are this
 * process's descendants: the harness's services, the agents under their cluster-managers,
 * and Postgres's backends under its postmaster. (Postgres overwrites its environment for its
 * process titles, so the run's TMPDIR marker cannot find it.)
 */
import { readdirSync, readFileSync } from 'node:fs';
import type { TopologyHarness } from '@duplex/harness';
import { ms, table } from './load-options.ts';

/** Linux reports utime and stime in clock ticks of 1/100 s on every architecture Node runs on. */
const ticksPerSecond = 100;

interface ProcStat {
  pid: number;
  ppid: number;
  command: string;
  cpuSeconds: number;
}

function readStat(pid: number): ProcStat | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = stat.lastIndexOf(')');
    const fields = stat.slice(close + 2).split(' ');
    // After the command come state (3), ppid (4), …, utime (14) and stime (15).
    return { pid, ppid: Number(fields[1]), command: stat.slice(stat.indexOf('(') + 1, close), cpuSeconds: (Number(fields[11]) + Number(fields[12])) / ticksPerSecond };
  } catch {
    return undefined;
  }
}

/** Every live descendant of `root`. */
function descendants(root: number): ProcStat[] {
  const all = readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .flatMap((entry) => readStat(Number(entry)) ?? []);
  const children = new Map<number, ProcStat[]>();
  for (const stat of all) children.set(stat.ppid, [...(children.get(stat.ppid) ?? []), stat]);
  const found: ProcStat[] = [];
  const queue = [root];
  while (queue.length > 0) {
    for (const child of children.get(queue.shift()!) ?? []) {
      found.push(child);
      queue.push(child.pid);
    }
  }
  return found;
}

export interface CpuSnapshot {
  /** performance.now() when it was taken. */
  at: number;
  /** CPU seconds by pid, with the name the process goes by. */
  processes: Map<number, { name: string; seconds: number }>;
  /** This process (the load generator). */
  self: number;
}

/** The names of the topology's processes by pid: the harness's own, and the agents by their registration. */
export async function processNames(harness: TopologyHarness): Promise<Map<number, string>> {
  const names = new Map<number, string>();
  for (const [name, { child }] of harness.processes) if (child.pid !== undefined) names.set(child.pid, name);
  for (const [name, pid] of await harness.agentPids()) names.set(pid, `agent-${name}`);
  return names;
}

export function snapshotCpu(names: Map<number, string>): CpuSnapshot {
  const processes = new Map<number, { name: string; seconds: number }>();
  for (const stat of descendants(process.pid)) processes.set(stat.pid, { name: names.get(stat.pid) ?? stat.command, seconds: stat.cpuSeconds });
  const own = process.cpuUsage();
  return { at: performance.now(), processes, self: (own.user + own.system) / 1e6 };
}

export interface CpuShare {
  name: string;
  processes: number;
  /** Percent of one core over the window (the machine has 100 × cores). */
  cpu_percent: number;
}

/** CPU use between two snapshots, by process name (Postgres's backends summed), busiest first. */
export function cpuBetween(before: CpuSnapshot, after: CpuSnapshot, selfName = 'load generator (this process)'): CpuShare[] {
  const seconds = (after.at - before.at) / 1_000;
  const byName = new Map<string, { processes: number; cpu: number }>();
  const add = (name: string, cpu: number) => {
    const entry = byName.get(name) ?? { processes: 0, cpu: 0 };
    entry.processes += 1;
    entry.cpu += cpu;
    byName.set(name, entry);
  };
  for (const [pid, { name, seconds: end }] of after.processes) add(name, end - (before.processes.get(pid)?.seconds ?? 0));
  add(selfName, after.self - before.self);
  return [...byName]
    .map(([name, { processes, cpu }]) => ({ name, processes, cpu_percent: seconds > 0 ? (100 * cpu) / seconds : 0 }))
    .filter((share) => share.cpu_percent >= 0.5)
    .sort((a, b) => b.cpu_percent - a.cpu_percent);
}

/** CPU use of the topology's processes while nothing is asked of them, over `ms`. */
export async function idleCpu(harness: TopologyHarness, ms: number): Promise<CpuShare[]> {
  const names = await processNames(harness);
  const before = snapshotCpu(names);
  await new Promise((resolve) => setTimeout(resolve, ms));
  return cpuBetween(before, snapshotCpu(names));
}

/** One column of a CPU table: a window's shares, and how many units of work (tasks) it did per second. */
export interface CpuColumn {
  label: string;
  cpu: CpuShare[];
  unitsPerS: number;
}

const totalPercent = (shares: readonly CpuShare[]): number => shares.reduce((sum, share) => sum + share.cpu_percent, 0);

/**
 * Percent of one core per process name and window, the total, and the CPU per 1,000 units of
 * work (all processes): where a load's CPU went, side by side.
 */
export function cpuSharesTable(columns: readonly CpuColumn[], unit = 'tasks'): string {
  const names = [...new Set(columns.flatMap((column) => column.cpu.map((share) => share.name)))];
  const cell = (column: CpuColumn, name: string) => {
    const share = column.cpu.find((candidate) => candidate.name === name);
    return share ? `${share.cpu_percent.toFixed(0)} %` : '–';
  };
  return table(
    ['process', ...columns.map((column) => column.label)],
    [
      ...names.map((name) => [name, ...columns.map((column) => cell(column, name))]),
      ['**all**', ...columns.map((column) => `${totalPercent(column.cpu).toFixed(0)} %`)],
      [`CPU per 1,000 ${unit}`, ...columns.map((column) => (column.unitsPerS > 0 ? ms((totalPercent(column.cpu) / 100 / column.unitsPerS) * 1_000_000) : '–'))],
    ],
    [false, ...columns.map(() => true)],
  );
}
