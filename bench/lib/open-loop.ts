/**
 * An open-loop load generator: request i is due at start + i / rate, whether or not earlier
 * requests have been answered, and its latency is measured from that intended moment. A
 * closed loop (or a late sender) would wait while the system is slow and so leave out the
 * requests a real client population would have sent meanwhile (coordinated omission); here a
 * system that falls behind shows it in every later request's latency.
 */
import { percentile } from './stats.ts';

export interface OpenLoopAnswer {
  ok: boolean;
  /** The HTTP status, when there was an answer. */
  status?: number | null;
  /** The task the request created, when it created one. */
  taskId?: string | null;
  error?: string | null;
}

export interface OpenLoopSample {
  /** The moment the request was due, on the Date.now() scale with sub-ms precision. */
  intended_ms: number;
  /** How late this process sent it (timer slack, a busy event loop): the generator's own lag. */
  send_lag_ms: number;
  /** Intended moment → answer; Infinity when it was abandoned unanswered. */
  latency_ms: number;
  ok: boolean;
  status: number | null;
  task_id: string | null;
  error: string | null;
}

export interface OpenLoopRun {
  rate_per_s: number;
  duration_ms: number;
  samples: OpenLoopSample[];
}

/** Date.now() with performance.now()'s precision. */
const epochMs = (monotonic: number): number => performance.timeOrigin + monotonic;

/**
 * Sends `ratePerS × durationMs` requests on schedule; once the last is due, waits at most
 * `answerTimeoutMs` for the answers, then aborts the rest (they count as unanswered).
 */
export async function runOpenLoop(
  ratePerS: number,
  durationMs: number,
  answerTimeoutMs: number,
  send: (index: number, signal: AbortSignal) => Promise<OpenLoopAnswer>,
): Promise<OpenLoopRun> {
  const total = Math.max(1, Math.round((ratePerS * durationMs) / 1_000));
  const intervalMs = 1_000 / ratePerS;
  const samples: OpenLoopSample[] = new Array(total);
  const pending: Promise<void>[] = [];
  // One controller per request: a signal shared by thousands of requests costs O(n) per listener added.
  const outstanding = new Set<AbortController>();
  const start = performance.now() + 5;
  const fire = (index: number): void => {
    const intended = start + index * intervalMs;
    const sentAt = performance.now();
    const abort = new AbortController();
    outstanding.add(abort);
    pending.push(
      send(index, abort.signal).finally(() => outstanding.delete(abort)).then(
        (answer) => {
          samples[index] = {
            intended_ms: epochMs(intended),
            send_lag_ms: sentAt - intended,
            latency_ms: abort.signal.aborted && !answer.ok ? Infinity : performance.now() - intended,
            ok: answer.ok,
            status: answer.status ?? null,
            task_id: answer.taskId ?? null,
            error: answer.error ?? null,
          };
        },
        (error: unknown) => {
          samples[index] = { intended_ms: epochMs(intended), send_lag_ms: sentAt - intended, latency_ms: abort.signal.aborted ? Infinity : performance.now() - intended, ok: false, status: null, task_id: null, error: (error as Error).message };
        },
      ),
    );
  };
  await new Promise<void>((resolve) => {
    let next = 0;
    const tick = (): void => {
      const now = performance.now();
      // Everything that is due goes now, however late the timer fired.
      while (next < total && start + next * intervalMs <= now) {
        fire(next);
        next += 1;
      }
      if (next >= total) {
        resolve();
        return;
      }
      setTimeout(tick, Math.max(0, start + next * intervalMs - performance.now()));
    };
    tick();
  });
  const timer = setTimeout(() => {
    for (const abort of outstanding) abort.abort();
  }, answerTimeoutMs);
  await Promise.all(pending);
  clearTimeout(timer);
  return { rate_per_s: ratePerS, duration_ms: durationMs, samples };
}

export interface Distribution {
  count: number;
  p50_ms: number | null;
  p99_ms: number | null;
  max_ms: number | null;
}

/** Nearest-rank percentiles; Infinity stands for a request or task that never ended. */
export function distribution(values: readonly number[]): Distribution {
  const max = values.length > 0 ? values.reduce((a, b) => Math.max(a, b), -Infinity) : null;
  return { count: values.length, p50_ms: percentile(values, 50) ?? null, p99_ms: percentile(values, 99) ?? null, max_ms: max };
}
