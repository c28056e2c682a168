import type { AgentApi, DriverApi } from '@duplex/contracts';
import { backoffDelayMs, bearer, continueTrace, formatTraceparent, JsonClient, problemCodeOf, sleep, traceLogFields } from '@duplex/shared';
import type { FastifyBaseLogger } from 'fastify';
import type { AgentConfig } from '../config.ts';
import type { AgentMetrics } from '../metrics.ts';
import type { ServerLink } from './server-link.ts';

type TaskDispatch = AgentApi.components['schemas']['TaskDispatch'];
type ExecutionResult = DriverApi.components['schemas']['ExecutionResult'];
type Problem = DriverApi.components['schemas']['Problem'];
type ExecutionBatchResult = DriverApi.components['schemas']['ExecutionBatchResult'];

/** How long one execution may take at the driver before the call is given up and retried. */
const driverTimeoutMs = 30_000;
/** The most executions sent to the driver in one request (its contract's limit). */
const maxBatchSize = 256;

/** An attempt being run: its dispatch, its span of the task's trace and the fields its log lines carry. */
interface Run {
  dispatch: TaskDispatch;
  traceparent: string;
  logFields: Record<string, unknown>;
  base: { task_id: string; attempt: number; fencing_token: number; traceparent: string };
}

/** What the driver answered for one execution: 200 with its result, or a problem. */
interface DriverAnswer {
  status: number;
  body: unknown;
}

const executionOf = (dispatch: TaskDispatch) => ({
  task_id: dispatch.task_id,
  kind: dispatch.kind,
  device: dispatch.device,
  params: dispatch.params,
  attempt: dispatch.attempt,
  fencing: { token: dispatch.fencing_token, epoch: dispatch.epoch },
});

/**
 * Runs the attempts the server sends through the cluster's driver, in order per device,
 * and hands each outcome to the server link. An attempt already in hand is not taken twice.
 * The attempts that arrive together, and those queued for a device while it was busy, go
 * to the driver together, in one request.
 */
export class TaskRunner {
  private readonly inHand = new Set<string>();
  /** Per device, in dispatch order, the attempts that have not gone to the driver yet. */
  private readonly queued = new Map<string, TaskDispatch[]>();
  /**
   * Per device with attempts at the driver, how many of them have no answer yet: its next
   * attempts wait until all of these are answered.
   */
  private readonly inFlight = new Map<string, number>();
  private readonly driver: JsonClient;
  private readonly abort = new AbortController();

  constructor(
    private readonly config: AgentConfig,
    private readonly link: ServerLink,
    private readonly log: FastifyBaseLogger,
    private readonly metrics?: AgentMetrics,
  ) {
    this.driver = new JsonClient(config.DRIVER_URL, { name: 'driver', timeoutMs: driverTimeoutMs, connections: 32, headers: bearer(config.CLUSTER_TOKEN) });
  }

  /** 'ok' when the driver answers its readiness check. */
  async driverCheck(): Promise<string> {
    try {
      const response = await this.driver.call('GET', '/readyz', { timeoutMs: 1_000 });
      return response.status === 200 ? 'ok' : `not ready (${response.status})`;
    } catch {
      return 'unreachable';
    }
  }

  get size(): number {
    return this.inHand.size;
  }

  accept(dispatches: TaskDispatch[]): { accepted: number; duplicates: number } {
    let accepted = 0;
    for (const dispatch of dispatches) {
      const key = `${dispatch.task_id}#${dispatch.fencing_token}`;
      if (this.inHand.has(key)) continue;
      this.inHand.add(key);
      accepted += 1;
      const queue = this.queued.get(dispatch.device);
      if (queue) queue.push(dispatch);
      else this.queued.set(dispatch.device, [dispatch]);
    }
    this.pump();
    return { accepted, duplicates: dispatches.length - accepted };
  }

  /**
   * Sends the attempts queued for every device that has none at the driver, in one request.
   * A device's attempts reach the driver in the order they were dispatched, one request of
   * them at a time; a device that is done goes again without waiting for the others.
   */
  private pump(): void {
    if (this.abort.signal.aborted) return;
    const batch: TaskDispatch[] = [];
    for (const [device, queue] of this.queued) {
      if (this.inFlight.has(device)) continue;
      if (batch.length >= maxBatchSize) break;
      const taken = queue.splice(0, maxBatchSize - batch.length);
      if (queue.length === 0) this.queued.delete(device);
      this.inFlight.set(device, taken.length);
      batch.push(...taken);
    }
    if (batch.length === 0) return;
    void this.runBatch(batch).catch((error: unknown) => {
      this.log.error({ err: error, task_ids: batch.map((item) => item.task_id) }, 'running tasks failed');
      for (const dispatch of batch) this.release(dispatch);
    });
  }

  /** An attempt that has its answer (or never will): its device may take the next ones once all of its are done. */
  private release(dispatch: TaskDispatch): void {
    if (!this.inHand.delete(`${dispatch.task_id}#${dispatch.fencing_token}`)) return;
    const left = (this.inFlight.get(dispatch.device) ?? 1) - 1;
    if (left > 0) return void this.inFlight.set(dispatch.device, left);
    this.inFlight.delete(dispatch.device);
    this.pump();
  }

  /** Runs attempts through the driver until each has an answer; reports each. */
  private async runBatch(batch: TaskDispatch[]): Promise<void> {
    // Each run is a span of its task's trace (a new trace for a task submitted without one); the
    // driver call and the reports carry it, so every hop logs under the task's trace id.
    let pending: Run[] = batch.map((dispatch) => {
      const span = continueTrace(dispatch.traceparent);
      const traceparent = formatTraceparent(span);
      const run: Run = {
        dispatch,
        traceparent,
        logFields: { request_id: dispatch.request_id, task_id: dispatch.task_id, attempt: dispatch.attempt, ...traceLogFields(span) },
        base: { task_id: dispatch.task_id, attempt: dispatch.attempt, fencing_token: dispatch.fencing_token, traceparent },
      };
      this.link.addReport({ ...run.base, state: 'running' });
      return run;
    });
    for (let attempt = 0; pending.length > 0; attempt += 1) {
      if (this.abort.signal.aborted) return;
      const answers = pending.length === 1 ? [await this.callOne(pending[0]!)] : await this.callBatch(pending);
      const again: Run[] = [];
      pending.forEach((run, index) => {
        const answer = answers[index];
        if (answer && answer.status < 500) {
          this.finish(run, answer);
          this.release(run.dispatch);
        } else again.push(run);
      });
      if (again.length === 0) break;
      await sleep(backoffDelayMs(attempt, 50, this.config.DRIVER_RETRY_MAX_MS), this.abort.signal);
      pending = again;
    }
  }

  /** The driver's answer for one execution; undefined when it could not be reached. */
  private async callOne(run: Run): Promise<DriverAnswer | undefined> {
    const startedAt = performance.now();
    try {
      const response = await this.driver.call<ExecutionResult | Problem>('POST', '/v1/executions', {
        body: executionOf(run.dispatch),
        requestId: run.dispatch.request_id,
        traceparent: run.traceparent,
      });
      this.metrics?.driverCall(response.status, startedAt);
      if (response.status >= 500) this.log.warn({ ...run.logFields, status: response.status, problem_type: problemCodeOf(response.body as Problem) }, 'the driver could not run the execution; retrying');
      return { status: response.status, body: response.body };
    } catch (error) {
      this.metrics?.driverCall(undefined, startedAt);
      this.log.warn({ ...run.logFields, err: (error as Error).message }, 'the driver is unreachable; retrying');
      return undefined;
    }
  }

  /**
   * The driver's answers for several executions of one device, sent in one request (in order).
   * A driver that refuses the batch as a whole (one that has no batch operation, or an
   * execution that fails its schema) is asked one execution at a time instead.
   */
  private async callBatch(runs: Run[]): Promise<(DriverAnswer | undefined)[]> {
    const startedAt = performance.now();
    const first = runs[0]!;
    // A device runs its executions one after another: each may take as long as a single call may.
    const perDevice = new Map<string, number>();
    for (const run of runs) perDevice.set(run.dispatch.device, (perDevice.get(run.dispatch.device) ?? 0) + 1);
    let response;
    try {
      response = await this.driver.call<ExecutionBatchResult | Problem>('POST', '/v1/execution-batches', {
        body: {
          executions: runs.map((run) => ({
            execution: executionOf(run.dispatch),
            traceparent: run.traceparent,
            ...(run.dispatch.request_id ? { request_id: run.dispatch.request_id } : {}),
          })),
        },
        requestId: first.dispatch.request_id,
        traceparent: first.traceparent,
        timeoutMs: driverTimeoutMs * Math.max(...perDevice.values()),
      });
    } catch (error) {
      this.metrics?.driverCall(undefined, startedAt);
      this.log.warn({ err: (error as Error).message, tasks: runs.length }, 'the driver is unreachable; retrying');
      return runs.map(() => undefined);
    }
    this.metrics?.driverCall(response.status, startedAt);
    if (response.status === 200) {
      const { results } = response.body as ExecutionBatchResult;
      return runs.map((run, index) => {
        const answer = results[index];
        if (!answer || answer.task_id !== run.dispatch.task_id) return undefined;
        if (answer.status >= 500) this.log.warn({ ...run.logFields, status: answer.status, problem_type: answer.problem ? problemCodeOf(answer.problem) : undefined }, 'the driver could not run the execution; retrying');
        return { status: answer.status, body: answer.status === 200 ? answer.result : answer.problem };
      });
    }
    if (response.status >= 400 && response.status < 500) {
      const answers: (DriverAnswer | undefined)[] = [];
      for (const run of runs) answers.push(await this.callOne(run));
      return answers;
    }
    this.log.warn({ status: response.status, tasks: runs.length, problem_type: problemCodeOf(response.body as Problem) }, 'the driver could not run the executions; retrying');
    return runs.map(() => undefined);
  }

  /** Reports an answered execution: its outcome, a refusal (4xx) as the task's failure, or a fenced attempt as refused. */
  private finish(run: Run, answer: DriverAnswer): void {
    const { dispatch, base, logFields } = run;
    if (answer.status === 409) {
      const problem = answer.body as Problem | undefined;
      this.log.warn({ ...logFields, problem_type: problem?.type, detail: problem?.detail }, 'the driver refused this attempt as fenced');
      this.metrics?.taskRan(dispatch.kind, 'refused');
      // Not run: the server puts the attempt back in the queue (or ignores this if a newer one
      // exists). An older epoch also means the server's view of this cluster is behind.
      this.link.addReport({ ...base, state: 'refused' });
      this.link.reportInventory();
      return;
    }
    const outcome: ExecutionResult =
      answer.status === 200
        ? (answer.body as ExecutionResult)
        : { task_id: dispatch.task_id, outcome: 'failed', replayed: false, error: answer.body as Problem };
    this.log.info({ ...logFields, outcome: outcome.outcome, replayed: outcome.replayed }, 'task ran');
    this.metrics?.taskRan(dispatch.kind, outcome.outcome);
    this.link.addReport({
      ...base,
      state: outcome.outcome,
      ...(outcome.result ? { result: outcome.result } : {}),
      ...(outcome.error ? { error: outcome.error } : {}),
    });
  }

  async close(): Promise<void> {
    this.abort.abort();
    await this.driver.close();
  }
}
