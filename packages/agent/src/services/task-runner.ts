import type { AgentApi, DriverApi } from '@duplex/contracts';
import { backoffDelayMs, bearer, continueTrace, formatTraceparent, JsonClient, KeyedLock, parseTraceparent, problemCodeOf, sleep, traceLogFields } from '@duplex/shared';
import type { FastifyBaseLogger } from 'fastify';
import type { AgentConfig } from '../config.ts';
import type { AgentMetrics } from '../metrics.ts';
import type { ServerLink } from './server-link.ts';

type TaskDispatch = AgentApi.components['schemas']['TaskDispatch'];
type ExecutionResult = DriverApi.components['schemas']['ExecutionResult'];
type Problem = DriverApi.components['schemas']['Problem'];

/**
 * Runs the attempts the server sends through the cluster's driver, in order per device,
 * and hands each outcome to the server link. An attempt already in hand is not taken twice.
 */
export class TaskRunner {
  /** Keeps a server's tasks for one device in the order it dispatched them. */
  private readonly devices = new KeyedLock();
  private readonly inHand = new Set<string>();
  private readonly driver: JsonClient;
  private readonly abort = new AbortController();

  constructor(
    private readonly config: AgentConfig,
    private readonly link: ServerLink,
    private readonly log: FastifyBaseLogger,
    private readonly metrics?: AgentMetrics,
  ) {
    this.driver = new JsonClient(config.DRIVER_URL, { name: 'driver', timeoutMs: 30_000, connections: 32, headers: bearer(config.CLUSTER_TOKEN) });
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
      void this.devices
        .run([dispatch.device], () => this.run(dispatch))
        .catch((error: unknown) => {
          const trace = parseTraceparent(dispatch.traceparent);
          this.log.error({ err: error, task_id: dispatch.task_id, ...(trace ? { trace_id: trace.traceId } : {}) }, 'running a task failed');
        })
        .finally(() => this.inHand.delete(key));
    }
    return { accepted, duplicates: dispatches.length - accepted };
  }

  private async run(dispatch: TaskDispatch): Promise<void> {
    // The run is a span of the task's trace (a new trace for a task submitted without one); the
    // driver call and the reports carry it, so every hop logs under the task's trace id.
    const span = continueTrace(dispatch.traceparent);
    const traceparent = formatTraceparent(span);
    const log = this.log.child({ request_id: dispatch.request_id, task_id: dispatch.task_id, attempt: dispatch.attempt, ...traceLogFields(span) });
    const base = { task_id: dispatch.task_id, attempt: dispatch.attempt, fencing_token: dispatch.fencing_token, traceparent };
    this.link.addReport({ ...base, state: 'running' });
    const outcome = await this.execute(dispatch, log, traceparent);
    if (outcome === 'stopped') return;
    if (outcome === 'fenced') {
      this.metrics?.taskRan(dispatch.kind, 'refused');
      // Not run: the server puts the attempt back in the queue (or ignores this if a newer one
      // exists). An older epoch also means the server's view of this cluster is behind.
      this.link.addReport({ ...base, state: 'refused' });
      this.link.reportInventory();
      return;
    }
    log.info({ outcome: outcome.outcome, replayed: outcome.replayed }, 'task ran');
    this.metrics?.taskRan(dispatch.kind, outcome.outcome);
    this.link.addReport({
      ...base,
      state: outcome.outcome,
      ...(outcome.result ? { result: outcome.result } : {}),
      ...(outcome.error ? { error: outcome.error } : {}),
    });
  }

  /** Calls the driver until it answers; a refusal (4xx) is the task's failure, a fenced attempt is dropped. */
  private async execute(dispatch: TaskDispatch, log: FastifyBaseLogger, traceparent: string): Promise<ExecutionResult | 'fenced' | 'stopped'> {
    const body = {
      task_id: dispatch.task_id,
      kind: dispatch.kind,
      device: dispatch.device,
      params: dispatch.params,
      attempt: dispatch.attempt,
      fencing: { token: dispatch.fencing_token, epoch: dispatch.epoch },
    };
    for (let attempt = 0; !this.abort.signal.aborted; attempt += 1) {
      const startedAt = performance.now();
      try {
        const response = await this.driver.call<ExecutionResult | Problem>('POST', '/v1/executions', { body, requestId: dispatch.request_id, traceparent });
        this.metrics?.driverCall(response.status, startedAt);
        if (response.status === 200) return response.body as ExecutionResult;
        const problem = response.body as Problem;
        if (response.status === 409) {
          log.warn({ problem_type: problem.type, detail: problem.detail }, 'the driver refused this attempt as fenced');
          return 'fenced';
        }
        if (response.status >= 400 && response.status < 500) {
          return { task_id: dispatch.task_id, outcome: 'failed', replayed: false, error: problem };
        }
        log.warn({ status: response.status, problem_type: problemCodeOf(problem) }, 'the driver could not run the execution; retrying');
      } catch (error) {
        this.metrics?.driverCall(undefined, startedAt);
        log.warn({ err: (error as Error).message }, 'the driver is unreachable; retrying');
      }
      await sleep(backoffDelayMs(attempt, 50, this.config.DRIVER_RETRY_MAX_MS), this.abort.signal);
    }
    return 'stopped';
  }

  async close(): Promise<void> {
    this.abort.abort();
    await this.driver.close();
  }
}
