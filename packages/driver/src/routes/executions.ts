import type { DriverApi } from '@duplex/contracts';
import { logProblem, parseTraceparent, problemDocument, toProblem, traceLogFields, type OperationHandlers } from '@duplex/shared';
import type { FastifyBaseLogger, FastifyRequest } from 'fastify';
import { devicesOf } from '../lib/operations.ts';
import type { DriverBackend, ExecutionRequest, ExecutionResult } from '../lib/types.ts';
import type { DriverMetrics } from '../metrics.ts';

type Handlers = OperationHandlers<DriverApi.operations>;
type BatchedOutcome = DriverApi.components['schemas']['ExecutionBatchResult']['results'][number];

export function executionHandlers(backend: DriverBackend, metrics?: DriverMetrics): Pick<Handlers, 'execute' | 'executeBatch'> {
  /** Runs one execution and logs it; a refusal is thrown, as a ProblemError. */
  async function run(execution: ExecutionRequest, log: FastifyBaseLogger, fields: Record<string, string> = {}): Promise<ExecutionResult> {
    const { task_id, kind, device, attempt, fencing } = execution;
    const startedAt = performance.now();
    let result;
    try {
      result = await backend.execute(execution);
    } catch (error) {
      metrics?.executed(kind, 'refused', startedAt);
      throw error;
    }
    metrics?.executed(kind, result.outcome, startedAt);
    log.info({ ...fields, task_id, kind, device, attempt, token: fencing.token, epoch: fencing.epoch, outcome: result.outcome, replayed: result.replayed }, 'execution');
    return result;
  }

  /** One execution of a batch, answered as POST /v1/executions would have answered it. */
  async function runBatched(
    item: { execution: ExecutionRequest; traceparent?: string; request_id?: string },
    request: FastifyRequest,
  ): Promise<BatchedOutcome> {
    const { execution } = item;
    // Its lines are the task's, under the task's own trace: the batch carries many tasks.
    const trace = parseTraceparent(item.traceparent);
    const fields = { request_id: item.request_id ?? String(request.id), ...(trace ? traceLogFields(trace) : {}) };
    const log = request.server.log;
    try {
      return { task_id: execution.task_id, status: 200, result: await run(execution, log, fields) };
    } catch (error) {
      const { problem } = toProblem(error, request);
      logProblem(log, 'execution', error, problem, { ...fields, task_id: execution.task_id });
      return { task_id: execution.task_id, status: problem.status, problem };
    }
  }

  return {
    execute: async (request) => run(request.body, request.log),

    /**
     * Each device's executions run one at a time in the order given (the executor's device
     * queue keeps it, since each starts after the one before it on its devices); after one
     * that could not run, the rest on its devices are not run, so that none overtakes it.
     */
    executeBatch: async (request) => {
      const chains = new Map<string, Promise<boolean>>();
      const results = request.body.executions.map((item) => {
        const { execution } = item;
        const devices = devicesOf(execution);
        const before = Promise.all(devices.map((device) => chains.get(device) ?? true));
        const outcome = before.then((ran) =>
          ran.every(Boolean)
            ? runBatched(item, request)
            : {
                task_id: execution.task_id,
                status: 503,
                problem: problemDocument('not-ready', 'not run: an earlier execution of this batch on the same device could not run', {
                  instance: request.url,
                  request_id: String(request.id),
                }),
              },
        );
        const ran = outcome.then((result) => result.status < 500);
        for (const device of devices) chains.set(device, ran);
        return outcome;
      });
      return { results: await Promise.all(results) };
    },
  };
}
