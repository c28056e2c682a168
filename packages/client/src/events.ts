import type { ServerApi } from '@duplex/contracts';
import { createParser } from 'eventsource-parser';

export type DuplexEvent = ServerApi.components['schemas']['Event'];
export type EventQuery = NonNullable<ServerApi.operations['streamEvents']['parameters']['query']>;

export interface EventStreamOptions {
  query?: EventQuery;
  /** Resume right after this event (Last-Event-ID). */
  after?: string;
  signal?: AbortSignal;
}

/** The stream could not be opened: the server's status and what it said. */
export class EventStreamError extends Error {
  override name = 'EventStreamError';
  constructor(
    readonly status: number,
    readonly body: string,
  ) {
    super(`the event stream answered ${status}: ${body.slice(0, 200)}`);
  }
}

function queryString(query: EventQuery = {}): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value === undefined) continue;
    for (const item of Array.isArray(value) ? value : [value]) search.append(name, String(item));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

/** What a stream gives: that it is open (the server streams from here on), then its events. */
export type StreamItem = { opened: true } | { opened?: false; event: DuplexEvent };

/**
 * The server's stream (GET /v1/events): first `{ opened: true }` once the server answered, then
 * each event as it comes, until the stream ends or `signal` aborts. Reconnecting is the
 * caller's: resume with the last event's id as `after`.
 */
export async function* readEvents(fetcher: typeof fetch, baseUrl: string, headers: Record<string, string>, options: EventStreamOptions = {}): AsyncGenerator<StreamItem> {
  const response = await fetcher(`${baseUrl}/v1/events${queryString(options.query)}`, {
    headers: { ...headers, accept: 'text/event-stream', ...(options.after ? { 'last-event-id': options.after } : {}) },
    signal: options.signal,
  });
  if (response.status !== 200 || !response.body) throw new EventStreamError(response.status, await response.text());
  yield { opened: true };
  const ready: DuplexEvent[] = [];
  const parser = createParser({
    onEvent(message) {
      ready.push(JSON.parse(message.data) as DuplexEvent);
    },
  });
  const decoder = new TextDecoder();
  try {
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      parser.feed(decoder.decode(chunk, { stream: true }));
      while (ready.length > 0) yield { event: ready.shift()! };
    }
  } finally {
    await response.body.cancel().catch(() => {});
  }
}
