/**
 * A closed loop of batch clients, the same for duplex's bulk endpoint and for the floor and peer
 * it is divided by: `clients` clients each send one batch, wait for its answer, and send the
 * next, for a warm-up and then a measured window. A batch counts in the window when its answer
 * arrives in it; the figure is the tasks those answers accepted, per second of the window.
 */
import { loadavg } from 'node:os';
import type { Database } from '@duplex/shared';
import { sleep } from './api.ts';
import { WaitSampler, type PostgresActivity } from './pg-waits.ts';
import { cpuBetween, snapshotCpu, type CpuShare } from './process-cpu.ts';
import { monotonicMicros, type ProfileWindow } from './profile-summary.ts';
import { percentile } from './stats.ts';

/** What one batch came to. */
export interface BatchAnswer {
  /** Tasks the batch made (committed). */
  accepted: number;
  /** Tasks of the batch refused one by one (the batch itself was answered). */
  refused: number;
  /** Why the batch as a whole failed (a status, a transport error), or null. */
  error: string | null;
  /** The reasons of the refusals, if any. */
  refusals?: string[];
}

/** Sends batch number `sequence` (from 0, per client) of client `client`; `signal` abandons it. */
export type SendBatch = (client: number, sequence: number, signal: AbortSignal) => Promise<BatchAnswer>;

export interface BatchLoadOptions {
  clients: number;
  warmupMs: number;
  durationMs: number;
  /** How long the batches in flight when the window ends may take before they are abandoned. */
  drainTimeoutMs: number;
  send: SendBatch;
  /** The processes to measure the CPU of during the window (this process's descendants), by pid. */
  processNames: Map<number, string>;
  /** A connection to the Postgres under load, to sample what its backends do during the window. */
  db: Database;
  /** Profile Postgres's statements in the window (needs pg_stat_statements loaded). */
  statements?: boolean;
  log: (line: string) => void;
}

export interface BatchLoadResult {
  window: { from: string; to: string; seconds: number };
  monotonic_window: ProfileWindow;
  /** Tasks accepted by the batches answered in the window, per second: the figure. */
  tasks_per_s: number;
  batches_in_window: number;
  tasks_in_window: number;
  /** Each second of the window: tasks accepted by the batches answered in it. */
  per_second: number[];
  /** Send to answer of each batch answered in the window (failed ones included). */
  batch_ms: { p50: number | null; p99: number | null; max: number | null };
  /** Over the whole run (warm-up and drain included), to check against what the store holds. */
  batches: number;
  accepted: number;
  refused: number;
  batch_errors: number;
  /** The first few distinct batch errors and refusals, with how often each happened. */
  error_kinds: Record<string, number>;
  /** Batches still unanswered when the drain timed out (abandoned: their tasks may or may not exist). */
  abandoned: number;
  load_avg_1m: { start: number; end: number };
  cpu: CpuShare[];
  postgres_waits: PostgresActivity;
}

interface Answered {
  endedAt: number;
  ms: number;
  accepted: number;
}

export async function runBatchLoad(options: BatchLoadOptions): Promise<BatchLoadResult> {
  const answered: Answered[] = [];
  const errorKinds: Record<string, number> = {};
  const note = (kind: string) => {
    const key = kind.slice(0, 160);
    if (errorKinds[key] !== undefined || Object.keys(errorKinds).length < 10) errorKinds[key] = (errorKinds[key] ?? 0) + 1;
  };
  const totals = { batches: 0, accepted: 0, refused: 0, errors: 0, abandoned: 0 };
  const abort = new AbortController();
  let stopping = false;

  const client = async (index: number): Promise<void> => {
    for (let sequence = 0; !stopping; sequence += 1) {
      const start = performance.now();
      let answer: BatchAnswer;
      try {
        answer = await options.send(index, sequence, abort.signal);
      } catch (error) {
        answer = { accepted: 0, refused: 0, error: (error as Error).message };
      }
      const end = performance.now();
      if (abort.signal.aborted && answer.error) {
        totals.abandoned += 1;
        return;
      }
      totals.batches += 1;
      totals.accepted += answer.accepted;
      totals.refused += answer.refused;
      answered.push({ endedAt: end, ms: end - start, accepted: answer.accepted });
      for (const refusal of answer.refusals ?? []) note(`refused: ${refusal}`);
      if (answer.error) {
        totals.errors += 1;
        note(answer.error);
        // A refusing or dead service must not turn the loop into a busy spin.
        await sleep(50);
      }
    }
  };

  const clients = Array.from({ length: options.clients }, (_, index) => client(index));
  try {
    options.log(`warm-up: ${options.clients} clients for ${options.warmupMs} ms`);
    await sleep(options.warmupMs);
    const cpuBefore = snapshotCpu(options.processNames);
    const loadStart = loadavg()[0] ?? 0;
    const from = performance.now();
    const fromWall = Date.now();
    const fromUs = monotonicMicros();
    const waitSampler = new WaitSampler(options.db);
    await waitSampler.start({ statements: options.statements });
    options.log(`measuring for ${options.durationMs} ms`);
    await sleep(options.durationMs);
    const to = performance.now();
    const toWall = Date.now();
    const toUs = monotonicMicros();
    const cpuAfter = snapshotCpu(options.processNames);
    const postgresWaits = await waitSampler.stop();
    const loadEnd = loadavg()[0] ?? 0;
    stopping = true;

    const drained = await Promise.race([Promise.all(clients).then(() => true), sleep(options.drainTimeoutMs).then(() => false)]);
    if (!drained) {
      options.log(`batches still unanswered ${options.drainTimeoutMs} ms after the window; abandoning them`);
      abort.abort();
    }
    await Promise.all(clients);

    const inWindow = answered.filter((batch) => batch.endedAt >= from && batch.endedAt < to);
    const seconds = (to - from) / 1_000;
    const perSecond = Array.from({ length: Math.max(1, Math.round(seconds)) }, () => 0);
    for (const batch of inWindow) {
      const second = Math.min(perSecond.length - 1, Math.floor((batch.endedAt - from) / 1_000));
      perSecond[second]! += batch.accepted;
    }
    const tasksInWindow = inWindow.reduce((sum, batch) => sum + batch.accepted, 0);
    const latencies = inWindow.map((batch) => batch.ms);
    return {
      window: { from: new Date(fromWall).toISOString(), to: new Date(toWall).toISOString(), seconds },
      monotonic_window: { fromUs, toUs },
      tasks_per_s: tasksInWindow / seconds,
      batches_in_window: inWindow.length,
      tasks_in_window: tasksInWindow,
      per_second: perSecond,
      batch_ms: { p50: percentile(latencies, 50) ?? null, p99: percentile(latencies, 99) ?? null, max: latencies.length > 0 ? Math.max(...latencies) : null },
      batches: totals.batches,
      accepted: totals.accepted,
      refused: totals.refused,
      batch_errors: totals.errors,
      error_kinds: errorKinds,
      abandoned: totals.abandoned,
      load_avg_1m: { start: loadStart, end: loadEnd },
      cpu: cpuBetween(cpuBefore, cpuAfter),
      postgres_waits: postgresWaits,
    };
  } finally {
    stopping = true;
    abort.abort();
    await Promise.all(clients);
  }
}
