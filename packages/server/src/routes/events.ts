import type { ServerApi } from '@duplex/contracts';
import { ProblemError, type OperationHandlers } from '@duplex/shared';
import type { ServerContext } from '../context.ts';
import { parseTypeFilter, toEventResource, type EventFilter } from '../lib/event-stream.ts';
import { listTaskEvents } from '../repositories/events.ts';
import { findTask } from '../repositories/tasks.ts';
import { SseStream } from '../services/sse-stream.ts';

type Ops = ServerApi.operations;

export function eventHandlers(context: ServerContext): Pick<OperationHandlers<Ops>, 'streamEvents' | 'listTaskEvents'> {
  const feed = context.events;
  return {
    async streamEvents(request, reply) {
      const { type, storage_system_id: storageSystemId, task_id: taskId, after, heartbeat_ms: heartbeatMs = 15_000 } = request.query;
      const filter: EventFilter = {};
      const types = parseTypeFilter(type);
      if (types) filter.types = types;
      if (storageSystemId !== undefined) filter.storageSystemId = storageSystemId;
      if (taskId !== undefined) filter.taskId = taskId;

      // The header is what EventSource sends when it reconnects, so it is newer than a URL's `after`.
      const header = request.headers['last-event-id'];
      const lastEventId = typeof header === 'string' ? header : after;
      const start = lastEventId === undefined ? await feed.head() : await feed.positionOf(lastEventId);
      if (!start) {
        throw new ProblemError('event-id-unknown', `event ${lastEventId} is not in the outbox; read the current state again and open the stream without a position`);
      }

      reply
        .code(200)
        .header('cache-control', 'no-cache')
        // Proxies such as nginx would otherwise hold the events back to fill a buffer.
        .header('x-accel-buffering', 'no')
        .type('text/event-stream; charset=utf-8');
      // HEAD (which Fastify answers with this handler) gets the headers and no subscription.
      if (request.method === 'HEAD') return reply.send();

      const { retryMs, maxBufferedBytes, closeGraceMs } = feed.options;
      const stream = new SseStream(filter, { heartbeatMs, retryMs, maxBufferedBytes, closeGraceMs });
      const unsubscribe = feed.subscribe(stream, start);
      stream.body.once('close', unsubscribe);
      // However the response ends, the stream ends with it.
      reply.raw.once('close', () => stream.body.destroy());
      return reply.send(stream.body);
    },

    async listTaskEvents(request) {
      const { id } = request.params;
      const { limit = 50, cursor } = request.query;
      if (!(await findTask(context.db, id))) throw new ProblemError('task-not-found', `task '${id}' does not exist`);
      const page = await listTaskEvents(context.db, id, limit, cursor);
      return { items: page.items.map(toEventResource), next_cursor: page.next_cursor };
    },
  };
}
