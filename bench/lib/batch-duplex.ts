/**
 * duplex's bulk endpoint under the batch load: `POST /v1/tasks:batch` to both servers in turn
 * (client c to server c mod 2), and afterwards a count in Postgres that the store holds exactly
 * the tasks the answers accepted: none lost, none made twice, none made without an answer.
 */
import type { ServerApi } from '@duplex/contracts';
import type { Database } from '@duplex/shared';
import { bearer, testAdminToken } from '@duplex/testkit';
import { Pool } from 'undici';
import type { BatchAnswer } from './batch-clients.ts';
import { batchOf, type BatchShape } from './batch-tasks.ts';

type TaskBatch = ServerApi.components['schemas']['TaskBatch'];
type TaskBatchResult = ServerApi.components['schemas']['TaskBatchResult'];

/** A batch of 1,000 takes seconds on a loaded machine; only a stuck server should hit this. */
const batchTimeoutMs = 120_000;

export class DuplexBatchSubmitter {
  private readonly pools: Pool[];
  /** The id of every task an answer accepted, over the whole run. */
  readonly acceptedIds = new Set<string>();
  /** Items answered `replayed` (none should be: every batch has a fresh key). */
  replayed = 0;

  constructor(
    serverUrls: readonly string[],
    clients: number,
    private readonly shape: BatchShape,
  ) {
    const perServer = Math.ceil(clients / serverUrls.length);
    this.pools = serverUrls.map((url) => new Pool(url, { connections: perServer, keepAliveTimeout: 30_000 }));
  }

  readonly send = async (client: number, sequence: number, signal: AbortSignal): Promise<BatchAnswer> => {
    const { key, tasks } = batchOf(this.shape, client, sequence);
    const body: TaskBatch = { tasks };
    const pool = this.pools[client % this.pools.length]!;
    const response = await pool.request({
      method: 'POST',
      path: '/v1/tasks:batch',
      headers: { 'content-type': 'application/json', accept: 'application/json', 'idempotency-key': key, ...bearer(testAdminToken) },
      body: JSON.stringify(body),
      headersTimeout: batchTimeoutMs,
      bodyTimeout: batchTimeoutMs,
      signal,
    });
    const text = await response.body.text();
    if (response.statusCode !== 200) return { accepted: 0, refused: 0, error: `${response.statusCode}: ${problemText(text)}` };
    const result = JSON.parse(text) as TaskBatchResult;
    const refusals: string[] = [];
    for (const item of result.results) {
      if (item.status === 202 && item.task && !item.replayed) this.acceptedIds.add(item.task.id);
      else if (item.status !== 202) refusals.push(`${item.status} ${item.problem?.title ?? '?'}: ${item.problem?.detail ?? ''}`);
    }
    this.replayed += result.replayed;
    if (result.results.length !== tasks.length) return { accepted: result.accepted, refused: result.refused, refusals, error: `${result.results.length} results for ${tasks.length} tasks` };
    return { accepted: result.accepted, refused: result.refused, refusals, error: null };
  };

  async close(): Promise<void> {
    await Promise.all(this.pools.map((pool) => pool.close()));
  }
}

function problemText(text: string): string {
  try {
    const problem = JSON.parse(text) as { title?: string; detail?: string };
    return problem.detail ?? problem.title ?? text.slice(0, 200);
  } catch {
    return text.slice(0, 200);
  }
}

export interface StoreCheck {
  /** Tasks of the run that Postgres holds. */
  tasks_in_store: number;
  /** Tasks the answers accepted. */
  accepted_answered: number;
  /** Accepted in an answer but not in the store. */
  lost: number;
  /** Volumes with more than one task creating them: a task made twice. */
  doubled: number;
  /** In the store but in no answer (a batch abandoned after it committed would leave these). */
  unanswered: number;
  /** Catalog rows the run's tasks reserved; one per task. */
  volumes_in_catalog: number;
  /** The run's tasks by state when the check ran: how far the dispatcher got. */
  states: Record<string, number>;
}

/** Compares the run's tasks in Postgres with the ids the answers accepted. */
export async function checkStore(db: Database, prefix: string, acceptedIds: ReadonlySet<string>): Promise<StoreCheck> {
  const pattern = `${prefix.replace(/[\\%_]/g, '\\$&')}-%`;
  const { rows } = await db.raw<{ rows: { id: string; name: string; state: string }[] }>(`select id, params->>'name' as name, state from tasks where params->>'name' like ?`, [pattern]);
  const names = new Set(rows.map((row) => row.name));
  const stored = new Set(rows.map((row) => row.id));
  const states: Record<string, number> = {};
  for (const row of rows) states[row.state] = (states[row.state] ?? 0) + 1;
  const [volumes] = await db('volumes').where('name', 'like', pattern).count({ count: '*' });
  return {
    tasks_in_store: rows.length,
    accepted_answered: acceptedIds.size,
    lost: [...acceptedIds].filter((id) => !stored.has(id)).length,
    doubled: rows.length - names.size,
    unanswered: rows.filter((row) => !acceptedIds.has(row.id)).length,
    volumes_in_catalog: Number(volumes?.count ?? 0),
    states,
  };
}
