/**
 * What Postgres's client backends are doing during a load window, sampled from
 * pg_stat_activity: on CPU, waiting for a lock, for the WAL to reach the disk, or for the
 * service holding a transaction open, by the application (duplex-server-A, …) each backend
 * serves. The average number of backends in each state says
 * where a commit's time goes (a lock that every commit takes shows up as `Lock: object`).
 */
import type { Database } from '@duplex/shared';
import { readStatements, resetStatements, type StatementProfile } from './pg-statements.ts';

export interface WaitShare {
  /** `application: state / wait_event_type: wait_event` (`… / on CPU` when it waits for nothing). */
  what: string;
  /** Backends in that state, on average over the samples. */
  backends: number;
}

/** What Postgres did in a window: the sampled waits, and the statement profile when asked for. */
export interface PostgresActivity {
  samples: number;
  waits: WaitShare[];
  statements?: StatementProfile;
}

interface Row {
  application_name: string;
  state: string;
  wait_event_type: string | null;
  wait_event: string | null;
  count: number;
}

export class WaitSampler {
  private readonly counts = new Map<string, number>();
  private samples = 0;
  private timer: NodeJS.Timeout | undefined;
  private sampling: Promise<void> = Promise.resolve();
  private stopped = false;

  private statements = false;

  constructor(
    private readonly db: Database,
    private readonly intervalMs = 100,
  ) {}

  /** Starts sampling; with `statements`, also clears pg_stat_statements to profile the window. */
  async start(options: { statements?: boolean } = {}): Promise<void> {
    if (options.statements) this.statements = await resetStatements(this.db);
    const tick = (): void => {
      if (this.stopped) return;
      this.sampling = this.sample().finally(() => {
        if (!this.stopped) this.timer = setTimeout(tick, this.intervalMs);
      });
    };
    tick();
  }

  private async sample(): Promise<void> {
    try {
      const { rows } = await this.db.raw<{ rows: Row[] }>(
        `select application_name, state, wait_event_type, wait_event, count(*)::int as count
           from pg_stat_activity
          where backend_type = 'client backend' and pid <> pg_backend_pid() and state <> 'idle'
          group by 1, 2, 3, 4`,
      );
      // Which lock the lock waits are for (NOTIFY's commit lock is an object lock on pg_database).
      const { rows: locks } = await this.db.raw<{ rows: { lock: string; count: number }[] }>(
        `select locktype || coalesce(' ' || classid::regclass::text, '') || ' ' || mode as lock, count(*)::int as count
           from pg_locks where not granted group by 1`,
      );
      this.samples += 1;
      for (const row of rows) {
        const what = `${row.application_name || '?'}: ${row.state} / ${row.wait_event_type ? `${row.wait_event_type}: ${row.wait_event ?? '?'}` : 'on CPU'}`;
        this.counts.set(what, (this.counts.get(what) ?? 0) + row.count);
      }
      for (const row of locks) {
        const what = `(of the lock waits: ${row.lock})`;
        this.counts.set(what, (this.counts.get(what) ?? 0) + row.count);
      }
    } catch {
      // A missed sample only makes the average rougher.
    }
  }

  async stop(): Promise<PostgresActivity> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.sampling;
    const statements = this.statements ? await readStatements(this.db) : undefined;
    const waits = [...this.counts]
      .map(([what, total]) => ({ what, backends: this.samples > 0 ? total / this.samples : 0 }))
      .sort((a, b) => b.backends - a.backends);
    return { samples: this.samples, waits, ...(statements ? { statements } : {}) };
  }
}
