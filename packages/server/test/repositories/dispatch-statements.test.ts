import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Queryable } from '@duplex/shared';
import { createTestDatabase, type TestDatabase } from '@duplex/testkit';
import { applyStateReports, failQueuedTasks, lockQueuedTasks, markDispatched, requeueAttempts } from '../../src/repositories/tasks.ts';

const queued = 20_000;

/**
 * What this transaction has read of `tasks` so far, as Postgres counts it: entries of each
 * index, and rows of whole-table scans.
 */
async function tasksReads(trx: Queryable): Promise<Record<string, number>> {
  const { rows } = await trx.raw<{ rows: { index: string; read: string }[] }>(
    `select i.relname as index, pg_stat_get_xact_tuples_returned(i.oid) as read
       from pg_index x join pg_class i on i.oid = x.indexrelid where x.indrelid = 'tasks'::regclass
     union all
     select 'table scans', pg_stat_get_xact_tuples_returned('tasks'::regclass)`,
  );
  return Object.fromEntries(rows.map((row) => [row.index, Number(row.read)]));
}

/** Between two counts, the statements read primary-key entries and nothing else of `tasks`. */
function assertReadByKeyOnly(from: Record<string, number>, to: Record<string, number>, what: string): void {
  assert.ok((to.tasks_pkey ?? 0) > (from.tasks_pkey ?? 0), `${what}: found by the key`);
  for (const [index, count] of Object.entries(to)) {
    if (index !== 'tasks_pkey') assert.equal(count - (from[index] ?? 0), 0, `${index}: read while ${what}`);
  }
}

describe('the statements of a task round trip, on a long queue', () => {
  let database: TestDatabase;

  before(async () => {
    database = await createTestDatabase();
    // A queue that grew faster than the statistics: nothing has analyzed the table since it was empty.
    await database.db.raw(
      `insert into tasks (id, request_hash, kind, storage_system_id, device, params, state, server_id)
       select 'tsk_' || lpad(n::text, 8, '0'), 'h', 'device.probe', 'ss1', 'd0', '{}', 'queued', 'A' from generate_series(1, ?) as n`,
      [queued],
    );
  });
  after(() => database.drop());

  it('claim, mark and settle a round by reading its tasks, not the queue', async () => {
    await database.db.transaction(async (trx) => {
      const claimed = await lockQueuedTasks(trx, 'A', 30);
      assert.equal(claimed.length, 30);
      const before = await tasksReads(trx);
      const marked = await markDispatched(trx, claimed.map((task) => ({ id: task.id, agent_id: 'agent-1', cluster_id: 'c0' })));
      const reads = await tasksReads(trx);
      assert.deepEqual(marked.map((row) => [row.id, row.state, row.attempt]).sort(), claimed.map((task) => [task.id, 'dispatched', 1]).sort());
      assertReadByKeyOnly(before, reads, 'marking');
      assert.ok((reads.tasks_queued_by_server ?? 0) <= 100, `the claim read ${reads.tasks_queued_by_server} queued entries for 30 tasks`);

      // The agent's reports on them: 20 end, 10 are refused and go back to the queue.
      const reportsFrom = await tasksReads(trx);
      const ended = await applyStateReports(trx, 'agent-1', marked.slice(0, 20).map((row) => ({ task_id: row.id, fencing_token: row.fencing_token!, state: 'succeeded' as const, result: {} })));
      const requeued = await requeueAttempts(trx, marked.slice(20).map((row) => ({ id: row.id, fencing_token: row.fencing_token! })), 'agent-1');
      const reportReads = await tasksReads(trx);
      assert.deepEqual([ended.length, requeued.length], [20, 10]);
      assertReadByKeyOnly(reportsFrom, reportReads, 'applying reports');

      // Tasks for a device out of service fail in the round that claims them.
      const doomed = await lockQueuedTasks(trx, 'A', 5);
      const failingFrom = await tasksReads(trx);
      const failed = await failQueuedTasks(trx, doomed.map((task) => ({ id: task.id, error: { type: 'urn:duplex:problem:device-unavailable', title: 'Device unavailable', status: 409 } })));
      const failingReads = await tasksReads(trx);
      assert.deepEqual(failed.map((row) => row.state), ['failed', 'failed', 'failed', 'failed', 'failed']);
      assertReadByKeyOnly(failingFrom, failingReads, 'failing tasks');
    });
  });
});
