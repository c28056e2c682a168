/**
 * Sustained task throughput on a running topology: `concurrency` workers, each submitting a
 * task and waiting until it has ended before submitting the next, so that at most that many
 * tasks are in flight (submitted, not yet finished) at any moment. After a warm-up, the
 * figure is the number of tasks whose `succeeded` was committed (finished_at, set by Postgres)
 * within the measured window, per second.
 */
import { loadavg } from 'node:os';
import type { TopologyHarness } from '@duplex/harness';
import { sleep } from './api.ts';
import { WaitSampler, type PostgresActivity } from './pg-waits.ts';
import { cpuBetween, processNames, snapshotCpu, type CpuShare } from './process-cpu.ts';
import { monotonicMicros, type ProfileWindow } from './profile-summary.ts';
import { CompletionWatcher, TaskFeed, TaskSubmitter } from './task-load.ts';

export interface ClosedLoopOptions {
  harness: TopologyHarness;
  /** Names the run's volumes and keys, so that runs never collide. */
  prefix: string;
  concurrency: number;
  warmupMs: number;
  durationMs: number;
  /** How long the workers may take to see their last tasks end after the window. */
  drainTimeoutMs: number;
  /** Profile Postgres's statements in the window (needs pg_stat_statements loaded). */
  statements?: boolean;
  log: (line: string) => void;
}

export interface ClosedLoopResult {
  window: { from: string; to: string; seconds: number };
  /** process.hrtime in µs at the window's ends, to cut CPU profiles. */
  monotonic_window: ProfileWindow;
  /** Tasks that committed `succeeded` within the window, per second: the figure. */
  tasks_per_s: number;
  succeeded_in_window: number;
  /** Each second of the window: tasks that committed `succeeded` in it. */
  per_second: number[];
  /** Submit (commit of `queued`) to commit of `succeeded`, for the tasks that succeeded in the window. */
  end_to_end_ms: { p50: number | null; p99: number | null; max: number | null };
  /** For the same tasks: when each state of their history was (last) entered, ms after the task's creation. */
  phases_ms: Record<string, { p50: number; p99: number }>;
  /** Every task of the run (warm-up and drain included), by final or current state. */
  states: Record<string, number>;
  /** Tasks dispatched more than once (a refused or lost attempt). */
  redispatched: number;
  failed: number;
  /** Tasks that had not ended when the workers stopped waiting. */
  unfinished: number;
  submitted: number;
  submit_errors: number;
  /** The first few distinct submit errors, with how often each happened. */
  submit_error_kinds: Record<string, number>;
  watcher_errors: number;
  load_avg_1m: { start: number; end: number };
  cpu: CpuShare[];
  /** What Postgres's client backends did during the window (sampled every 100 ms). */
  postgres_waits: PostgresActivity;
  /** The topology's processes by pid during the window (to name their CPU profiles). */
  process_names: Record<string, string>;
}

export async function runClosedLoop(options: ClosedLoopOptions): Promise<ClosedLoopResult> {
  const { harness } = options;
  const devices = harness.topology.storage_systems.flatMap((system) => system.devices.map((device) => device.id));
  const feed = new TaskFeed(options.prefix, devices, 2);
  const submitter = new TaskSubmitter([harness.serverUrl('A'), harness.serverUrl('B')], options.concurrency);
  const watcher = await CompletionWatcher.start(harness.db);
  const errorKinds: Record<string, number> = {};
  let submitErrors = 0;
  let submitted = 0;
  let stopping = false;

  const worker = async (): Promise<void> => {
    while (!stopping) {
      const answer = await submitter.submit(feed.next());
      if (!answer.ok || !answer.taskId) {
        submitErrors += 1;
        const kind = (answer.error ?? 'unknown').slice(0, 160);
        if (errorKinds[kind] !== undefined || Object.keys(errorKinds).length < 10) errorKinds[kind] = (errorKinds[kind] ?? 0) + 1;
        // A refusing or dead server must not turn the loop into a busy spin.
        await sleep(50);
        continue;
      }
      submitted += 1;
      await watcher.wait(answer.taskId);
    }
  };

  const workers = Array.from({ length: options.concurrency }, () => worker());
  let names = new Map<number, string>();
  try {
    options.log(`warm-up: ${options.concurrency} tasks in flight for ${options.warmupMs} ms`);
    await sleep(options.warmupMs);
    names = await processNames(harness);
    const cpuBefore = snapshotCpu(names);
    const loadStart = loadavg()[0] ?? 0;
    const from = Date.now();
    const fromUs = monotonicMicros();
    const waitSampler = new WaitSampler(harness.db);
    await waitSampler.start({ statements: options.statements });
    options.log(`measuring for ${options.durationMs} ms`);
    await sleep(options.durationMs);
    const to = Date.now();
    const toUs = monotonicMicros();
    const cpuAfter = snapshotCpu(names);
    const postgresWaits = await waitSampler.stop();
    const loadEnd = loadavg()[0] ?? 0;
    stopping = true;

    const drained = await Promise.race([Promise.all(workers).then(() => true), sleep(options.drainTimeoutMs).then(() => false)]);
    if (!drained) options.log(`${watcher.watched} task(s) had not ended ${options.drainTimeoutMs} ms after the window; no longer waiting for them`);
    watcher.abandon();
    await Promise.all(workers);

    const db = harness.db;
    const window = [from / 1_000, to / 1_000];
    const { rows: inWindow } = await db.raw<{ rows: { second: number; count: number }[] }>(
      `select floor(extract(epoch from finished_at) - ?)::int as second, count(*)::int as count
         from tasks
        where state = 'succeeded' and finished_at >= to_timestamp(?) and finished_at < to_timestamp(?)
        group by 1 order by 1`,
      [window[0]!, window[0]!, window[1]!],
    );
    const seconds = Math.max(1, Math.round((to - from) / 1_000));
    const perSecond = Array.from({ length: seconds }, (_, index) => inWindow.find((row) => row.second === index)?.count ?? 0);
    const succeededInWindow = inWindow.reduce((sum, row) => sum + row.count, 0);
    const { rows: latency } = await db.raw<{ rows: { p50: number | null; p99: number | null; max: number | null }[] }>(
      `select percentile_disc(0.5) within group (order by ms) as p50, percentile_disc(0.99) within group (order by ms) as p99, max(ms) as max
         from (select extract(epoch from finished_at - created_at) * 1000 as ms from tasks
                where state = 'succeeded' and finished_at >= to_timestamp(?) and finished_at < to_timestamp(?)) as ended`,
      [window[0]!, window[1]!],
    );
    // When each state of the task history was last entered, after the task was created (its commit of `queued`).
    const { rows: phaseRows } = await db.raw<{ rows: { state: string; p50: number; p99: number }[] }>(
      `select state, percentile_disc(0.5) within group (order by ms) as p50, percentile_disc(0.99) within group (order by ms) as p99
         from (select h.state, extract(epoch from max(h.at) - t.created_at) * 1000 as ms
                 from tasks t join task_history h on h.task_id = t.id
                where t.state = 'succeeded' and t.finished_at >= to_timestamp(?) and t.finished_at < to_timestamp(?)
                group by t.id, t.created_at, h.state) as entered
        group by state order by 2`,
      [window[0]!, window[1]!],
    );
    // The topology is this run's alone, so every task in it is one of ours.
    const stateRows: { state: string; count: number }[] = await db('tasks').select('state').count({ count: '*' }).groupBy('state');
    const states = Object.fromEntries(stateRows.map((row) => [row.state, Number(row.count)]));
    const [redispatched] = await db('tasks').where('attempt', '>', 1).count({ count: '*' });
    const open = (states.queued ?? 0) + (states.dispatched ?? 0) + (states.running ?? 0);
    const toNumber = (value: number | string | null | undefined): number | null => (value === null || value === undefined ? null : Number(value));
    return {
      window: { from: new Date(from).toISOString(), to: new Date(to).toISOString(), seconds: (to - from) / 1_000 },
      monotonic_window: { fromUs, toUs },
      tasks_per_s: succeededInWindow / ((to - from) / 1_000),
      succeeded_in_window: succeededInWindow,
      per_second: perSecond,
      end_to_end_ms: { p50: toNumber(latency[0]?.p50), p99: toNumber(latency[0]?.p99), max: toNumber(latency[0]?.max) },
      phases_ms: Object.fromEntries(phaseRows.map((row) => [row.state, { p50: Number(row.p50), p99: Number(row.p99) }])),
      states,
      redispatched: Number(redispatched?.count ?? 0),
      failed: states.failed ?? 0,
      unfinished: open,
      submitted,
      submit_errors: submitErrors,
      submit_error_kinds: errorKinds,
      watcher_errors: watcher.errors,
      load_avg_1m: { start: loadStart, end: loadEnd },
      cpu: cpuBetween(cpuBefore, cpuAfter),
      postgres_waits: postgresWaits,
      process_names: Object.fromEntries(names),
    };
  } finally {
    stopping = true;
    watcher.abandon();
    await Promise.all(workers);
    await submitter.close();
  }
}
