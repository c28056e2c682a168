/**
 * The floor of the batch benchmark: what "one batch = one transaction" costs here with nothing
 * else, a bare multi-row INSERT of the batch's tasks through node-postgres, one transaction per
 * batch, one connection per client. The rows go to a scratch table made `like tasks` in the
 * topology's own database, so they have the task table's columns, keys and indexes as the
 * migrations make them today, and the ids are made by the server's own generator. What duplex
 * does beyond it (HTTP, validation, the idempotency look-up, the volume catalog, the history,
 * the events, the answer) is duplex's cost.
 */
import pg from 'pg';
import { taskIdGenerator } from '../../packages/server/src/lib/ids.ts';
import type { BatchAnswer } from './batch-clients.ts';
import { batchOf, type BatchShape } from './batch-tasks.ts';

const table = 'bench_batch_floor';
/** The columns a submission fills; the others keep their defaults, as for a queued task. */
const columns = ['id', 'idempotency_key', 'request_hash', 'request_id', 'traceparent', 'kind', 'storage_system_id', 'device', 'params', 'server_id', 'state'];
/** The length of a SHA-256 in hex, as duplex stores a request's hash. */
const requestHash = 'f'.repeat(64);

export class InsertFloor {
  private readonly newId = taskIdGenerator();
  private readonly statements = new Map<number, string>();
  /** Rows the floor committed, over the whole run. */
  committed = 0;

  private constructor(
    private readonly connections: pg.Client[],
    private readonly shape: BatchShape,
  ) {}

  /** Makes the scratch table and opens one connection per client. */
  static async open(databaseUrl: string, clients: number, shape: BatchShape): Promise<InsertFloor> {
    const admin = new pg.Client({ connectionString: databaseUrl, application_name: 'bench-batch-floor' });
    await admin.connect();
    try {
      await admin.query(`drop table if exists ${table}`);
      await admin.query(`create table ${table} (like tasks including defaults including constraints including indexes)`);
    } finally {
      await admin.end();
    }
    const connections = Array.from({ length: clients }, () => new pg.Client({ connectionString: databaseUrl, application_name: 'bench-batch-floor' }));
    await Promise.all(connections.map((connection) => connection.connect()));
    return new InsertFloor(connections, shape);
  }

  private statement(rows: number): string {
    let text = this.statements.get(rows);
    if (!text) {
      const tuples = Array.from({ length: rows }, (_, row) => `(${columns.map((_, column) => `$${row * columns.length + column + 1}`).join(', ')})`);
      text = `insert into ${table} (${columns.join(', ')}) values ${tuples.join(', ')}`;
      this.statements.set(rows, text);
    }
    return text;
  }

  readonly send = async (client: number, sequence: number): Promise<BatchAnswer> => {
    const connection = this.connections[client]!;
    const { key, tasks } = batchOf(this.shape, client, sequence);
    const values = tasks.flatMap((task, index) => [this.newId(), `${key}/${index}`, requestHash, `req-${key}`, null, task.kind, task.storage_system_id, task.device, JSON.stringify(task.params), 'A', 'queued']);
    try {
      await connection.query('begin');
      const result = await connection.query(this.statement(tasks.length), values);
      await connection.query('commit');
      this.committed += result.rowCount ?? 0;
      return { accepted: result.rowCount ?? 0, refused: 0, error: null };
    } catch (error) {
      await connection.query('rollback').catch(() => undefined);
      return { accepted: 0, refused: 0, error: (error as Error).message };
    }
  };

  /** Rows in the scratch table: must equal what the floor counted as committed. */
  async rowsInStore(): Promise<number> {
    const { rows } = await this.connections[0]!.query<{ count: number }>(`select count(*)::int as count from ${table}`);
    return rows[0]?.count ?? 0;
  }

  /** Closes the connections and drops the scratch table. */
  async close(): Promise<void> {
    const [first, ...others] = this.connections;
    await Promise.all(others.map((connection) => connection.end().catch(() => undefined)));
    if (first) {
      await first.query(`drop table if exists ${table}`).catch(() => undefined);
      await first.end().catch(() => undefined);
    }
  }
}
