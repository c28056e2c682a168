import type { Database } from '@duplex/shared';
import type { FastifyBaseLogger } from 'fastify';
import { comparePositions, laterPosition, matchesFilter, type EventFilter, type StreamedEvent, type StreamPosition } from '../lib/event-stream.ts';
import * as events from '../repositories/events.ts';
import { NotificationListener } from './notification-listener.ts';

export interface EventFeedOptions {
  /** How often the outbox is read without a notification: delivery never depends on one. */
  pollIntervalMs: number;
  /** Events read per query, by the reader and by a subscriber catching up. */
  pageSize: number;
  /** The reconnection delay streams suggest to clients (`retry:`). */
  retryMs: number;
  /** A client with this much not yet sent to it is too slow and is disconnected. */
  maxBufferedBytes: number;
  /** How long a client that was dropped (too slow) may take to read the rest before it is cut. */
  closeGraceMs: number;
  /** How long a shutdown waits for the streams to flush their last bytes. */
  shutdownGraceMs: number;
}

export const defaultEventFeedOptions: EventFeedOptions = {
  pollIntervalMs: 1_000,
  pageSize: 500,
  retryMs: 1_000,
  maxBufferedBytes: 1_048_576,
  closeGraceMs: 10_000,
  shutdownGraceMs: 1_000,
};

/** Someone following the stream: an SSE connection. */
export interface EventSubscriber {
  readonly filter: EventFilter;
  /**
   * Takes the next matching events, in stream order. False when it cannot take them (a
   * client too slow to keep up): it has then ended itself, and the feed drops it.
   */
  deliver(events: StreamedEvent[]): boolean;
  /** Ends the subscriber, telling the client why; settles once it is closed. */
  end(reason: string): Promise<void>;
}

interface Subscription {
  subscriber: EventSubscriber;
  /** Everything up to here has been delivered to it, or did not match its filter. */
  position: StreamPosition;
  /** Fed by the reader; until then it reads its backlog itself. */
  live: boolean;
  closed: boolean;
}

/** The longest wait between looks at committed events held back by an open transaction. */
const settleCheckMaxMs = 100;

/** The channel the outbox trigger notifies on every insert (see the event_stream migration). */
export const eventsChannel = 'duplex_events';

/**
 * The server's one reader of the event outbox. It wakes on a Postgres notification, on a
 * slow poll and when a subscriber arrives, reads the settled events after its cursor and fans
 * them out, in memory, to every live subscriber whose filter they match. It reads nothing
 * while no one subscribes.
 *
 * A subscriber starts at a position: the head of the stream, or the event it last received.
 * Behind the reader, it first reads its backlog from the database in pages, up to the
 * reader's cursor; when it has caught up (checked and switched without yielding to the
 * reader), it joins the live feed. Every subscription keeps its own position and takes only
 * later events, so it receives each event once, in order, whichever way it came.
 */
export class EventFeed {
  private cursor: StreamPosition | undefined;
  private readonly subscriptions = new Set<Subscription>();
  private readonly listener: NotificationListener;
  private pollTimer: NodeJS.Timeout | undefined;
  private settleTimer: NodeJS.Timeout | undefined;
  private settleDelayMs = 0;
  private reading = false;
  private again = false;
  private idle: Promise<void> = Promise.resolve();
  private closed = false;
  private advanced = signal();

  constructor(
    private readonly db: Database,
    readonly options: EventFeedOptions,
    private readonly log: FastifyBaseLogger,
    listen: { connectionString: string; applicationName: string },
  ) {
    this.listener = new NotificationListener({
      ...listen,
      channel: eventsChannel,
      log,
      onNotification: () => this.wake(),
      onListening: () => this.wake(),
    });
  }

  start(): void {
    if (this.closed || this.pollTimer) return;
    this.listener.start();
    this.pollTimer = setInterval(() => this.wake(), this.options.pollIntervalMs);
    this.pollTimer.unref();
  }

  /** Where a stream without a position starts: after the newest settled event. */
  async head(): Promise<StreamPosition> {
    return events.streamHead(this.db);
  }

  /** The position of an event by its public id, or undefined when the outbox does not hold it. */
  async positionOf(eventId: string): Promise<StreamPosition | undefined> {
    // Beyond a bigint, so not an id the outbox can hold (and Postgres would refuse the query).
    if (BigInt(eventId) > 9_223_372_036_854_775_807n) return undefined;
    return events.positionOfEvent(this.db, eventId);
  }

  /** Follows the stream from a position; returns the function that stops following. */
  subscribe(subscriber: EventSubscriber, from: StreamPosition): () => void {
    const subscription: Subscription = { subscriber, position: from, live: false, closed: false };
    if (this.closed) {
      void subscriber.end('the server is shutting down');
      return () => undefined;
    }
    this.subscriptions.add(subscription);
    void this.catchUp(subscription);
    this.wake();
    return () => this.drop(subscription);
  }

  get subscriberCount(): number {
    return this.subscriptions.size;
  }

  private drop(subscription: Subscription): void {
    subscription.closed = true;
    this.subscriptions.delete(subscription);
  }

  private async catchUp(subscription: Subscription): Promise<void> {
    try {
      while (!subscription.closed && !this.closed) {
        const upTo = this.cursor;
        if (upTo === undefined) {
          await this.advanced.wait;
          continue;
        }
        // Caught up (or ahead, when the client's last event came from a server further on):
        // join the live feed now, before the reader can fan out anything more.
        if (comparePositions(subscription.position, upTo) >= 0) {
          subscription.live = true;
          return;
        }
        const page = await events.readRange(this.db, subscription.position, upTo, subscription.subscriber.filter, this.options.pageSize);
        if (subscription.closed) return;
        if (page.length > 0 && !subscription.subscriber.deliver(page)) {
          this.drop(subscription);
          return;
        }
        subscription.position = page.length === this.options.pageSize ? page.at(-1)!.position : upTo;
      }
    } catch (error) {
      this.log.warn({ err: error }, 'an event stream could not read its backlog; it is closed and the client resumes');
      this.drop(subscription);
      await subscription.subscriber.end('the event store is unavailable; reconnect to resume');
    }
  }

  /** Asks the reader for a round; one runs at a time, and a wake during one starts another after it. */
  wake(): void {
    if (this.closed) return;
    if (this.reading) {
      this.again = true;
      return;
    }
    this.reading = true;
    this.idle = this.readLoop().finally(() => {
      this.reading = false;
    });
  }

  private async readLoop(): Promise<void> {
    do {
      this.again = false;
      try {
        await this.read();
      } catch (error) {
        // The next notification or poll tries again.
        this.log.warn({ err: error }, 'could not read the event outbox');
      }
    } while (this.again && !this.closed);
  }

  private async read(): Promise<void> {
    if (this.subscriptions.size === 0) {
      // Nobody to feed: forget the cursor; the next subscriber starts the reader at the head.
      this.cursor = undefined;
      return;
    }
    if (this.cursor === undefined) {
      // No one is live yet (the cursor is only forgotten when no one subscribes).
      this.cursor = await events.streamHead(this.db);
      this.fireAdvanced();
    }
    for (;;) {
      const rows = await events.readAfter(this.db, this.cursor!, this.options.pageSize);
      const settled: StreamedEvent[] = [];
      for (const row of rows) {
        if (!row.settled) break;
        settled.push(row.event);
      }
      if (settled.length > 0) this.advance(settled.at(-1)!.position, settled);
      if (settled.length < rows.length) {
        // Committed events wait behind an open transaction that may still add earlier ones.
        // Look again soon, since that transaction may end without writing any event (and so
        // without a notification).
        this.scheduleSettleCheck();
        return;
      }
      this.settleDelayMs = 0;
      if (rows.length < this.options.pageSize || this.closed || this.subscriptions.size === 0) return;
    }
  }

  private scheduleSettleCheck(): void {
    if (this.settleTimer) return;
    // Soon, then less often, but never far behind: open transactions are normally short.
    this.settleDelayMs = Math.min(this.options.pollIntervalMs, settleCheckMaxMs, Math.max(5, this.settleDelayMs * 2));
    this.settleTimer = setTimeout(() => {
      this.settleTimer = undefined;
      this.wake();
    }, this.settleDelayMs);
    this.settleTimer.unref();
  }

  /** Moves the cursor and hands the events to the live subscribers, in one synchronous step. */
  private advance(to: StreamPosition, batch: StreamedEvent[]): void {
    this.cursor = this.cursor === undefined ? to : laterPosition(this.cursor, to);
    for (const subscription of [...this.subscriptions]) {
      if (!subscription.live || subscription.closed) continue;
      const after = subscription.position;
      const fresh = batch.filter((event) => comparePositions(event.position, after) > 0 && matchesFilter(subscription.subscriber.filter, event));
      subscription.position = laterPosition(after, to);
      if (fresh.length > 0 && !subscription.subscriber.deliver(fresh)) this.drop(subscription);
    }
    this.fireAdvanced();
  }

  private fireAdvanced(): void {
    this.advanced.fire();
    this.advanced = signal();
  }

  /**
   * Ends every stream (clients reconnect, to this server or another) and stops reading.
   * Streams get a moment to flush their last bytes.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pollTimer);
    clearTimeout(this.settleTimer);
    this.advanced.fire();
    const ending = [...this.subscriptions].map((subscription) => {
      this.drop(subscription);
      return subscription.subscriber.end('the server is shutting down; reconnect to resume');
    });
    const flushed = Promise.all(ending);
    let timer: NodeJS.Timeout | undefined;
    const cut = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.options.shutdownGraceMs);
    });
    // Streams still not flushed by then are cut with the connections.
    await Promise.all([Promise.race([flushed, cut]), this.listener.close(), this.idle]);
    clearTimeout(timer);
  }
}

function signal(): { wait: Promise<void>; fire: () => void } {
  let fire: () => void = () => undefined;
  const wait = new Promise<void>((resolve) => {
    fire = resolve;
  });
  return { wait, fire };
}
