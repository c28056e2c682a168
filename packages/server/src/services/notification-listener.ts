import { backoffDelayMs } from '@duplex/shared';
import type { FastifyBaseLogger } from 'fastify';
import pg from 'pg';

export interface NotificationListenerOptions {
  connectionString: string;
  applicationName: string;
  channel: string;
  log: FastifyBaseLogger;
  /** A notification arrived. */
  onNotification: () => void;
  /** The connection is (again) listening; notifications sent while it was not are lost. */
  onListening: () => void;
}

/**
 * One dedicated Postgres connection that LISTENs on a channel, outside the pool (a pooled
 * connection would be handed to queries and lose the LISTEN). It reconnects with backoff when
 * the connection is lost; the caller must not rely on it alone, since a notification sent
 * while it is down is never delivered.
 */
export class NotificationListener {
  private client: pg.Client | undefined;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly options: NotificationListenerOptions) {}

  start(): void {
    void this.connect();
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({ connectionString: this.options.connectionString, application_name: this.options.applicationName, keepAlive: true });
    let lost = false;
    const onLost = (error?: Error) => {
      if (lost) return;
      lost = true;
      if (this.client === client) this.client = undefined;
      client.removeAllListeners('notification');
      // A client that failed may still hold a socket; end it quietly.
      client.end().catch(() => undefined);
      if (this.closed) return;
      this.options.log.warn({ err: error }, 'the event notification connection was lost; reconnecting');
      this.scheduleReconnect();
    };
    client.on('error', onLost);
    client.on('end', () => onLost());
    client.on('notification', () => this.options.onNotification());
    try {
      await client.connect();
      await client.query(`listen ${client.escapeIdentifier(this.options.channel)}`);
    } catch (error) {
      onLost(error as Error);
      return;
    }
    if (this.closed || lost) {
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
    this.attempt = 0;
    this.options.onListening();
  }

  private scheduleReconnect(): void {
    const delay = backoffDelayMs(this.attempt, 100, 5_000);
    this.attempt += 1;
    this.retryTimer = setTimeout(() => void this.connect(), delay);
    this.retryTimer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    const client = this.client;
    this.client = undefined;
    if (client) await client.end().catch(() => undefined);
  }
}
