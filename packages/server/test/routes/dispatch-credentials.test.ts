import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { bearer, injectWithToken, testAdminToken, testJoinTokens, testServiceToken, waitFor } from '@duplex/testkit';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/app.ts';
import { loadServerConfig } from '../../src/config.ts';
import { acceptedTask, device, inventoryReport, registration, reportInventory, startFakeAgent, startServer, stopServer, type FakeAgent, type TestServer } from './helpers.ts';

describe("dispatches carry the agent's own credential", () => {
  let server: TestServer;
  let agent: FakeAgent;
  let agentId = '';
  let credential = '';

  before(async () => {
    agent = await startFakeAgent();
    server = await startServer();
    const registered = await server.app.inject({ method: 'POST', url: '/v1/agents', payload: registration({ url: agent.url }) });
    ({ id: agentId, credential } = registered.json<{ id: string; credential: string }>());
    await reportInventory(server.app, agentId, inventoryReport({ cluster_id: 'c0', devices: [device('d0', 'c0')] }));
  });
  after(async () => {
    await stopServer(server);
    await agent.close();
  });

  it('the one its registration answered with', async () => {
    const task = await acceptedTask(server.app, { kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' });
    await waitFor('the dispatch to reach the agent', async () => (agent.received.some((dispatch) => dispatch.task_id === task.id) ? true : undefined));
    assert.deepEqual([...new Set(agent.authorizations)], [`Bearer ${credential}`]);
  });

  it('after a restart, none until the agent shows its credential again, then that one', async () => {
    await server.app.close();
    const restarted: FastifyInstance = injectWithToken(
      await buildApp({
        config: loadServerConfig({ DATABASE_URL: server.tdb.url, SERVER_ID: 'A', AGENT_LEASE_TTL_MS: '600000', ADMIN_TOKEN: testAdminToken, JOIN_TOKENS: testJoinTokens, SERVICE_TOKEN: testServiceToken }),
        db: server.db,
        logger: false,
      }),
    );
    server.app = restarted;
    await restarted.ready();
    const dispatches = agent.authorizations.length;
    const task = await acceptedTask(restarted, { kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' });
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal((await server.db('tasks').where({ id: task.id }).first()).state, 'queued', 'no dispatch without a credential to show the agent');
    assert.equal(agent.authorizations.length, dispatches);

    const beat = await restarted.inject({ method: 'POST', url: `/v1/agents/${encodeURIComponent(agentId)}/heartbeats`, headers: bearer(credential), payload: { incarnation: 1 } });
    assert.equal(beat.statusCode, 200, beat.body);
    await waitFor('the dispatch to reach the agent', async () => (agent.received.some((dispatch) => dispatch.task_id === task.id) ? true : undefined));
    assert.equal(agent.authorizations.at(-1), `Bearer ${credential}`);
  });
});
