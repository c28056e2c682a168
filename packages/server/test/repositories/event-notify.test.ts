import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createTestDatabase, type TestDatabase } from '@duplex/testkit';
import pg from 'pg';
import { acceptSubmissions } from '../../src/repositories/submissions.ts';
import { findTask, notifyEventsCommitted, recordTransitions } from '../../src/repositories/tasks.ts';
import { insertServer, insertTask } from './rows.ts';

describe('waking the event feeds after the commit', () => {
  let database: TestDatabase;
  let listener: pg.Client;
  const received: string[] = [];

  before(async () => {
    database = await createTestDatabase();
    listener = new pg.Client({ connectionString: database.url });
    await listener.connect();
    listener.on('notification', (message) => received.push(message.channel));
    await listener.query('listen duplex_events');
    await insertServer(database.db, 'A', 10_000);
    await insertTask(database.db, 't1', 'A', 'dispatched', null);
  });
  after(async () => {
    await listener.end();
    await database.drop();
  });

  /** Notifications are delivered after their commit; a round trip on the listener's connection takes any that are. */
  const drain = async (): Promise<string[]> => {
    await listener.query('select 1');
    return received.splice(0);
  };

  it('notifies from the outbox trigger, unless the writer notifies after its commit', async () => {
    const row = (await findTask(database.db, 't1'))!;
    await database.db.transaction((trx) => recordTransitions(trx, [row]));
    assert.deepEqual(await drain(), ['duplex_events']);

    await database.db.transaction((trx) => recordTransitions(trx, [row], { notifyAfterCommit: true }));
    assert.deepEqual(await drain(), [], 'the trigger stays quiet for that transaction');
    const events = await database.db('events').where({ task_id: 't1' }).count<{ count: string }[]>('* as count');
    assert.equal(Number(events[0]!.count), 2, 'both transactions wrote their events');

    await Promise.all([notifyEventsCommitted(database.db), notifyEventsCommitted(database.db), notifyEventsCommitted(database.db)]);
    const woken = await drain();
    assert.ok(woken.length >= 1 && woken.length <= 2, `calls made together share their notifications (${woken.length})`);

    // The setting was the transaction's own: the next writer on any connection notifies again.
    await database.db.transaction((trx) => recordTransitions(trx, [row]));
    assert.deepEqual(await drain(), ['duplex_events']);
  });

  it('accepts submissions without notifying from inside their statement', async () => {
    const task = { id: 't-sub', idempotency_key: 'k-sub', request_hash: 'h', request_id: null, traceparent: null, kind: 'device.probe' as const, storage_system_id: 'ss1', device: 'd0', params: {}, server_id: 'A' };
    const { accepted } = await acceptSubmissions(database.db, [{ task, effect: {} }]);
    assert.deepEqual(accepted.map((row) => row.id), ['t-sub']);
    assert.deepEqual(await drain(), [], 'the caller wakes the feeds after the commit');
    const events = await database.db('events').where({ task_id: 't-sub' }).select('type');
    assert.deepEqual(events, [{ type: 'task.state_changed' }]);
  });
});
