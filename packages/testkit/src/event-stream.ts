import { bearer, testAdminToken } from './auth.ts';
import { request } from 'undici';

/** One Server-Sent Events message, as a client sees it. */
export interface SseMessage {
  id?: string;
  event?: string;
  data: string;
}

export interface ParsedSse {
  messages: SseMessage[];
  comments: string[];
  /** The last `retry:` hint, if any. */
  retry: number | undefined;
  /** Text after the last complete message (its closing blank line has not arrived yet). */
  rest: string;
}

/** Parses an event stream as the WHATWG "Server-sent events" section says a client does. */
export function parseSse(text: string): ParsedSse {
  const messages: SseMessage[] = [];
  const comments: string[] = [];
  let retry: number | undefined;
  const normalized = text.replace(/\r\n|\r/g, '\n');
  const end = normalized.lastIndexOf('\n\n');
  const complete = end === -1 ? '' : normalized.slice(0, end);
  const rest = end === -1 ? normalized : normalized.slice(end + 2);
  for (const block of complete.split('\n\n')) {
    const data: string[] = [];
    const message: Omit<SseMessage, 'data'> = {};
    for (const line of block.split('\n')) {
      if (line === '') continue;
      if (line.startsWith(':')) {
        comments.push(line.slice(1).trimStart());
        continue;
      }
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') data.push(value);
      else if (field === 'id') message.id = value;
      else if (field === 'event') message.event = value;
      else if (field === 'retry' && /^\d+$/.test(value)) retry = Number(value);
    }
    // A message without data dispatches nothing.
    if (data.length > 0) messages.push({ ...message, data: data.join('\n') });
  }
  return { messages, comments, retry, rest };
}

/**
 * A test's connection to an event stream over a real socket: it collects the messages and
 * comments as they arrive, and can wait for a condition on them.
 */
export class EventStreamClient {
  readonly messages: SseMessage[] = [];
  readonly comments: string[] = [];
  retry: number | undefined;
  /** Settles when the server ends the stream (or the connection is closed). */
  readonly ended: Promise<void>;
  private pending = '';

  private constructor(
    readonly status: number,
    readonly headers: Record<string, string | string[] | undefined>,
    body: AsyncIterable<Buffer> | undefined,
    readonly text: () => string,
    private readonly abort: AbortController,
  ) {
    this.ended = body ? this.read(body) : Promise.resolve();
  }

  /** Opens the stream; a non-200 answer is returned with its body in `text()`, unread as a stream. */
  static async open(url: string, headers: Record<string, string> = {}): Promise<EventStreamClient> {
    const abort = new AbortController();
    // The tests' servers take their admin token; a test of authorization names its own header.
    const response = await request(url, { headers: { accept: 'text/event-stream', ...bearer(testAdminToken), ...headers }, signal: abort.signal, bodyTimeout: 0 });
    if (response.statusCode !== 200) {
      const body = await response.body.text();
      return new EventStreamClient(response.statusCode, response.headers, undefined, () => body, abort);
    }
    return new EventStreamClient(response.statusCode, response.headers, response.body, () => '', abort);
  }

  private async read(body: AsyncIterable<Buffer>): Promise<void> {
    try {
      for await (const chunk of body) {
        const parsed = parseSse(this.pending + chunk.toString('utf8'));
        this.pending = parsed.rest;
        this.messages.push(...parsed.messages);
        this.comments.push(...parsed.comments);
        if (parsed.retry !== undefined) this.retry = parsed.retry;
      }
    } catch {
      // closed by the client, or the connection dropped: what arrived stays readable
    }
  }

  /** The data of every message, parsed as JSON. */
  events<T = unknown>(): T[] {
    return this.messages.map((message) => JSON.parse(message.data) as T);
  }

  /** Polls until check() returns a value (not undefined). */
  async waitFor<T>(what: string, check: (client: EventStreamClient) => T | undefined, timeoutMs = 10_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = check(this);
      if (value !== undefined) return value;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; ${this.messages.length} messages: ${this.messages.map((m) => `${m.id}:${m.event}`).join(' ')}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Closes the connection, as a client that goes away does. */
  async close(): Promise<void> {
    this.abort.abort();
    await this.ended;
  }
}
