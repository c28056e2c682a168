import type { ServerApi } from '@duplex/contracts';
import { ProblemError } from '@duplex/shared';

export type EventType = ServerApi.components['schemas']['EventType'];
export type EventResource = ServerApi.components['schemas']['Event'];

/** Every type of event the outbox holds, as the contract names them. */
export const eventTypes = [
  'task.state_changed',
  'agent.registered',
  'agent.lost',
  'inventory.changed',
  'device.changed',
  'cluster.failover',
  'cluster.failback',
] as const satisfies readonly EventType[];

// A type the contract adds must be listed above too; this line stops compiling until it is.
const _everyTypeListed: Exclude<EventType, (typeof eventTypes)[number]> extends never ? true : never = true;

/**
 * A place in the stream: an event's `stream_xid`, then its id (see the event_stream
 * migration). Ids are drawn before commit, so id order alone is not commit order; every event
 * whose `stream_xid` is below the snapshot's xmin is final.
 */
export interface StreamPosition {
  xid: bigint;
  id: number;
}

/** Before every event. */
export const streamStart: StreamPosition = { xid: 0n, id: 0 };

export function comparePositions(a: StreamPosition, b: StreamPosition): number {
  if (a.xid !== b.xid) return a.xid < b.xid ? -1 : 1;
  return a.id === b.id ? 0 : a.id < b.id ? -1 : 1;
}

export const laterPosition = (a: StreamPosition, b: StreamPosition): StreamPosition => (comparePositions(a, b) >= 0 ? a : b);

/** An event as the stream carries it: the outbox row and its place in the stream. */
export interface StreamedEvent {
  id: number;
  type: string;
  storage_system_id: string | null;
  task_id: string | null;
  payload: Record<string, unknown>;
  created_at: Date;
  position: StreamPosition;
}

export interface EventFilter {
  types?: ReadonlySet<string>;
  storageSystemId?: string;
  taskId?: string;
}

export function matchesFilter(filter: EventFilter, event: StreamedEvent): boolean {
  if (filter.types && !filter.types.has(event.type)) return false;
  if (filter.storageSystemId !== undefined && event.storage_system_id !== filter.storageSystemId) return false;
  if (filter.taskId !== undefined && event.task_id !== filter.taskId) return false;
  return true;
}

const knownTypes: ReadonlySet<string> = new Set(eventTypes);

/**
 * The `type` filter: each value of the repeated parameter may itself be a comma-separated
 * list. An unknown type is refused rather than matching nothing, so a typo does not look
 * like a quiet stream.
 */
export function parseTypeFilter(values: readonly string[] | undefined): Set<EventType> | undefined {
  if (values === undefined || values.length === 0) return undefined;
  const types = new Set<EventType>();
  for (const value of values) {
    for (const name of value.split(',')) {
      if (!knownTypes.has(name)) {
        throw new ProblemError('validation-failed', `querystring/type '${name}' is not an event type (${eventTypes.join(', ')})`, {
          errors: [{ location: 'querystring/type', message: `must be one of ${JSON.stringify(eventTypes)}` }],
        });
      }
      types.add(name as EventType);
    }
  }
  return types;
}

export function toEventResource(event: StreamedEvent): EventResource {
  return {
    id: String(event.id),
    type: event.type as EventType,
    storage_system_id: event.storage_system_id,
    task_id: event.task_id,
    data: event.payload,
    created_at: event.created_at.toISOString(),
  };
}

// Server-Sent Events framing (WHATWG HTML, "Server-sent events"). A message ends with a blank
// line; a line starting with a colon is a comment, which clients ignore.

export function sseMessage(event: EventResource): string {
  // JSON.stringify escapes line breaks, so the data is one line.
  return `id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

export function sseComment(text: string): string {
  return `${text
    .split(/\r\n|\r|\n/)
    .map((line) => `: ${line}`)
    .join('\n')}\n\n`;
}

export const sseRetry = (ms: number): string => `retry: ${Math.max(0, Math.round(ms))}\n\n`;
