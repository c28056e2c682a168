import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import type { Database } from '@duplex/shared';
import { createTestDatabase, type TestDatabase } from '@duplex/testkit';
import { findFailoverWork } from '../../src/repositories/failover.ts';

const seconds = (n: number) => new Date(Date.now() + n * 1_000);

async function insertServer(db: Database, id: string, leaseInS: number): Promise<void> {
  await db('servers').insert({ id, url: `http://${id}`, instance_id: id, started_at: new Date(), heartbeat_at: new Date(), lease_expires_at: seconds(leaseInS) });
}

async function insertAgent(db: Database, id: string, serverId: string, leaseInS: number, lost: boolean): Promise<void> {
  await db('agents').insert({
    id,
    name: id,
    server_id: serverId,
    storage_system_id: 'ss1',
    cluster_id: 'c0',
    url: 'http://127.0.0.1:9',
    pid: 1,
    incarnation: 1,
    started_at: new Date(),
    registered_at: new Date(),
    heartbeat_at: new Date(),
    lease_expires_at: seconds(leaseInS),
    lost_at: lost ? new Date() : null,
  });
}

async function insertTask(db: Database, id: string, serverId: string, state: string, agentId: string | null): Promise<void> {
  await db('tasks').insert({ id, request_hash: 'h', kind: 'device.probe', storage_system_id: 'ss1', device: 'd0', params: '{}', state, server_id: serverId, agent_id: agentId });
}

describe('findFailoverWork', () => {
  let database: TestDatabase;

  before(async () => {
    database = await createTestDatabase();
  });
  after(() => database.drop());
  beforeEach(async () => {
    await database.db.raw('truncate tasks, agents, servers cascade');
    await insertServer(database.db, 'A', 10);
  });

  it('finds nothing while every lease holds, or when what expired has been dealt with', async () => {
    await insertServer(database.db, 'B', 10);
    await insertAgent(database.db, 'live', 'A', 10, false);
    await insertAgent(database.db, 'lost-and-requeued', 'A', -5, true);
    await insertTask(database.db, 't1', 'A', 'running', 'live');
    await insertTask(database.db, 't2', 'B', 'queued', null);
    await insertServer(database.db, 'C', -5);
    await insertTask(database.db, 't3', 'C', 'succeeded', null);
    assert.deepEqual(await findFailoverWork(database.db, 'A'), { lostAgents: false, orphans: false });
  });

  it('finds an agent of this server whose lease ran out, but not another server’s', async () => {
    await insertAgent(database.db, 'other', 'B', -5, false);
    assert.deepEqual(await findFailoverWork(database.db, 'A'), { lostAgents: false, orphans: false });
    await insertAgent(database.db, 'expired', 'A', -1, false);
    assert.deepEqual(await findFailoverWork(database.db, 'A'), { lostAgents: true, orphans: false });
  });

  it('finds attempts still held by an agent already marked lost', async () => {
    await insertAgent(database.db, 'lost', 'A', -5, true);
    await insertTask(database.db, 't1', 'A', 'dispatched', 'lost');
    assert.deepEqual(await findFailoverWork(database.db, 'A'), { lostAgents: true, orphans: false });
  });

  it('finds open tasks of a server whose lease ran out', async () => {
    await insertServer(database.db, 'B', -1);
    await insertTask(database.db, 't1', 'B', 'queued', null);
    assert.deepEqual(await findFailoverWork(database.db, 'A'), { lostAgents: false, orphans: true });
  });
});
