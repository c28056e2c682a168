/**
 * CPU and memory of processes on this machine, from /proc (Linux only): what a process used
 * over a window, as a fraction of one core, and how large it grew.
 */
import { readFileSync } from 'node:fs';

/** Linux reports CPU times in clock ticks; USER_HZ is 100 on every mainstream build. */
const ticksPerSecond = 100;

/** CPU time of a process (all its threads) in user and kernel mode, in ms; undefined once it is gone. */
function cpuTimes(pid: number): { user: number; system: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may contain spaces; the fields after it (utime is the 14th of stat) are fixed.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const user = (Number(fields[11]) * 1000) / ticksPerSecond;
    const system = (Number(fields[12]) * 1000) / ticksPerSecond;
    return Number.isFinite(user) && Number.isFinite(system) ? { user, system } : undefined;
  } catch {
    return undefined;
  }
}

/** utime + stime of a process (all its threads), in ms; undefined once it is gone. */
export function cpuTimeMs(pid: number): number | undefined {
  const times = cpuTimes(pid);
  return times && times.user + times.system;
}

/** Resident set size in bytes (VmRSS); undefined once the process is gone. */
export function rssBytes(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Busy and total jiffies of the whole machine (all cores), from the first line of /proc/stat. */
function machineTicks(): { busy: number; total: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
    const values = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = values;
    const busy = user + nice + system + irq + softirq + steal;
    return { busy, total: busy + idle + iowait };
  } catch {
    return undefined;
  }
}

export interface ProcessUsage {
  /** CPU time over the window divided by its wall time: 1.0 is one core busy all along. */
  cpu_cores: number | null;
  cpu_ms: number | null;
  /** The part of cpu_ms spent in the kernel (system calls: sockets, log writes). */
  system_cpu_ms: number | null;
  rss_max_bytes: number | null;
  rss_end_bytes: number | null;
}

/**
 * Watches one process over a window: CPU from its counters at both ends, RSS sampled every
 * `rssIntervalMs` (the largest is kept).
 */
export class ProcessMeter {
  private readonly startedAt = performance.now();
  private readonly cpuAtStart: { user: number; system: number } | undefined;
  private rssMax: number | undefined;
  private readonly timer: NodeJS.Timeout;

  constructor(
    readonly pid: number,
    rssIntervalMs = 500,
  ) {
    this.cpuAtStart = cpuTimes(pid);
    this.sampleRss();
    this.timer = setInterval(() => this.sampleRss(), rssIntervalMs);
  }

  private sampleRss(): number | undefined {
    const rss = rssBytes(this.pid);
    if (rss !== undefined) this.rssMax = Math.max(this.rssMax ?? 0, rss);
    return rss;
  }

  stop(): ProcessUsage {
    clearInterval(this.timer);
    const rssEnd = this.sampleRss();
    const cpuAtEnd = cpuTimes(this.pid);
    const wallMs = performance.now() - this.startedAt;
    const start = this.cpuAtStart;
    const cpuMs = start === undefined || cpuAtEnd === undefined ? null : cpuAtEnd.user + cpuAtEnd.system - start.user - start.system;
    return {
      cpu_cores: cpuMs === null || wallMs <= 0 ? null : cpuMs / wallMs,
      cpu_ms: cpuMs,
      system_cpu_ms: start === undefined || cpuAtEnd === undefined ? null : cpuAtEnd.system - start.system,
      rss_max_bytes: this.rssMax ?? null,
      rss_end_bytes: rssEnd ?? null,
    };
  }
}

/**
 * CPU of a set of processes that may change during the window (Postgres backends come and
 * go with a connection pool): the sum over the pids seen at the end, each from its value at
 * the start, or from 0 when it started during the window. Time of a pid that ended during the
 * window is lost, so this is a lower bound.
 */
export class ProcessGroupMeter {
  private readonly startedAt = performance.now();
  private readonly atStart = new Map<number, number>();

  constructor(private readonly pids: () => Promise<number[]>) {}

  async start(): Promise<void> {
    for (const pid of await this.pids()) {
      const cpu = cpuTimeMs(pid);
      if (cpu !== undefined) this.atStart.set(pid, cpu);
    }
  }

  async stop(): Promise<{ cpu_cores: number | null; processes: number }> {
    const wallMs = performance.now() - this.startedAt;
    const pids = await this.pids();
    let cpuMs = 0;
    let seen = 0;
    for (const pid of pids) {
      const cpu = cpuTimeMs(pid);
      if (cpu === undefined) continue;
      seen += 1;
      cpuMs += cpu - (this.atStart.get(pid) ?? 0);
    }
    return { cpu_cores: seen === 0 || wallMs <= 0 ? null : cpuMs / wallMs, processes: seen };
  }
}

/** How busy the whole machine was over a window, in cores (2.0 = both cores of a 2-core machine). */
export class MachineMeter {
  private readonly atStart = machineTicks();

  constructor(private readonly cores: number) {}

  stop(): number | null {
    const atEnd = machineTicks();
    if (!this.atStart || !atEnd || atEnd.total <= this.atStart.total) return null;
    return ((atEnd.busy - this.atStart.busy) / (atEnd.total - this.atStart.total)) * this.cores;
  }
}
