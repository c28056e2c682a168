import type { ServerApi } from '@duplex/contracts';
import { formatTraceparent, ProblemError, type OperationHandlers } from '@duplex/shared';
import type { ServerContext } from '../context.ts';
import { findTask, listTasks, toTaskResource } from '../repositories/tasks.ts';

type Ops = ServerApi.operations;

export function taskHandlers(context: ServerContext): Pick<OperationHandlers<Ops>, 'submitTask' | 'submitTasks' | 'listTasks' | 'getTask' | 'cancelTask'> {
  return {
    async submitTasks(request) {
      const key = request.headers['idempotency-key'];
      const { tasks } = request.body;
      const traceparent = formatTraceparent(request.trace);
      const outcomes = await context.tasks.submitMany(tasks.map((task, index) => ({ request: task, idempotencyKey: `${key}/${index}`, requestId: String(request.id), traceparent })));
      const counts = { accepted: 0, replayed: 0, refused: 0 };
      const results = outcomes.map((outcome, index) => {
        if ('problem' in outcome) {
          counts.refused += 1;
          return { index, status: outcome.problem.status, problem: outcome.problem.toDocument({ request_id: String(request.id) }) };
        }
        counts[outcome.replayed ? 'replayed' : 'accepted'] += 1;
        return { index, status: 202, replayed: outcome.replayed, task: toTaskResource(outcome.task) };
      });
      if (counts.accepted > 0) context.dispatcher.kick();
      request.log.info(counts, 'task batch accepted');
      return { ...counts, results };
    },
    async submitTask(request, reply) {
      const { task, replayed } = await context.tasks.submit({
        request: request.body,
        idempotencyKey: request.headers['idempotency-key'],
        requestId: String(request.id),
        traceparent: formatTraceparent(request.trace),
      });
      if (!replayed) context.dispatcher.kick();
      request.log.info({ task_id: task.id, kind: task.kind, storage_system_id: task.storage_system_id, device: task.device, replayed }, 'task accepted');
      reply.header('location', `/v1/tasks/${task.id}`);
      if (replayed) reply.header('idempotent-replayed', 'true');
      return reply.code(202).send(toTaskResource(task));
    },
    async listTasks(request) {
      const { limit = 50, cursor, ...filters } = request.query;
      const page = await listTasks(context.db, filters, limit, cursor);
      return { items: page.items.map(toTaskResource), next_cursor: page.next_cursor };
    },
    async getTask(request) {
      const row = await findTask(context.db, request.params.id);
      if (!row) throw new ProblemError('task-not-found', `task '${request.params.id}' does not exist`);
      return toTaskResource(row);
    },
    async cancelTask(request) {
      return toTaskResource(await context.tasks.cancel(request.params.id));
    },
  };
}
