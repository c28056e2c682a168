import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { buildApp as buildDriver, createBackend } from '@duplex/driver';
import { bearer, freePort, injectWithToken, testClusterToken, testJoinToken, waitFor } from '@duplex/testkit';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/app.ts';
import { loadAgentConfig } from '../src/config.ts';

interface Recorded {
  method: string;
  url: string;
  body: unknown;
  authorization: string | undefined;
}

type Reply = (request: Recorded) => { status: number; body: unknown };

/** A stand-in HTTP peer that records every request and answers from a table of routes. */
async function startPeer(port: number, route: Reply): Promise<{ server: Server; requests: Recorded[] }> {
  const requests: Recorded[] = [];
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    let text = '';
    request.on('data', (chunk: Buffer) => (text += chunk.toString()));
    request.on('end', () => {
      const recorded = { method: request.method ?? '', url: request.url ?? '', body: text ? JSON.parse(text) : undefined, authorization: request.headers.authorization };
      requests.push(recorded);
      const { status, body } = route(recorded);
      response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { server, requests };
}

const inventory = {
  storage_system_id: 'ss1',
  cluster_id: 'c0',
  version: 3,
  cluster_state: 'online',
  epoch: 1,
  recorded_at: '2026-11-25T10:00:00.000Z',
  devices: [{ id: 'd0', home_cluster: 'c0', owner_cluster: 'c0', capacity_bytes: 1000, used_bytes: 0, volume_count: 0, state: 'available', reason: null, epoch: 1 }],
};

describe('agent against a server, a cluster-manager and a real driver', () => {
  let agent: FastifyInstance;
  let driver: FastifyInstance;
  let server: { server: Server; requests: Recorded[] } | undefined;
  let clusterManager: { server: Server; requests: Recorded[] };
  let serverPort: number;
  let forgetAgent = false;

  const serverRoutes: Reply = (request) => {
    if (request.method === 'POST' && request.url === '/v1/agents') {
      const credential = 'dpa_first-credential';
      return { status: 201, body: { id: 'A:ss1:c0:ss1-c0-A', incarnation: 1, lease_ttl_ms: 3000, heartbeat_interval_ms: 50, lease_expires_at: new Date().toISOString(), server_id: 'A', credential, credential_expires_at: new Date(Date.now() + 60_000).toISOString() } };
    }
    if (request.url.endsWith('/heartbeats')) {
      if (forgetAgent) return { status: 404, body: { type: 'urn:duplex:problem:agent-not-found', title: 'No such agent', status: 404 } };
      // The third heartbeat rotates the credential; later requests must carry the new one.
      const beats = server!.requests.filter((recorded) => recorded.url.endsWith('/heartbeats')).length;
      const rotation = beats === 3 ? { credential: 'dpa_second-credential', credential_expires_at: new Date(Date.now() + 60_000).toISOString() } : {};
      return { status: 200, body: { lease_expires_at: new Date().toISOString(), inventory_version: 3, ...rotation } };
    }
    if (request.url.endsWith('/inventory')) return { status: 200, body: { accepted: true, version: 3 } };
    if (request.url.endsWith('/task-reports')) {
      const { reports } = request.body as { reports: { task_id: string }[] };
      return { status: 200, body: { results: reports.map((report) => ({ task_id: report.task_id, outcome: 'applied' })) } };
    }
    return { status: 404, body: {} };
  };

  const reportsFor = (taskId: string) =>
    (server?.requests ?? [])
      .filter((request) => request.url.endsWith('/task-reports'))
      .flatMap((request) => (request.body as { reports: { task_id: string; state: string; result?: unknown; error?: { type: string } }[] }).reports)
      .filter((report) => report.task_id === taskId);

  before(async () => {
    driver = injectWithToken(await buildDriver({ backend: createBackend({ kind: 'memory', devices: [{ id: 'd0', home_cluster: 'c0', capacity_bytes: 1000 }] }), clusterToken: testClusterToken('c0'), logger: false }), testClusterToken('c0'));
    const driverUrl = await driver.listen({ host: '127.0.0.1', port: 0 });
    clusterManager = await startPeer(await freePort(), (request) =>
      request.url === '/v1/inventory' ? { status: 200, body: inventory } : { status: 404, body: {} },
    );
    const cmAddress = clusterManager.server.address();
    serverPort = await freePort();
    const config = loadAgentConfig({
      AGENT_NAME: 'ss1-c0-A',
      SERVER_ID: 'A',
      SERVER_URL: `http://127.0.0.1:${serverPort}`,
      STORAGE_SYSTEM_ID: 'ss1',
      CLUSTER_ID: 'c0',
      JOIN_TOKEN: testJoinToken,
      CLUSTER_TOKEN: testClusterToken('c0'),
      DRIVER_URL: driverUrl,
      CLUSTER_MANAGER_URL: `http://127.0.0.1:${typeof cmAddress === 'object' && cmAddress ? cmAddress.port : 0}`,
      REGISTER_RETRY_MAX_MS: '100',
    });
    // Requests from the tests carry the cluster's token, as the cluster-manager's do; dispatches name the server's credential.
    agent = injectWithToken(await buildApp({ config, logger: false }), testClusterToken('c0'));
    const agentUrl = await agent.listen({ host: '127.0.0.1', port: 0 });
    agent.agent.start(agentUrl);
  });

  after(async () => {
    await agent?.close();
    await driver?.close();
    server?.server.close();
    clusterManager?.server.close();
  });

  it('is not ready and refuses tasks while its server is down: no server has given it a credential yet', async () => {
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal((await agent.inject({ method: 'GET', url: '/readyz' })).statusCode, 503);
    const refused = await agent.inject({
      method: 'POST',
      url: '/v1/tasks',
      headers: bearer('dpa_first-credential'),
      payload: { tasks: [{ task_id: 't0', kind: 'device.probe', device: 'd0', params: {}, attempt: 1, fencing_token: 1, epoch: 1 }] },
    });
    assert.equal(refused.statusCode, 401);
    assert.equal(refused.json().type, 'urn:duplex:problem:unauthenticated');
  });

  it('registers once the server appears, then reports the stored inventory', async () => {
    server = await startPeer(serverPort, serverRoutes);
    await waitFor('registration', async () => ((await agent.inject({ method: 'GET', url: '/readyz' })).statusCode === 200 ? true : undefined), 5_000);
    const registration = server.requests.find((request) => request.url === '/v1/agents');
    assert.deepEqual((registration?.body as { name: string; server_id: string; cluster_id: string }).name, 'ss1-c0-A');
    assert.equal(registration?.authorization, `Bearer ${testJoinToken}`, 'the registration carries the join token');
    const report = await waitFor('inventory report', async () => server!.requests.find((request) => request.url.endsWith('/inventory')));
    assert.equal(report.method, 'PUT');
    assert.deepEqual(report.body, inventory);
    // The agent counts the version as reported once the server's answer is back, a moment after the request arrived.
    const status = await waitFor('the reported version', async () => {
      const current = (await agent.inject({ method: 'GET', url: '/v1/status' })).json();
      return current.inventory_version === 3 ? current : undefined;
    });
    assert.equal(status.agent_id, 'A:ss1:c0:ss1-c0-A');
  });

  it('sends its credential with its own requests, and the new one once a heartbeat rotates it', async () => {
    const carried = (suffix: string) => server!.requests.filter((request) => request.url.endsWith(suffix)).map((request) => request.authorization);
    await waitFor('a heartbeat after the rotation', async () => (carried('/heartbeats').length >= 5 ? true : undefined), 5_000);
    const beats = carried('/heartbeats');
    assert.deepEqual(beats.slice(0, 3), Array(3).fill('Bearer dpa_first-credential'));
    assert.deepEqual([...new Set(beats.slice(4))], ['Bearer dpa_second-credential']);
    assert.deepEqual([...new Set(carried('/inventory'))].filter((value) => value !== 'Bearer dpa_second-credential'), ['Bearer dpa_first-credential']);
  });

  it("calls its cluster-manager with the cluster's token", async () => {
    const sent = new Set(clusterManager.requests.map((request) => request.authorization));
    assert.deepEqual([...sent], [`Bearer ${testClusterToken('c0')}`]);
  });

  it("takes tasks only with the credential its server gave it (current or the one a rotation replaced)", async () => {
    const dispatch = (taskId: string) => ({ tasks: [{ task_id: taskId, kind: 'device.probe', device: 'd0', params: {}, attempt: 1, fencing_token: 1, epoch: 1 }] });
    const send = (headers: Record<string, string | undefined>, taskId: string) => agent.inject({ method: 'POST', url: '/v1/tasks', headers, payload: dispatch(taskId) });
    for (const [who, headers] of [
      ['no token', { authorization: undefined }],
      ['an unknown credential', bearer('dpa_never-issued-credential')],
      ["the cluster's token", bearer(testClusterToken('c0'))],
    ] as const) {
      const refused = await send(headers, "t-refused");
      assert.equal(refused.statusCode, 401, who);
      assert.equal(refused.json().type, 'urn:duplex:problem:unauthenticated', who);
    }
    assert.equal(reportsFor("t-refused").length, 0, 'a refused dispatch runs nothing');
    assert.equal((await send(bearer('dpa_second-credential'), 't-current')).statusCode, 202);
    assert.equal((await send(bearer('dpa_first-credential'), 't-previous')).statusCode, 202);
    await waitFor('both probes reported', async () => (reportsFor('t-current').length > 0 && reportsFor('t-previous').length > 0 ? true : undefined));
  });

  it("takes calls from its cluster-manager only with the cluster's token", async () => {
    for (const headers of [{ authorization: undefined }, bearer(testClusterToken('c1')), bearer('dpa_second-credential')]) {
      assert.equal((await agent.inject({ method: 'POST', url: '/v1/inventory-changes', headers, payload: { version: 4 } })).statusCode, 401);
      assert.equal((await agent.inject({ method: 'GET', url: '/v1/status', headers })).statusCode, 401);
    }
  });

  it('runs a task through the driver and forwards the completion', async () => {
    const dispatch = { task_id: 't1', kind: 'volume.create', device: 'd0', params: { name: 'v1', size_bytes: 100 }, attempt: 1, fencing_token: 7, epoch: 1 };
    const accepted = await agent.inject({ method: 'POST', url: '/v1/tasks', headers: bearer('dpa_second-credential'), payload: { tasks: [dispatch, dispatch] } });
    assert.equal(accepted.statusCode, 202);
    assert.deepEqual(accepted.json(), { accepted: 1, duplicates: 1 });
    const [final] = await waitFor('a terminal report', async () => {
      const terminal = reportsFor('t1').filter((report) => report.state !== 'running');
      return terminal.length > 0 ? terminal : undefined;
    });
    assert.equal(final?.state, 'succeeded');
    assert.deepEqual(final?.result, { volume: { device: 'd0', name: 'v1', size_bytes: 100 } });
    const probe = await driver.inject({ method: 'GET', url: '/v1/devices/d0' });
    assert.equal(probe.json().volume_count, 1);
  });

  it('forwards a refusal by the driver as the task failing with its problem', async () => {
    const dispatch = { task_id: 't2', kind: 'volume.create', device: 'd0', params: { name: '../escape', size_bytes: 1 }, attempt: 1, fencing_token: 8, epoch: 1 };
    assert.equal((await agent.inject({ method: 'POST', url: '/v1/tasks', headers: bearer('dpa_second-credential'), payload: { tasks: [dispatch] } })).statusCode, 202);
    const report = await waitFor('the failure report', async () => reportsFor('t2').find((candidate) => candidate.state === 'failed'));
    assert.equal(report.error?.type, 'urn:duplex:problem:invalid-name');
  });

  it('sends the attempts queued for a device to the driver together, and runs them in order', async () => {
    const params = [{ name: 'v3', size_bytes: 10 }, { name: 'v3', size_bytes: 20 }, { name: 'v3' }, { name: 'v3', size_bytes: 30 }];
    const kinds = ['volume.create', 'volume.resize', 'volume.delete', 'volume.create'];
    const dispatches = kinds.map((kind, index) => ({ task_id: `t-order-${index}`, kind, device: 'd0', params: params[index], attempt: 1, fencing_token: 20 + index, epoch: 1 }));
    assert.equal((await agent.inject({ method: 'POST', url: '/v1/tasks', headers: bearer('dpa_second-credential'), payload: { tasks: dispatches } })).statusCode, 202);
    const finals = await waitFor('every terminal report', async () => {
      const terminal = dispatches.map((dispatch) => reportsFor(dispatch.task_id).find((report) => report.state !== 'running'));
      return terminal.every(Boolean) ? terminal : undefined;
    });
    assert.deepEqual(finals.map((report) => report?.state), ['succeeded', 'succeeded', 'succeeded', 'succeeded']);
    assert.deepEqual(finals[3]?.result, { volume: { device: 'd0', name: 'v3', size_bytes: 30 } });
  });

  it('reports the inventory again when told of a change', async () => {
    const before = server!.requests.filter((request) => request.url.endsWith('/inventory')).length;
    const response = await agent.inject({ method: 'POST', url: '/v1/inventory-changes', payload: { version: 4 } });
    assert.equal(response.statusCode, 202);
    await waitFor('a new inventory report', async () =>
      server!.requests.filter((request) => request.url.endsWith('/inventory')).length > before ? true : undefined,
    );
    assert.ok(clusterManager.requests.filter((request) => request.url === '/v1/inventory').length >= 2);
  });

  it('registers again when its server no longer knows it', async () => {
    const before = server!.requests.filter((request) => request.url === '/v1/agents').length;
    forgetAgent = true;
    await waitFor('a new registration', async () =>
      server!.requests.filter((request) => request.url === '/v1/agents').length > before ? true : undefined,
    );
    forgetAgent = false;
  });
});
