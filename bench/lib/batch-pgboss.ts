/**
 * The peer of the batch benchmark: pg-boss 10, which issue 5 names ("enqueues 3.1k/s and works
 * up to 8k/s with batches of 1,000"). Each batch is one `insert()` of the batch's tasks as job
 * data (one INSERT … SELECT from json_to_recordset, one implicit transaction). pg-boss gets a
 * scratch database of its own in the topology's Postgres, its pool one connection per client,
 * and no maintenance or scheduling, so only the enqueue path runs.
 */
import PgBoss from 'pg-boss';
import type { BatchAnswer } from './batch-clients.ts';
import { batchOf, type BatchShape } from './batch-tasks.ts';
import { createScratchDatabase, type ScratchDatabase } from './postgres.ts';

const queue = 'duplex-batch';

export class PgBossPeer {
  /** Jobs pg-boss said it inserted, over the whole run. */
  committed = 0;

  private constructor(
    private readonly boss: PgBoss,
    private readonly scratch: ScratchDatabase,
    private readonly shape: BatchShape,
    /** Dropping the scratch database ends pg-boss's connections; what it reports then is expected. */
    private readonly state: { closing: boolean },
  ) {}

  static async open(adminUrl: string, clients: number, shape: BatchShape, log: (line: string) => void): Promise<PgBossPeer> {
    const scratch = await createScratchDatabase(adminUrl, 'pgboss', 1);
    try {
      const boss = new PgBoss({ connectionString: scratch.url, max: clients, application_name: 'bench-pg-boss', supervise: false, schedule: false });
      const state = { closing: false };
      boss.on('error', (error: Error) => {
        if (!state.closing) log(`pg-boss: ${error.message}`);
      });
      await boss.start();
      await boss.createQueue(queue);
      return new PgBossPeer(boss, scratch, shape, state);
    } catch (error) {
      await scratch.drop().catch(() => undefined);
      throw error;
    }
  }

  readonly send = async (client: number, sequence: number): Promise<BatchAnswer> => {
    const { tasks } = batchOf(this.shape, client, sequence);
    try {
      // insert() resolves with nothing; a failure rejects, and then no job of the batch exists.
      await this.boss.insert(tasks.map((task) => ({ name: queue, data: task })));
      this.committed += tasks.length;
      return { accepted: tasks.length, refused: 0, error: null };
    } catch (error) {
      return { accepted: 0, refused: 0, error: (error as Error).message };
    }
  };

  /** Jobs in pg-boss's table: must equal what the peer counted as committed. */
  async jobsInStore(): Promise<number> {
    const { rows } = await this.scratch.db.raw<{ rows: { count: number }[] }>(`select count(*)::int as count from pgboss.job where name = ?`, [queue]);
    return rows[0]?.count ?? 0;
  }

  async close(): Promise<void> {
    this.state.closing = true;
    await this.boss.stop({ graceful: false, wait: true }).catch(() => undefined);
    await this.scratch.drop().catch(() => undefined);
  }
}
