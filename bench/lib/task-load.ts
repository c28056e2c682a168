/**
 * Load of real tasks on a running topology: a stream of distinct `volume.create` requests
 * spread over both servers and every device, a submitter that keeps many requests on the
 * wire at once, and a watcher that learns from Postgres when tasks end (the harness's
 * database is the task store; `finished_at` is written by Postgres on this machine's clock).
 */
import type { Database } from '@duplex/shared';
import { bearer, testAdminToken } from '@duplex/testkit';
import { Pool } from 'undici';

export const storageSystemId = 'ss1';

/** Small enough that no device fills up in any run; the harness gives each device `deviceCapacityBytes`. */
export const volumeSizeBytes = 4_096;
export const deviceCapacityBytes = 1024 ** 4;

export interface TaskToSubmit {
  /** Index into the submitter's servers. */
  server: number;
  idempotencyKey: string;
  /** The JSON body of POST /v1/tasks. */
  body: string;
}

/**
 * Distinct `volume.create` requests: the n-th goes to server n mod 2 and to the devices in
 * turn, so that each server sends work to every device and both clusters.
 */
export class TaskFeed {
  private sequence = 0;

  constructor(
    private readonly prefix: string,
    private readonly devices: readonly string[],
    private readonly servers: number,
  ) {}

  get issued(): number {
    return this.sequence;
  }

  next(): TaskToSubmit {
    const n = this.sequence;
    this.sequence += 1;
    const name = `${this.prefix}-${n}`;
    const device = this.devices[Math.floor(n / this.servers) % this.devices.length]!;
    return {
      server: n % this.servers,
      idempotencyKey: name,
      body: JSON.stringify({ kind: 'volume.create', storage_system_id: storageSystemId, device, params: { name, size_bytes: volumeSizeBytes } }),
    };
  }
}

export interface SubmitAnswer {
  /** The server answered 202 with a task. */
  ok: boolean;
  status: number | null;
  taskId: string | null;
  /** Why it is not ok: the status and problem title, or the transport error. */
  error: string | null;
}

/** POST /v1/tasks over keep-alive connections, up to `connectionsPerServer` at once to each server. */
export class TaskSubmitter {
  private readonly pools: Pool[];

  constructor(serverUrls: readonly string[], connectionsPerServer: number) {
    this.pools = serverUrls.map((url) => new Pool(url, { connections: connectionsPerServer, keepAliveTimeout: 30_000 }));
  }

  /** `signal` abandons the request (the answer is then an error). */
  async submit(task: TaskToSubmit, signal?: AbortSignal): Promise<SubmitAnswer> {
    const pool = this.pools[task.server];
    if (!pool) throw new Error(`no server ${task.server}`);
    try {
      const response = await pool.request({
        method: 'POST',
        path: '/v1/tasks',
        headers: { 'content-type': 'application/json', accept: 'application/json', 'idempotency-key': task.idempotencyKey, ...bearer(testAdminToken) },
        body: task.body,
        headersTimeout: 30_000,
        bodyTimeout: 30_000,
        ...(signal ? { signal } : {}),
      });
      const text = await response.body.text();
      if (response.statusCode !== 202) {
        let title = text.slice(0, 200);
        try {
          const problem = JSON.parse(text) as { title?: string; detail?: string };
          title = problem.detail ?? problem.title ?? title;
        } catch {
          // not JSON: keep the text
        }
        return { ok: false, status: response.statusCode, taskId: null, error: `${response.statusCode}: ${title}` };
      }
      const created = JSON.parse(text) as { id?: unknown };
      if (typeof created.id !== 'string') return { ok: false, status: 202, taskId: null, error: '202 without a task id' };
      return { ok: true, status: 202, taskId: created.id, error: null };
    } catch (error) {
      return { ok: false, status: null, taskId: null, error: (error as Error).message };
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.pools.map((pool) => pool.close()));
  }
}

export type FinalState = 'succeeded' | 'failed' | 'cancelled';
const finalStates: readonly FinalState[] = ['succeeded', 'failed', 'cancelled'];

/**
 * Tells when watched tasks reach a final state, by reading the event outbox as the servers'
 * event feeds do: every `intervalMs`, the `task.state_changed` events after the last one read,
 * in stream order and only up to the snapshot's horizon (see the event_stream migration), so
 * none is skipped. Its cost follows the events written, not the tasks watched. (Asking for
 * every watched task at each poll, with `id = any(ids)`, made the planner read the whole tasks
 * table: at 2,048 tasks in flight and a poll every 10 ms, the watcher's queries took a large
 * share of the Postgres CPU the run charged to duplex.) The interval only decides when a
 * worker submits its next task; the figures come from the times Postgres recorded.
 */
export class CompletionWatcher {
  private readonly waiting = new Map<string, (state: FinalState | 'abandoned') => void>();
  /** Tasks that ended before anyone waited for them (a task can end before its submit is answered). */
  private readonly ended = new Map<string, FinalState>();
  private position: { xid: string; id: string } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Polls that failed (the database was busy or gone); the watcher keeps trying. */
  errors = 0;
  lastError: string | null = null;

  private constructor(
    private readonly db: Database,
    private readonly intervalMs: number,
  ) {}

  /** A watcher of the tasks that end from now on. */
  static async start(db: Database, intervalMs = 25): Promise<CompletionWatcher> {
    const watcher = new CompletionWatcher(db, intervalMs);
    const { rows } = await db.raw<{ rows: { xid: string; id: string }[] }>(
      `select stream_xid::text as xid, id::text as id from events
        where stream_xid < pg_snapshot_xmin(pg_current_snapshot()) order by stream_xid desc, id desc limit 1`,
    );
    watcher.position = rows[0] ?? { xid: '0', id: '0' };
    watcher.timer = setTimeout(() => void watcher.poll(), intervalMs);
    return watcher;
  }

  wait(taskId: string): Promise<FinalState | 'abandoned'> {
    const state = this.ended.get(taskId);
    if (state) {
      this.ended.delete(taskId);
      return Promise.resolve(state);
    }
    if (this.stopped) return Promise.resolve('abandoned');
    return new Promise((resolve) => this.waiting.set(taskId, resolve));
  }

  get watched(): number {
    return this.waiting.size;
  }

  private async poll(): Promise<void> {
    try {
      let read: number;
      do {
        const { rows } = await this.db.raw<{ rows: { xid: string; id: string; task_id: string; state: string }[] }>(
          `select stream_xid::text as xid, id::text as id, task_id, payload->>'state' as state from events
            where (stream_xid, id) > (?::xid8, ?::bigint) and stream_xid < pg_snapshot_xmin(pg_current_snapshot())
              and type = 'task.state_changed'
            order by stream_xid, id limit 5000`,
          [this.position!.xid, this.position!.id],
        );
        read = rows.length;
        for (const row of rows) {
          this.position = { xid: row.xid, id: row.id };
          if (!row.task_id || !finalStates.includes(row.state as FinalState)) continue;
          const resolve = this.waiting.get(row.task_id);
          if (resolve) {
            this.waiting.delete(row.task_id);
            resolve(row.state as FinalState);
          } else this.ended.set(row.task_id, row.state as FinalState);
        }
      } while (read === 5000 && !this.stopped);
    } catch (error) {
      this.errors += 1;
      this.lastError = (error as Error).message;
    } finally {
      if (!this.stopped) this.timer = setTimeout(() => void this.poll(), this.intervalMs);
    }
  }

  /** Stops watching: every task still watched is answered 'abandoned'. */
  abandon(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    for (const resolve of this.waiting.values()) resolve('abandoned');
    this.waiting.clear();
  }
}

export interface TaskEnd {
  id: string;
  state: string;
  /** Date.now() scale, with Postgres's microseconds kept. */
  created_ms: number;
  finished_ms: number | null;
}

/** The state and times of the given tasks, read in chunks. */
export async function taskEnds(db: Database, ids: readonly string[]): Promise<TaskEnd[]> {
  const ends: TaskEnd[] = [];
  for (let start = 0; start < ids.length; start += 5_000) {
    const chunk = ids.slice(start, start + 5_000);
    const { rows } = await db.raw<{ rows: { id: string; state: string; created_ms: string; finished_ms: string | null }[] }>(
      `select id, state, extract(epoch from created_at) * 1000 as created_ms, extract(epoch from finished_at) * 1000 as finished_ms
         from tasks where id = any(?::text[])`,
      [chunk],
    );
    for (const row of rows) {
      ends.push({ id: row.id, state: row.state, created_ms: Number(row.created_ms), finished_ms: row.finished_ms === null ? null : Number(row.finished_ms) });
    }
  }
  return ends;
}

/**
 * Waits until every task in `ids` has ended, or `timeoutMs` has passed, asking Postgres every
 * `intervalMs` about the tasks still open; returns what it last saw of each task.
 */
export async function settleTasks(db: Database, ids: readonly string[], timeoutMs: number, intervalMs = 250): Promise<Map<string, TaskEnd>> {
  const seen = new Map<string, TaskEnd>();
  let open = [...ids];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const end of await taskEnds(db, open)) seen.set(end.id, end);
    open = open.filter((id) => !(finalStates as readonly string[]).includes(seen.get(id)?.state ?? ''));
    if (open.length === 0 || Date.now() >= deadline) return seen;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/**
 * Waits until the topology has no open task and has taken no new one for `intervalMs` (a
 * submit the generator gave up on may still be committed later), or `timeoutMs` has passed;
 * returns whether it got quiet.
 */
export async function waitForQuiet(db: Database, timeoutMs: number, intervalMs = 250): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let lastTotal = -1;
  for (;;) {
    const [row] = await db('tasks').select(db.raw(`count(*) filter (where state in ('queued', 'dispatched', 'running'))::int as open`), db.raw('count(*)::int as total'));
    const { open, total } = row as { open: number; total: number };
    if (open === 0 && total === lastTotal) return true;
    if (Date.now() >= deadline) return false;
    lastTotal = total;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
