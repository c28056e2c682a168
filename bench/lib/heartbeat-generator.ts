/**
 * A load generator of simulated agents' heartbeats: each agent POSTs its heartbeat once per
 * period at its own phase, so the requests are spread evenly over the period instead of
 * coming in bursts. The schedule is fixed (open loop) as long as the server keeps up. Like a
 * real agent, a simulated one has at most one heartbeat in flight: one that comes due while
 * the previous is unanswered is sent when that answer arrives, and counted as deferred. So a
 * server that cannot keep up sees the load level off at what it answers (fewer answers a
 * second than offered), instead of an unbounded queue in the generator that would carry over
 * into the next measurement. All agents share one undici Pool with a bounded number of connections:
 * a heartbeat sent while every connection is busy waits in the generator, not in the server, so
 * the figures count, second by second, how many waited so, and how late the generator's own
 * event loop ran (its timer's lateness): latency is measured in this process and includes both.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Pool } from 'undici';
import { percentile } from './stats.ts';

export interface SimulatedAgent {
  id: string;
  incarnation: number;
  /** The credential its registration answered with (none for the floor, which checks none). */
  credential?: string;
}

/**
 * The phase of the i-th agent, as a fraction of the period: the golden-ratio sequence spreads
 * the first n agents evenly for every n, so agents added for a larger level need no new phases.
 */
export const phaseOf = (index: number): number => (index * 0.6180339887498949) % 1;

interface Scheduled {
  id: string;
  phaseMs: number;
  path: string;
  body: string;
  headers: Record<string, string>;
  stopped: boolean;
  /** When (epoch ms) the first heartbeat after the stop was due and not sent. */
  firstMissedAt: number | undefined;
  inFlight: boolean;
  /** A heartbeat came due while the previous one was in flight: send it when that one is answered. */
  deferred: boolean;
}

export interface WindowFigures {
  wall_ms: number;
  sent: number;
  /** Heartbeats that came due while the agent's previous one was unanswered (sent once it was). */
  deferred: number;
  ok: number;
  /** Answers other than 200 by status, and failures by error code. */
  errors: Record<string, number>;
  error_count: number;
  latency_ms: { p50: number | null; p90: number | null; p99: number | null; max: number | null };
  /** p99 latency of the heartbeats sent in each second of the window, ms: shows whether a bad p99 is a steady queue or a stall. */
  p99_by_second_ms: (number | null)[];
  /** How late the generator sent heartbeats after they were due: its own lag, not the server's. */
  send_lag_ms: { p50: number | null; p99: number | null; max: number | null };
  /** The generator's own CPU (this process) over the window, as a fraction of one core. */
  generator_cpu_cores: number;
  /** The generator's event-loop delay, ms (perf_hooks histogram). */
  generator_loop_delay_ms: { p99: number; max: number };
  /** The generator's longest event-loop delay in each second of the window, ms (its 1 ms timer's lateness), beside p99_by_second_ms. */
  loop_delay_max_by_second_ms: number[];
  /** The most heartbeats waiting in the generator for a free connection in each second (none while the pool has one for each in flight). */
  waiting_for_connection_max_by_second: number[];
  max_in_flight: number;
}

class Window {
  readonly startedAt = performance.now();
  readonly cpuAtStart = process.cpuUsage();
  endedAt: number | undefined;
  readonly latencies: number[] = [];
  readonly latenciesBySecond: number[][] = [];
  readonly loopDelayMaxBySecond: number[] = [];
  readonly waitingMaxBySecond: number[] = [];
  readonly lags: number[] = [];
  readonly errors = new Map<string, number>();
  sent = 0;
  deferred = 0;
  ok = 0;
  pending = 0;
  maxInFlight = 0;
  private settle: (() => void) | undefined;

  error(key: string): void {
    this.errors.set(key, (this.errors.get(key) ?? 0) + 1);
  }

  done(): void {
    this.pending -= 1;
    if (this.pending === 0 && this.endedAt !== undefined) this.settle?.();
  }

  /** Resolves once every request sent in the window has been answered or has failed. */
  settled(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.settle = resolve;
    });
  }
}

const summary = (values: number[], p: number): number | null => {
  const value = percentile(values, p);
  return value === undefined ? null : Math.round(value * 1000) / 1000;
};

const maxOf = (values: number[]): number | null => (values.length === 0 ? null : Math.round(values.reduce((a, b) => (b > a ? b : a), -Infinity) * 1000) / 1000);

export class HeartbeatGenerator {
  private readonly pool: Pool;
  private schedule: Scheduled[] = [];
  private readonly byId = new Map<string, Scheduled>();
  private cursor = 0;
  private cycleStart = performance.now();
  private timer: NodeJS.Timeout | undefined;
  private lastTick = 0;
  private inFlight = 0;
  private window: Window | undefined;
  private readonly loopDelay = monitorEventLoopDelay({ resolution: 10 });
  private readonly headers = { 'content-type': 'application/json' };

  constructor(
    origin: string,
    private readonly options: { connections: number; periodMs: number; timeoutMs: number },
  ) {
    this.pool = new Pool(origin, { connections: options.connections, pipelining: 1, keepAliveTimeout: 60_000 });
  }

  /** The agents that heartbeat from now on: existing ones keep their phase, new ones start at theirs. */
  setAgents(agents: readonly SimulatedAgent[]): void {
    const next: Scheduled[] = agents.map((agent, index) => {
      const known = this.byId.get(agent.id);
      if (known) return known;
      return {
        id: agent.id,
        phaseMs: phaseOf(index) * this.options.periodMs,
        path: `/v1/agents/${encodeURIComponent(agent.id)}/heartbeats`,
        body: JSON.stringify({ incarnation: agent.incarnation }),
        headers: { ...this.headers, ...(agent.credential ? { authorization: `Bearer ${agent.credential}` } : {}) },
        stopped: false,
        firstMissedAt: undefined,
        inFlight: false,
        deferred: false,
      };
    });
    next.sort((a, b) => a.phaseMs - b.phaseMs);
    this.byId.clear();
    for (const scheduled of next) this.byId.set(scheduled.id, scheduled);
    this.schedule = next;
    // Whoever is due later in this period goes next; the others were sent (or are new and wait a period).
    const offset = performance.now() - this.cycleStart;
    this.cursor = next.findIndex((scheduled) => scheduled.phaseMs > offset);
    if (this.cursor < 0) this.cursor = next.length;
  }

  start(): void {
    this.cycleStart = performance.now();
    this.cursor = 0;
    this.loopDelay.enable();
    // 1 ms is the finest timer; each tick sends whatever came due since the last one.
    this.lastTick = performance.now();
    this.timer = setInterval(() => this.tick(), 1);
  }

  private tick(): void {
    const now = performance.now();
    const window = this.openWindow;
    if (window) {
      const second = Math.floor((now - window.startedAt) / 1000);
      const late = Math.max(0, now - this.lastTick - 1);
      if (late > (window.loopDelayMaxBySecond[second] ?? 0)) window.loopDelayMaxBySecond[second] = late;
    }
    this.lastTick = now;
    while (now - this.cycleStart >= this.options.periodMs) {
      // The period ended: send the rest of it (late, and measured as late), then start the next.
      while (this.cursor < this.schedule.length) this.due(this.schedule[this.cursor++]!);
      this.cycleStart += this.options.periodMs;
      this.cursor = 0;
    }
    const offset = now - this.cycleStart;
    while (this.cursor < this.schedule.length && this.schedule[this.cursor]!.phaseMs <= offset) this.due(this.schedule[this.cursor++]!);
  }

  /** The open window, if any (requests are counted in the window they were sent in). */
  private get openWindow(): Window | undefined {
    return this.window?.endedAt === undefined ? this.window : undefined;
  }

  private due(agent: Scheduled): void {
    const dueAt = this.cycleStart + agent.phaseMs;
    if (agent.stopped) {
      agent.firstMissedAt ??= performance.timeOrigin + dueAt;
      return;
    }
    if (agent.inFlight) {
      agent.deferred = true;
      if (this.openWindow) this.openWindow.deferred += 1;
      return;
    }
    this.send(agent, dueAt);
  }

  /** Sends the agent's heartbeat; `dueAt` (performance.now() time) measures the generator's lag, undefined for a deferred one. */
  private send(agent: Scheduled, dueAt: number | undefined): void {
    const window = this.openWindow;
    const sentAt = performance.now();
    this.inFlight += 1;
    agent.inFlight = true;
    if (window) {
      window.sent += 1;
      window.pending += 1;
      if (dueAt !== undefined) window.lags.push(sentAt - dueAt);
      if (this.inFlight > window.maxInFlight) window.maxInFlight = this.inFlight;
      // With one request per connection at a time, whatever is in flight beyond the connections waits here.
      const waiting = this.inFlight - this.options.connections;
      const second = Math.floor((sentAt - window.startedAt) / 1000);
      if (waiting > (window.waitingMaxBySecond[second] ?? 0)) window.waitingMaxBySecond[second] = waiting;
    }
    this.pool
      .request({
        method: 'POST',
        path: agent.path,
        headers: agent.headers,
        body: agent.body,
        headersTimeout: this.options.timeoutMs,
        bodyTimeout: this.options.timeoutMs,
      })
      .then(async (response) => {
        await response.body.dump();
        if (!window) return;
        if (response.statusCode === 200) {
          window.ok += 1;
          const latency = performance.now() - sentAt;
          window.latencies.push(latency);
          const second = Math.floor((sentAt - window.startedAt) / 1000);
          (window.latenciesBySecond[second] ??= []).push(latency);
        } else {
          window.error(String(response.statusCode));
        }
      })
      .catch((error: unknown) => {
        window?.error((error as { code?: string }).code ?? (error as Error).name);
      })
      .finally(() => {
        this.inFlight -= 1;
        agent.inFlight = false;
        window?.done();
        if (agent.deferred && !agent.stopped && this.timer !== undefined) {
          agent.deferred = false;
          this.send(agent, undefined);
        }
      });
  }

  /** Starts counting: every heartbeat sent from now until endWindow() is measured. */
  beginWindow(): void {
    this.loopDelay.reset();
    this.window = new Window();
  }

  /** Stops counting, waits for the window's heartbeats to be answered, and returns its figures. */
  async endWindow(): Promise<WindowFigures> {
    const window = this.window;
    if (!window) throw new Error('no window is open');
    window.endedAt = performance.now();
    const cpu = process.cpuUsage(window.cpuAtStart);
    const loopDelay = { p99: this.loopDelay.percentile(99) / 1e6, max: this.loopDelay.max / 1e6 };
    await window.settled();
    this.window = undefined;
    const wallMs = window.endedAt - window.startedAt;
    const errorCount = [...window.errors.values()].reduce((sum, count) => sum + count, 0);
    return {
      wall_ms: Math.round(wallMs),
      sent: window.sent,
      deferred: window.deferred,
      ok: window.ok,
      errors: Object.fromEntries(window.errors),
      error_count: errorCount,
      latency_ms: { p50: summary(window.latencies, 50), p90: summary(window.latencies, 90), p99: summary(window.latencies, 99), max: maxOf(window.latencies) },
      p99_by_second_ms: Array.from(window.latenciesBySecond, (latencies) => summary(latencies ?? [], 99)),
      send_lag_ms: { p50: summary(window.lags, 50), p99: summary(window.lags, 99), max: maxOf(window.lags) },
      generator_cpu_cores: (cpu.user + cpu.system) / 1000 / wallMs,
      generator_loop_delay_ms: { p99: Math.round(loopDelay.p99 * 100) / 100, max: Math.round(loopDelay.max * 100) / 100 },
      loop_delay_max_by_second_ms: Array.from(window.loopDelayMaxBySecond, (late) => Math.round((late ?? 0) * 10) / 10),
      waiting_for_connection_max_by_second: Array.from(window.waitingMaxBySecond, (waiting) => waiting ?? 0),
      max_in_flight: window.maxInFlight,
    };
  }

  /** Stops the heartbeats of these agents; each remembers when its first one was due and not sent. */
  stop(ids: readonly string[]): void {
    for (const id of ids) {
      const agent = this.byId.get(id);
      if (!agent) throw new Error(`no simulated agent ${id}`);
      agent.stopped = true;
      agent.deferred = false;
      agent.firstMissedAt = undefined;
    }
  }

  /** When each stopped agent's first heartbeat was due and not sent (epoch ms); undefined while it has not come due yet. */
  firstMissedAt(id: string): number | undefined {
    return this.byId.get(id)?.firstMissedAt;
  }

  resume(ids: readonly string[]): void {
    for (const id of ids) {
      const agent = this.byId.get(id);
      if (agent) agent.stopped = false;
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    this.loopDelay.disable();
    await this.pool.close();
  }
}
