import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { createTestDatabase, type TestDatabase } from '@duplex/testkit';
import { findFailoverWork } from '../../src/repositories/failover.ts';
import { insertAgent, insertServer, insertTask } from './rows.ts';

const seconds = (n: number) => n * 1_000;

describe('findFailoverWork', () => {
  let database: TestDatabase;

  before(async () => {
    database = await createTestDatabase();
  });
  after(() => database.drop());
  beforeEach(async () => {
    await database.db.raw('truncate tasks, agents, servers cascade');
    await insertServer(database.db, 'A', seconds(10));
  });

  it('finds nothing while every lease holds, or when what expired has been dealt with', async () => {
    await insertServer(database.db, 'B', seconds(10));
    await insertAgent(database.db, { id: 'live', serverId: 'A', leaseInMs: seconds(10), lost: false });
    await insertAgent(database.db, { id: 'lost-and-requeued', serverId: 'A', leaseInMs: seconds(-5), lost: true });
    await insertTask(database.db, 't1', 'A', 'running', 'live');
    await insertTask(database.db, 't2', 'B', 'queued', null);
    await insertServer(database.db, 'C', seconds(-5));
    await insertTask(database.db, 't3', 'C', 'succeeded', null);
    assert.deepEqual(await findFailoverWork(database.db, 'A'), { lostAgents: false, orphans: false });
  });

  it('finds an agent of this server whose lease ran out, but not another server’s', async () => {
    await insertAgent(database.db, { id: 'other', serverId: 'B', leaseInMs: seconds(-5), lost: false });
    assert.deepEqual(await findFailoverWork(database.db, 'A'), { lostAgents: false, orphans: false });
    await insertAgent(database.db, { id: 'expired', serverId: 'A', leaseInMs: seconds(-1), lost: false });
    assert.deepEqual(await findFailoverWork(database.db, 'A'), { lostAgents: true, orphans: false });
  });

  it('finds attempts still held by an agent already marked lost', async () => {
    await insertAgent(database.db, { id: 'lost', serverId: 'A', leaseInMs: seconds(-5), lost: true });
    await insertTask(database.db, 't1', 'A', 'dispatched', 'lost');
    assert.deepEqual(await findFailoverWork(database.db, 'A'), { lostAgents: true, orphans: false });
  });

  it('finds open tasks of a server whose lease ran out', async () => {
    await insertServer(database.db, 'B', seconds(-1));
    await insertTask(database.db, 't1', 'B', 'queued', null);
    assert.deepEqual(await findFailoverWork(database.db, 'A'), { lostAgents: false, orphans: true });
  });
});
