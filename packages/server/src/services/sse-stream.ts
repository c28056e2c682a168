import { PassThrough } from 'node:stream';
import { sseComment, sseMessage, sseRetry, toEventResource, type EventFilter, type StreamedEvent } from '../lib/event-stream.ts';
import type { EventSubscriber } from './event-feed.ts';

export interface SseStreamOptions {
  heartbeatMs: number;
  retryMs: number;
  maxBufferedBytes: number;
  closeGraceMs: number;
}

/**
 * One client's event stream: the body of its response. It writes the `retry:` hint, the
 * events and heartbeat comments. The body is piped to the socket, so what the client has not
 * read yet piles up in it; past `maxBufferedBytes` the client is too slow, and rather than
 * hold ever more for it the stream ends with a comment saying so (it resumes with its last id).
 */
export class SseStream implements EventSubscriber {
  readonly body: PassThrough;
  /** Settles when the body is closed: fully sent, or cut. */
  readonly closed: Promise<void>;
  private ended = false;
  private readonly heartbeat: NodeJS.Timeout;
  private graceTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly filter: EventFilter,
    private readonly options: SseStreamOptions,
  ) {
    this.body = new PassThrough();
    this.closed = new Promise((resolve) => this.body.once('close', resolve));
    void this.closed.then(() => {
      this.ended = true;
      clearInterval(this.heartbeat);
      clearTimeout(this.graceTimer);
    });
    this.body.write(sseRetry(options.retryMs));
    this.heartbeat = setInterval(() => this.write(sseComment('heartbeat')), options.heartbeatMs);
    this.heartbeat.unref();
  }

  /** Bytes written that the client has not taken yet (beyond what the socket holds). */
  get bufferedBytes(): number {
    return this.body.writableLength + this.body.readableLength;
  }

  deliver(events: StreamedEvent[]): boolean {
    return this.write(events.map((event) => sseMessage(toEventResource(event))).join(''));
  }

  private write(text: string): boolean {
    if (this.ended) return false;
    // Measured before writing, so one large event still goes to a client that keeps up.
    if (this.bufferedBytes > this.options.maxBufferedBytes) {
      void this.end(`the client reads too slowly (more than ${this.options.maxBufferedBytes} bytes waiting); reconnect with Last-Event-ID to resume`);
      return false;
    }
    this.body.write(text);
    return true;
  }

  end(reason: string): Promise<void> {
    if (!this.ended) {
      this.ended = true;
      clearInterval(this.heartbeat);
      this.body.end(sseComment(`closing: ${reason}`));
      // A client that does not read would keep the rest here for ever.
      this.graceTimer = setTimeout(() => this.body.destroy(), this.options.closeGraceMs);
      this.graceTimer.unref();
    }
    return this.closed;
  }
}
