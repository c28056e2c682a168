import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { createDatabase, type Database } from '@duplex/shared';
import { createTestDatabase, waitFor, type TestDatabase } from '@duplex/testkit';
import { maxRenewalsPerStatement, renewAgentLeases, renewLostAgentLeases, type RenewedLease } from '../../src/repositories/agent-leases.ts';
import { markLostAgents } from '../../src/repositories/agents.ts';
import { insertAgent as insertAgentRow } from './rows.ts';

interface AgentEventRow {
  type: string;
  storage_system_id: string;
  payload: { agent_id: string; server_id: string; cluster_id: string; incarnation: number; reason?: string };
}

interface AgentLeaseRow {
  lease_expires_at: Date;
  heartbeat_at: Date;
  lost_at: Date | null;
}

const ttlMs = 3_000;
const idOf = (name: string) => `A:ss1:c0:${name}`;

/** Agent `name` of server A (or `serverId`) in incarnation 1, with its lease ending `leaseInMs` from now. */
const insertAgent = (db: Database, name: string, leaseInMs: number, serverId = 'A'): Promise<string> =>
  insertAgentRow(db, { id: `${serverId}:ss1:c0:${name}`, name, serverId, leaseInMs });

/** The return of one lost agent, as its own statement. */
async function returnOf(db: Database, id: string, serverId = 'A', incarnation = 1): Promise<RenewedLease | undefined> {
  const renewed = await renewLostAgentLeases(db, serverId, [{ agentId: id, incarnation }], ttlMs);
  return renewed.get(id)?.incarnation === incarnation ? renewed.get(id)?.renewed : undefined;
}

const agentRow = (db: Database, id: string) => db('agents').where({ id }).first<AgentLeaseRow | undefined>('lease_expires_at', 'heartbeat_at', 'lost_at');

/** The agent events in stream order. */
const agentEvents = async (db: Database): Promise<AgentEventRow[]> =>
  db('events').whereIn('type', ['agent.registered', 'agent.lost']).orderByRaw('stream_xid, id').select('type', 'storage_system_id', 'payload');

describe('agent lease renewal', () => {
  let tdb: TestDatabase;
  /** One connection, so that what a renewal leaves on its connection shows in the next query. */
  let oneConnection: Database;

  before(async () => {
    tdb = await createTestDatabase();
    oneConnection = createDatabase(tdb.url, { poolMax: 1 });
  });
  after(async () => {
    await oneConnection?.destroy();
    await tdb?.drop();
  });
  beforeEach(async () => {
    await tdb.db('events').delete();
    await tdb.db('agents').delete();
  });

  describe('renewAgentLeases', () => {
    it('renews the leases of several agents in one statement, answers only what heartbeats need and writes no event', async () => {
      const ids = [await insertAgent(tdb.db, 'one', 1_000), await insertAgent(tdb.db, 'two', 1_000), await insertAgent(tdb.db, 'three', 1_000)];
      const before = await agentRow(tdb.db, ids[0]!);
      const thirdBefore = await agentRow(tdb.db, ids[2]!);
      const renewed = await renewAgentLeases(oneConnection, 'A', ids.slice(0, 2).map((agentId) => ({ agentId, incarnation: 1 })), ttlMs);
      assert.deepEqual([...renewed.keys()].sort(), [ids[0], ids[1]].sort());
      for (const id of ids.slice(0, 2)) {
        const { incarnation, renewed: lease } = renewed.get(id)!;
        assert.equal(incarnation, 1);
        assert.deepEqual(Object.keys(lease).sort(), ['cluster_id', 'lease_expires_at', 'storage_system_id']);
        assert.equal(lease.storage_system_id, 'ss1');
        assert.equal(lease.cluster_id, 'c0');
        const row = await agentRow(tdb.db, id);
        assert.equal(row?.lease_expires_at.toISOString(), lease.lease_expires_at.toISOString());
        assert.ok(row!.lease_expires_at > before!.lease_expires_at);
      }
      assert.deepEqual(await agentRow(tdb.db, ids[2]!), thirdBefore, 'the third agent had no heartbeat');
      assert.deepEqual(await agentEvents(tdb.db), []);
    });

    it('renews groups of any size up to the most one statement takes, and the same agent twice in one group once', async () => {
      const ids = await Promise.all(Array.from({ length: maxRenewalsPerStatement }, (_, index) => insertAgent(tdb.db, `group-${index}`, 1_000)));
      for (const size of [3, 5, maxRenewalsPerStatement]) {
        const renewed = await renewAgentLeases(oneConnection, 'A', ids.slice(0, size).map((agentId) => ({ agentId, incarnation: 1 })), ttlMs);
        assert.deepEqual([...renewed.keys()].sort(), ids.slice(0, size).sort(), `a group of ${size}`);
      }
      const twice = await renewAgentLeases(oneConnection, 'A', [ids[0]!, ids[0]!].map((agentId) => ({ agentId, incarnation: 1 })), ttlMs);
      assert.deepEqual([...twice.keys()], [ids[0]]);
      await assert.rejects(
        renewAgentLeases(oneConnection, 'A', [...ids, ids[0]!].map((agentId) => ({ agentId, incarnation: 1 })), ttlMs),
        RangeError,
      );
    });

    it('commits asynchronously for itself only: the next statement on its connection waits for the flush again', async () => {
      const id = await insertAgent(tdb.db, 'async', 1_000);
      assert.equal((await renewAgentLeases(oneConnection, 'A', [{ agentId: id, incarnation: 1 }], ttlMs)).size, 1);
      const { rows } = await oneConnection.raw<{ rows: { synchronous_commit: string }[] }>('show synchronous_commit');
      assert.equal(rows[0]?.synchronous_commit, 'on');
    });

    it('leaves alone an agent marked lost, another incarnation, another server\u2019s agent and an unknown one', async () => {
      const lost = await insertAgent(tdb.db, 'lost', -1_000);
      await markLostAgents(tdb.db, 'A');
      const live = await insertAgent(tdb.db, 'live', 1_000);
      const ofB = await insertAgent(tdb.db, 'of-b', 1_000, 'B');
      const before = await Promise.all([lost, live, ofB].map((id) => agentRow(tdb.db, id)));
      const renewed = await renewAgentLeases(
        oneConnection,
        'A',
        [
          { agentId: lost, incarnation: 1 },
          { agentId: live, incarnation: 2 },
          { agentId: ofB, incarnation: 1 },
          { agentId: idOf('nobody'), incarnation: 1 },
        ],
        ttlMs,
      );
      assert.equal(renewed.size, 0);
      assert.deepEqual(await Promise.all([lost, live, ofB].map((id) => agentRow(tdb.db, id))), before);
      assert.deepEqual((await agentEvents(tdb.db)).map((event) => event.type), ['agent.lost']);
    });
  });

  describe('renewLostAgentLeases', () => {
    it('brings a lost agent back with one agent.registered, the event a registration writes', async () => {
      const id = await insertAgent(tdb.db, 'back', -1_000);
      await markLostAgents(tdb.db, 'A');
      const back = await returnOf(oneConnection, id);
      assert.ok(back && back.lease_expires_at.getTime() > Date.now());
      assert.deepEqual(Object.keys(back).sort(), ['cluster_id', 'lease_expires_at', 'storage_system_id']);
      assert.equal((await agentRow(tdb.db, id))?.lost_at, null);
      const events = await agentEvents(tdb.db);
      assert.deepEqual(events.map((event) => event.type), ['agent.lost', 'agent.registered']);
      assert.equal(events[1]?.storage_system_id, 'ss1');
      assert.deepEqual(events[1]?.payload, { agent_id: id, server_id: 'A', cluster_id: 'c0', incarnation: 1 });

      // Back, it is renewed as any other: nothing more is written.
      assert.equal(await returnOf(oneConnection, id), undefined);
      assert.equal((await renewAgentLeases(oneConnection, 'A', [{ agentId: id, incarnation: 1 }], ttlMs)).size, 1);
      assert.equal((await agentEvents(tdb.db)).length, 2);
    });

    it('brings several lost agents back in one statement, one agent.registered each, and leaves the others', async () => {
      const lost = [await insertAgent(tdb.db, 'lost-1', -1_000), await insertAgent(tdb.db, 'lost-2', -1_000)];
      await markLostAgents(tdb.db, 'A');
      const live = await insertAgent(tdb.db, 'live', 1_000);
      const liveBefore = await agentRow(tdb.db, live);
      const renewed = await renewLostAgentLeases(oneConnection, 'A', [...lost, live].map((agentId) => ({ agentId, incarnation: 1 })), ttlMs);
      assert.deepEqual([...renewed.keys()].sort(), [...lost].sort());
      assert.deepEqual(await agentRow(tdb.db, live), liveBefore);
      const events = await agentEvents(tdb.db);
      assert.deepEqual(events.filter((event) => event.type === 'agent.registered').map((event) => event.payload.agent_id).sort(), [...lost].sort());
      assert.equal(events.length, 4);
    });

    it('renews nothing and writes nothing for another incarnation, another server or an unknown agent', async () => {
      const id = await insertAgent(tdb.db, 'refused', -1_000);
      await markLostAgents(tdb.db, 'A');
      const before = await agentRow(tdb.db, id);
      assert.equal(await returnOf(oneConnection, id, 'A', 2), undefined);
      assert.equal(await returnOf(oneConnection, id, 'B'), undefined);
      assert.equal(await returnOf(oneConnection, idOf('nobody')), undefined);
      assert.deepEqual(await agentRow(tdb.db, id), before);
      assert.deepEqual((await agentEvents(tdb.db)).map((event) => event.type), ['agent.lost']);
    });
  });

  it('a heartbeat that waited for the watcher marking its agent lost brings it back after the agent.lost, in the stream too', async () => {
    const id = await insertAgent(tdb.db, 'raced', -1_000);
    // The watcher has marked the agent lost and not committed yet when the heartbeat arrives.
    const watcher = await tdb.db.transaction();
    try {
      assert.equal((await markLostAgents(watcher, 'A')).length, 1);
      const renewal = renewAgentLeases(oneConnection, 'A', [{ agentId: id, incarnation: 1 }], ttlMs);
      await waitFor(
        'the renewal to wait for the watcher',
        async () => {
          const { rows } = await tdb.db.raw<{ rows: { waiting: number }[] }>(
            `select count(*)::int as waiting from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`,
          );
          return rows[0]!.waiting > 0 ? true : undefined;
        },
        5_000,
      );
      await watcher.commit();
      assert.equal((await renewal).size, 0, 'the agent is lost now: the usual renewal leaves it');
    } finally {
      if (!watcher.isCompleted()) await watcher.rollback();
    }
    assert.ok(await returnOf(oneConnection, id));
    assert.equal((await agentRow(tdb.db, id))?.lost_at, null);
    assert.deepEqual((await agentEvents(tdb.db)).map((event) => event.type), ['agent.lost', 'agent.registered']);
  });

  it('the watcher skips an agent whose row a renewal holds, instead of waiting for it, and marks it at its next look', async () => {
    const held = await insertAgent(tdb.db, 'held', -1_000);
    const free = await insertAgent(tdb.db, 'free', -1_000);
    const renewal = await tdb.db.transaction();
    try {
      await renewal('agents').where({ id: held }).forUpdate().first('id');
      const marked = await markLostAgents(tdb.db, 'A');
      assert.deepEqual(marked.map((row) => row.id), [free]);
    } finally {
      await renewal.rollback();
    }
    assert.deepEqual((await markLostAgents(tdb.db, 'A')).map((row) => row.id), [held]);
    assert.deepEqual((await agentEvents(tdb.db)).map((event) => [event.type, event.payload.agent_id]), [
      ['agent.lost', free],
      ['agent.lost', held],
    ]);
  });
});
