import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { buildApp, loadServerConfig } from '@duplex/server';
import { bearer, createTestDatabase, freePort, testAdminToken, testJoinToken, testJoinTokens, testServiceToken, waitFor, type TestDatabase } from '@duplex/testkit';
import type { FastifyInstance } from 'fastify';
import { createDuplexClient, ProblemResponseError, ServersUnavailableError, type Task, type TaskState } from '../src/index.ts';

interface Recorder {
  url: string;
  requests: { method: string; url: string; headers: IncomingMessage['headers'] }[];
  close(): Promise<void>;
}

/** A plain HTTP server that records each request and answers with `answer`. */
async function startRecorder(answer: (request: IncomingMessage, response: ServerResponse) => void): Promise<Recorder> {
  const requests: Recorder['requests'] = [];
  const server: Server = createServer((request, response) => {
    requests.push({ method: request.method ?? '', url: request.url ?? '', headers: request.headers });
    request.resume();
    request.on('end', () => answer(request, response));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const unavailable = (_request: IncomingMessage, response: ServerResponse) =>
  response.writeHead(503, { 'content-type': 'application/problem+json' }).end(JSON.stringify({ type: 'urn:duplex:problem:not-ready', title: 'The service is not ready', status: 503 }));

describe('the duplex client against a real server', () => {
  let tdb: TestDatabase;
  let server: FastifyInstance;
  let serverUrl = '';
  let agent: Recorder;
  let broken: Recorder;
  let closedUrl = '';
  let agentId = '';
  let agentCredential = '';
  const probe = { kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' } as const;

  /** The agent's report of `state` for the task's current attempt, as its agent would send it. */
  const report = async (task: Task, state: 'running' | 'succeeded') => {
    const row = await tdb.db('tasks').where({ id: task.id }).first<{ attempt: number; fencing_token: number }>();
    const response = await server.inject({
      method: 'POST',
      url: `/v1/agents/${encodeURIComponent(agentId)}/task-reports`,
      headers: bearer(agentCredential),
      payload: { reports: [{ task_id: task.id, attempt: row.attempt, fencing_token: row.fencing_token, state, ...(state === 'succeeded' ? { result: {} } : {}) }] },
    });
    assert.equal(response.statusCode, 200, response.body);
  };

  before(async () => {
    tdb = await createTestDatabase();
    server = await buildApp({
      config: loadServerConfig({ DATABASE_URL: tdb.url, SERVER_ID: 'A', AGENT_LEASE_TTL_MS: '600000', ADMIN_TOKEN: testAdminToken, JOIN_TOKENS: testJoinTokens, SERVICE_TOKEN: testServiceToken }),
      db: tdb.db,
      logger: false,
    });
    serverUrl = await server.listen({ host: '127.0.0.1', port: 0 });
    agent = await startRecorder((_request, response) => response.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ accepted: 1, duplicates: 0 })));
    broken = await startRecorder(unavailable);
    closedUrl = `http://127.0.0.1:${await freePort()}`;
    const registered = await server.inject({
      method: 'POST',
      url: '/v1/agents',
      headers: bearer(testJoinToken),
      payload: { name: 'ss1-c0-A', server_id: 'A', storage_system_id: 'ss1', cluster_id: 'c0', url: agent.url, pid: 4242, started_at: '2026-12-03T10:00:00Z' },
    });
    ({ id: agentId, credential: agentCredential } = registered.json<{ id: string; credential: string }>());
    const device = { id: 'd0', home_cluster: 'c0', owner_cluster: 'c0', capacity_bytes: 1 << 30, used_bytes: 0, volume_count: 0, state: 'available', reason: null, epoch: 1 };
    const inventory = await server.inject({
      method: 'PUT',
      url: `/v1/agents/${encodeURIComponent(agentId)}/inventory`,
      headers: bearer(agentCredential),
      payload: { storage_system_id: 'ss1', cluster_id: 'c0', version: 1, cluster_state: 'online', epoch: 1, recorded_at: '2026-12-03T10:00:00.000Z', devices: [device] },
    });
    assert.equal(inventory.statusCode, 200, inventory.body);
  });

  after(async () => {
    await server?.close();
    await agent?.close();
    await broken?.close();
    await tdb?.drop();
  });

  it('fails over past a server that cannot be reached', async () => {
    const failovers: string[] = [];
    const client = createDuplexClient({ servers: [closedUrl, serverUrl], token: testAdminToken, onFailover: (from, _to, reason) => failovers.push(`${from} ${reason}`) });
    const task = await client.submitTask(probe);
    assert.equal(task.state, 'queued');
    assert.deepEqual(failovers, [`${closedUrl} ECONNREFUSED`]);
    assert.equal((await client.getTask(task.id)).id, task.id, 'the server that answered is asked first from then on');
  });

  it('sends a submission that got a 5xx to the next server with the same Idempotency-Key: one task', async () => {
    const client = createDuplexClient({ servers: [broken.url, serverUrl], token: testAdminToken });
    const before = broken.requests.length;
    const task = await client.submitTask(probe, { idempotencyKey: 'client-test-key-1' });
    const sent = broken.requests.slice(before);
    assert.equal(sent.length, 1);
    assert.equal(sent[0]?.headers['idempotency-key'], 'client-test-key-1');
    const again = await client.submitTask(probe, { idempotencyKey: 'client-test-key-1' });
    assert.equal(again.id, task.id);
    const rows = await tdb.db('tasks').where({ idempotency_key: 'client-test-key-1' });
    assert.equal(rows.length, 1);
  });

  it('does not repeat a request that may have been applied and has no key: the 5xx is the answer', async () => {
    const client = createDuplexClient({ servers: [broken.url, serverUrl], token: testAdminToken });
    const tokens = await tdb.db('api_tokens').count<{ count: string }[]>('* as count');
    await assert.rejects(client.api.POST('/v1/tokens', { body: { name: 'not-twice', role: 'viewer' } }).then((result) => {
      if (result.response.status >= 500) throw new ProblemResponseError(result.response.status, result.error as never);
      return result;
    }), (error: unknown) => error instanceof ProblemResponseError && error.status === 503);
    assert.deepEqual(await tdb.db('api_tokens').count<{ count: string }[]>('* as count'), tokens);
  });

  it('turns a refusal into a problem error with its code', async () => {
    const client = createDuplexClient({ servers: [serverUrl], token: testAdminToken });
    await assert.rejects(client.getTask('tsk_does_not_exist'), (error: unknown) => error instanceof ProblemResponseError && error.status === 404 && error.code === 'task-not-found');
    const stranger = createDuplexClient({ servers: [serverUrl] });
    await assert.rejects(stranger.getTask('tsk_does_not_exist'), (error: unknown) => error instanceof ProblemResponseError && error.status === 401 && error.code === 'unauthenticated');
  });

  it('says which servers failed when none answers', async () => {
    const client = createDuplexClient({ servers: [closedUrl, `http://127.0.0.1:${await freePort()}`], token: testAdminToken, rounds: 1 });
    await assert.rejects(client.getTask('tsk_x'), (error: unknown) => error instanceof ServersUnavailableError && Object.keys(error.failures).length === 2);
  });

  it('waits for a task by its events, seeing each state it reaches, through a server that fails first', async () => {
    const client = createDuplexClient({ servers: [closedUrl, serverUrl], token: testAdminToken });
    const task = await client.submitTask(probe);
    await waitFor('the dispatch', async () => ((await tdb.db('tasks').where({ id: task.id }).first())?.state === 'dispatched' ? true : undefined));
    const seen: TaskState[] = [];
    const done = client.waitForTask(task.id, { onState: (current) => seen.push(current.state), timeoutMs: 10_000 });
    await waitFor('the wait to read the task', async () => (seen.length > 0 ? true : undefined));
    await report(task, 'running');
    await waitFor('the wait to see it running', async () => (seen.includes('running') ? true : undefined));
    await report(task, 'succeeded');
    const finished = await done;
    assert.equal(finished.state, 'succeeded');
    assert.deepEqual(seen, ['dispatched', 'running', 'succeeded']);
  });

  it('gives up waiting after its timeout', async () => {
    const client = createDuplexClient({ servers: [serverUrl], token: testAdminToken });
    const task = await client.submitTask(probe);
    await assert.rejects(client.waitForTask(task.id, { timeoutMs: 300 }), /did not finish within 300 ms/);
  });
});
