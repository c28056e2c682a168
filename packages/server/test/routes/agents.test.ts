import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { buildApp, loadServerConfig } from '@duplex/server';
import { injectWithToken, testAdminToken, testJoinToken, testJoinTokens, testServiceToken, waitFor } from '@duplex/testkit';
import { insertAgent } from '../repositories/rows.ts';
import {
  assertProblem,
  inventoryReport,
  registerAgent,
  registration,
  reportInventory,
  startServer,
  stopServer,
  type TestServer,
} from './helpers.ts';

interface AgentRow {
  id: string;
  server_id: string;
  pid: number;
  url: string;
  incarnation: number;
  registered_at: Date;
  heartbeat_at: Date;
  lease_expires_at: Date;
}

interface AgentPage {
  items: { id: string; state: string; cluster_id: string; incarnation: number }[];
  next_cursor: string | null;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('agents', () => {
  let server: TestServer;
  const agentRow = (id: string) => server.db<AgentRow>('agents').where({ id }).first();
  const registeredEvents = (id: string) =>
    server.db('events').where({ type: 'agent.registered' }).whereRaw(`payload->>'agent_id' = ?`, [id]).select('payload');

  before(async () => {
    server = await startServer({ AGENT_LEASE_TTL_MS: '3000' });
  });
  after(() => stopServer(server));

  describe('POST /v1/agents', () => {
    it('registers a new agent with 201, a lease and an event', async () => {
      const before = Date.now();
      const response = await server.app.inject({ method: 'POST', url: '/v1/agents', payload: registration({ name: 'reg-new' }) });
      assert.equal(response.statusCode, 201);
      const body = response.json<{ id: string; incarnation: number; lease_ttl_ms: number; heartbeat_interval_ms: number; lease_expires_at: string; server_id: string }>();
      assert.equal(body.id, 'A:ss1:c0:reg-new');
      assert.equal(body.incarnation, 1);
      assert.equal(body.lease_ttl_ms, 3000);
      assert.equal(body.heartbeat_interval_ms, 1000);
      assert.equal(body.server_id, 'A');
      const leaseExpiresAt = Date.parse(body.lease_expires_at);
      assert.ok(leaseExpiresAt >= before + 2000 && leaseExpiresAt <= Date.now() + 3500, body.lease_expires_at);

      const row = await agentRow(body.id);
      assert.equal(row?.server_id, 'A');
      assert.equal(row?.pid, 4242);
      assert.equal(row?.incarnation, 1);
      assert.equal(row?.lease_expires_at.toISOString(), body.lease_expires_at);
      assert.equal((await registeredEvents(body.id)).length, 1);
    });

    it('registering the same process again is idempotent: 200, same id and incarnation, renewed lease', async () => {
      const first = await server.app.inject({ method: 'POST', url: '/v1/agents', payload: registration({ name: 'reg-again' }) });
      assert.equal(first.statusCode, 201);
      await sleep(20);
      const second = await server.app.inject({ method: 'POST', url: '/v1/agents', payload: registration({ name: 'reg-again' }) });
      assert.equal(second.statusCode, 200);
      assert.equal(second.json().id, first.json().id);
      assert.equal(second.json().incarnation, 1);
      assert.ok(Date.parse(second.json().lease_expires_at) > Date.parse(first.json().lease_expires_at));
      assert.equal(Number((await server.db('agents').where({ name: 'reg-again' }).count<{ count: string }[]>({ count: '*' }))[0]?.count), 1);
      assert.equal((await registeredEvents(first.json().id)).length, 1, 'no second agent.registered event');
    });

    it('a new pid starts the next incarnation', async () => {
      const id = await registerAgent(server.app, { name: 'reg-pid', pid: 100 });
      const response = await server.app.inject({ method: 'POST', url: '/v1/agents', payload: registration({ name: 'reg-pid', pid: 101 }) });
      assert.equal(response.statusCode, 200);
      assert.equal(response.json().id, id);
      assert.equal(response.json().incarnation, 2);
      const row = await agentRow(id);
      assert.equal(row?.incarnation, 2);
      assert.equal(row?.pid, 101);
      assert.equal((await registeredEvents(id)).length, 2);
    });

    it('a new url starts the next incarnation too', async () => {
      const id = await registerAgent(server.app, { name: 'reg-url', url: 'http://127.0.0.1:10' });
      const response = await server.app.inject({ method: 'POST', url: '/v1/agents', payload: registration({ name: 'reg-url', url: 'http://127.0.0.1:11' }) });
      assert.equal(response.json().incarnation, 2);
      assert.equal((await agentRow(id))?.url, 'http://127.0.0.1:11');
    });

    it('an agent configured for another server is refused with 409 wrong-server and not stored', async () => {
      const response = await server.app.inject({ method: 'POST', url: '/v1/agents', payload: registration({ name: 'reg-wrong', server_id: 'B' }) });
      const problem = assertProblem(response, 409, 'wrong-server');
      assert.equal(problem.instance, '/v1/agents');
      assert.equal(await server.db('agents').where({ name: 'reg-wrong' }).first(), undefined);
    });
  });

  describe('POST /v1/agents/{id}/heartbeats', () => {
    it('renews the lease of the current incarnation', async () => {
      const id = await registerAgent(server.app, { name: 'hb-ok' });
      const before = await agentRow(id);
      await sleep(20);
      const response = await server.app.inject({ method: 'POST', url: `/v1/agents/${id}/heartbeats`, payload: { incarnation: 1 } });
      assert.equal(response.statusCode, 200);
      const body = response.json<{ lease_expires_at: string; inventory_version: number | null }>();
      assert.equal(body.inventory_version, null);
      const after = await agentRow(id);
      assert.ok(after!.lease_expires_at > before!.lease_expires_at);
      assert.ok(after!.heartbeat_at > before!.heartbeat_at);
      assert.equal(after!.lease_expires_at.toISOString(), body.lease_expires_at);
    });

    it('tells the agent which inventory version the server holds for its cluster', async () => {
      const id = await registerAgent(server.app, { name: 'hb-inv', storage_system_id: 'hbs' });
      await reportInventory(server.app, id, inventoryReport({ storage_system_id: 'hbs', version: 7 }));
      const response = await server.app.inject({ method: 'POST', url: `/v1/agents/${id}/heartbeats`, payload: { incarnation: 1, inventory_version: 7 } });
      assert.equal(response.statusCode, 200);
      assert.equal(response.json().inventory_version, 7);
    });

    it('an old incarnation is refused with 409 and the lease is left alone', async () => {
      const id = await registerAgent(server.app, { name: 'hb-old', pid: 1 });
      await registerAgent(server.app, { name: 'hb-old', pid: 2 });
      const before = await agentRow(id);
      const response = await server.app.inject({ method: 'POST', url: `/v1/agents/${id}/heartbeats`, payload: { incarnation: 1 } });
      const problem = assertProblem(response, 409, 'stale-incarnation');
      assert.match(problem.detail ?? '', /incarnation 2/);
      assert.deepEqual(await agentRow(id), before);
    });

    it('an unknown agent gets 401: no credential can be its', async () => {
      const response = await server.app.inject({ method: 'POST', url: '/v1/agents/A:ss1:c0:nobody/heartbeats', payload: { incarnation: 1 } });
      assertProblem(response, 401, 'unauthenticated');
    });

    it("another server's agent gets 401 and its lease is not renewed: its credential is the other server's", async () => {
      // Server B shares the database; its agent is not one of A's.
      const serverB = injectWithToken(await buildApp({ config: loadServerConfig({ DATABASE_URL: server.tdb.url, SERVER_ID: 'B', ADMIN_TOKEN: testAdminToken, JOIN_TOKENS: testJoinTokens, SERVICE_TOKEN: testServiceToken }), db: server.db, logger: false }));
      await serverB.ready();
      try {
        const id = await registerAgent(serverB, { name: 'of-b', server_id: 'B' });
        assertProblem(await server.app.inject({ method: 'GET', url: `/v1/agents/${id}` }), 404, 'agent-not-found');
        const before = await agentRow(id);
        await sleep(20);
        const response = await server.app.inject({ method: 'POST', url: `/v1/agents/${id}/heartbeats`, payload: { incarnation: 1 } });
        assertProblem(response, 401, 'unauthenticated');
        assert.deepEqual(await agentRow(id), before);

        // A's list holds its own agents; server_id names another server's, and * every server's.
        await registerAgent(server.app, { name: 'of-a' });
        const servers = async (query: string) => {
          const page = await server.app.inject({ method: 'GET', url: `/v1/agents?limit=500${query}` });
          assert.equal(page.statusCode, 200, page.body);
          return [...new Set(page.json<{ items: { server_id: string }[] }>().items.map((agent) => agent.server_id))].sort();
        };
        assert.deepEqual(await servers(''), ['A']);
        assert.deepEqual(await servers('&server_id=B'), ['B']);
        assert.deepEqual(await servers('&server_id=*'), ['A', 'B']);
        assertProblem(await server.app.inject({ method: 'GET', url: '/v1/agents?server_id=A,B' }), 400, 'validation-failed');
      } finally {
        await serverB.close();
      }
    });
  });

  describe('GET /v1/agents/{id}', () => {
    it('answers the agent as registered', async () => {
      const id = await registerAgent(server.app, { name: 'get-one', cluster_id: 'c1', pid: 77 });
      const response = await server.app.inject({ method: 'GET', url: `/v1/agents/${id}` });
      assert.equal(response.statusCode, 200);
      const row = await agentRow(id);
      assert.deepEqual(response.json(), {
        id,
        name: 'get-one',
        server_id: 'A',
        storage_system_id: 'ss1',
        cluster_id: 'c1',
        url: 'http://127.0.0.1:9',
        pid: 77,
        incarnation: 1,
        state: 'active',
        started_at: '2026-11-25T10:00:00.000Z',
        registered_at: row!.registered_at.toISOString(),
        heartbeat_at: row!.heartbeat_at.toISOString(),
        lease_expires_at: row!.lease_expires_at.toISOString(),
      });
    });

    it('an unknown agent is 404 agent-not-found', async () => {
      const problem = assertProblem(await server.app.inject({ method: 'GET', url: '/v1/agents/A:ss1:c0:ghost' }), 404, 'agent-not-found');
      assert.equal(problem.instance, '/v1/agents/A:ss1:c0:ghost');
    });
  });

  describe('GET /v1/agents', () => {
    // A storage system of its own, so the other tests' agents stay out of these pages.
    const ids: string[] = [];
    before(async () => {
      ids.push(await registerAgent(server.app, { name: 'l-a', storage_system_id: 'lst', cluster_id: 'c0' }));
      ids.push(await registerAgent(server.app, { name: 'l-b', storage_system_id: 'lst', cluster_id: 'c1' }));
      ids.push(await registerAgent(server.app, { name: 'l-c', storage_system_id: 'lst', cluster_id: 'c1' }));
      ids.push(await registerAgent(server.app, { name: 'l-d', storage_system_id: 'lst', cluster_id: 'c0' }));
      await server.db('agents').where({ id: 'A:lst:c1:l-c' }).update({ lease_expires_at: server.db.raw(`now() - interval '1 minute'`) });
    });

    const list = async (query: string): Promise<AgentPage> => {
      const response = await server.app.inject({ method: 'GET', url: `/v1/agents?storage_system_id=lst${query}` });
      assert.equal(response.statusCode, 200, response.body);
      return response.json<AgentPage>();
    };

    it('lists the agents by id, with their state', async () => {
      const page = await list('');
      assert.deepEqual(page.items.map((a) => `${a.id}:${a.state}`), ['A:lst:c0:l-a:active', 'A:lst:c0:l-d:active', 'A:lst:c1:l-b:active', 'A:lst:c1:l-c:expired']);
      assert.equal(page.next_cursor, null);
    });

    it('filters by state', async () => {
      assert.deepEqual((await list('&state=expired')).items.map((a) => a.id), ['A:lst:c1:l-c']);
      assert.deepEqual((await list('&state=active')).items.map((a) => a.id), ['A:lst:c0:l-a', 'A:lst:c0:l-d', 'A:lst:c1:l-b']);
    });

    it('filters by cluster', async () => {
      assert.deepEqual((await list('&cluster_id=c1')).items.map((a) => a.id), ['A:lst:c1:l-b', 'A:lst:c1:l-c']);
      assert.deepEqual((await list('&cluster_id=c1&state=active')).items.map((a) => a.id), ['A:lst:c1:l-b']);
      assert.deepEqual((await list('&cluster_id=c9')).items, []);
    });

    it('pages with limit=1 through every agent exactly once', async () => {
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page: AgentPage = await list(`&limit=1${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
        assert.ok(page.items.length <= 1);
        seen.push(...page.items.map((a) => a.id));
        cursor = page.next_cursor;
        pages += 1;
      } while (cursor !== null && pages < 10);
      assert.deepEqual(seen, [...ids].sort());
      assert.equal(pages, 4);
    });

    it('does not list the agents of other servers', async () => {
      await insertAgent(server.db, { id: 'B:lst:c0:l-x', name: 'l-x', serverId: 'B', storageSystemId: 'lst', leaseInMs: 60_000 });
      assert.deepEqual((await list('&cluster_id=c0')).items.map((a) => a.id), ['A:lst:c0:l-a', 'A:lst:c0:l-d']);
    });
  });
});

describe('lost agent leases', () => {
  let server: TestServer;
  const lostAt = async (id: string) => ((await server.db('agents').where({ id }).first('lost_at')) as { lost_at: Date | null }).lost_at;
  const expiriesCounted = async () => {
    const response = await server.app.inject({ method: 'GET', url: '/metrics' });
    const line = response.body.split('\n').find((text) => text.startsWith('duplex_agent_lease_expiries_total '));
    return Number(line?.split(' ')[1]);
  };

  before(async () => {
    // A short lease, looked at often.
    server = await startServer({ AGENT_LEASE_TTL_MS: '400', FAILOVER_CHECK_INTERVAL_MS: '20' });
  });
  after(() => stopServer(server));

  it('counts each lease that ran out once, however often the watcher looks, and again after the agent was back', async () => {
    assert.equal(await expiriesCounted(), 0);
    const id = await registerAgent(server.app, { name: 'counted' });
    await waitFor('the lease to run out', async () => ((await lostAt(id)) ? true : undefined), 5_000);
    await sleep(200);
    assert.equal(await expiriesCounted(), 1);

    const heartbeat = await server.app.inject({ method: 'POST', url: `/v1/agents/${id}/heartbeats`, payload: { incarnation: 1 } });
    assert.equal(heartbeat.statusCode, 200, heartbeat.body);
    assert.ok(Date.parse(heartbeat.json<{ lease_expires_at: string }>().lease_expires_at) > Date.now());
    assert.equal(await lostAt(id), null);
    await waitFor('the lease to run out again', async () => ((await lostAt(id)) ? true : undefined), 5_000);
    assert.equal(await expiriesCounted(), 2);
  });
});

describe('agent credentials', () => {
  let server: TestServer;
  const register = (name: string, authorization: string | undefined) =>
    server.app.inject({ method: 'POST', url: '/v1/agents', payload: registration({ name }), headers: { authorization } });
  const heartbeat = (id: string, authorization: string | undefined) =>
    server.app.inject({ method: 'POST', url: `/v1/agents/${id}/heartbeats`, payload: { incarnation: 1 }, headers: { authorization } });

  before(async () => {
    server = await startServer({ AUTH_FAILURE_LIMIT: '1000' });
  });
  after(() => stopServer(server));

  it("a registration needs its storage system's join token; the answer's credential is stored as a hash only", async () => {
    assertProblem(await register('cred-none', undefined), 401, 'unauthenticated');
    assertProblem(await register('cred-wrong', `Bearer ${testJoinToken}x`), 401, 'unauthenticated');
    assert.equal(await server.db('agents').whereIn('name', ['cred-none', 'cred-wrong']).first(), undefined, 'nothing registered');
    const response = await register('cred-ok', `Bearer ${testJoinToken}`);
    assert.equal(response.statusCode, 201, response.body);
    const { id, credential, credential_expires_at: expiresAt } = response.json<{ id: string; credential: string; credential_expires_at: string }>();
    assert.match(credential, /^dpa_/);
    assert.ok(Date.parse(expiresAt) > Date.now() + 23 * 3600_000, 'a day by default');
    const row = await server.db('agents').where({ id }).first();
    assert.equal(row.credential_sha256, createHash('sha256').update(credential).digest('hex'));
    assert.equal(JSON.stringify(row).includes(credential), false);
  });

  it("a heartbeat needs the agent's own credential: none or an unknown one is 401, another agent's is 403", async () => {
    const mine = (await register('cred-mine', `Bearer ${testJoinToken}`)).json<{ id: string; credential: string }>();
    const theirs = (await register('cred-theirs', `Bearer ${testJoinToken}`)).json<{ id: string; credential: string }>();
    assertProblem(await heartbeat(mine.id, undefined), 401, 'unauthenticated');
    assertProblem(await heartbeat(mine.id, 'Bearer dpa_made-up-credential'), 401, 'unauthenticated');
    assertProblem(await heartbeat(mine.id, `Bearer ${theirs.credential}`), 403, 'forbidden');
    assert.equal((await heartbeat(mine.id, `Bearer ${mine.credential}`)).statusCode, 200);
    // Registering again gives a new credential, and the old one no longer works.
    const again = (await register('cred-mine', `Bearer ${testJoinToken}`)).json<{ credential: string }>();
    assert.notEqual(again.credential, mine.credential);
    assertProblem(await heartbeat(mine.id, `Bearer ${mine.credential}`), 401, 'unauthenticated');
    assert.equal((await heartbeat(mine.id, `Bearer ${again.credential}`)).statusCode, 200);
  });

  it('a heartbeat past half the credential’s life hands out a new one; the old one works until it expires', async () => {
    const { id, credential } = (await register('cred-rotate', `Bearer ${testJoinToken}`)).json<{ id: string; credential: string }>();
    const fresh = await heartbeat(id, `Bearer ${credential}`);
    assert.equal(fresh.json<{ credential?: string }>().credential, undefined, 'no rotation while young');
    // As if most of a day had gone by: the credential has an hour left.
    const held = server.app.duplex.agents.get(id)!.credentials;
    server.app.duplex.agents.setCredentials(id, [{ ...held[0]!, expiresAt: Date.now() + 3600_000 }]);
    const rotated = (await heartbeat(id, `Bearer ${credential}`)).json<{ credential?: string; credential_expires_at?: string }>();
    assert.match(rotated.credential ?? '', /^dpa_/);
    assert.equal((await heartbeat(id, `Bearer ${rotated.credential}`)).statusCode, 200);
    assert.equal((await heartbeat(id, `Bearer ${credential}`)).statusCode, 200, 'the previous one until it expires');
    const row = await server.db('agents').where({ id }).first();
    assert.equal(row.credential_sha256, createHash('sha256').update(rotated.credential!).digest('hex'));
    assert.equal(row.previous_credential_sha256, createHash('sha256').update(credential).digest('hex'));
  });
});
