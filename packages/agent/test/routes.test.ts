import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { bearer, testClusterToken, testJoinToken } from '@duplex/testkit';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/app.ts';
import { loadAgentConfig } from '../src/config.ts';
import { ServerLink } from '../src/services/server-link.ts';

/** The credential the agent's (absent) server gave it: dispatches carry it. */
const serverCredential = 'dpa_credential-of-the-agent-under-test';

const dispatch = { task_id: 't1', kind: 'volume.create', device: 'd0', params: { name: 'v1', size_bytes: 1 }, attempt: 1, fencing_token: 1, epoch: 1 };

describe('agent routes refuse bad input with problem documents', () => {
  let app: FastifyInstance;

  before(async () => {
    const config = loadAgentConfig({
      AGENT_NAME: 'ss1-c0-A',
      SERVER_ID: 'A',
      SERVER_URL: 'http://127.0.0.1:9',
      STORAGE_SYSTEM_ID: 'ss1',
      CLUSTER_ID: 'c0',
      JOIN_TOKEN: testJoinToken,
      CLUSTER_TOKEN: testClusterToken('c0'),
      DRIVER_URL: 'http://127.0.0.1:9',
      CLUSTER_MANAGER_URL: 'http://127.0.0.1:9',
    });
    app = await buildApp({ config, logger: false });
    // Registered, as far as the routes can tell: the link holds a credential (and is never started).
    const link = new ServerLink(config, app.log, { url: 'http://127.0.0.1:9', pid: process.pid, startedAt: new Date().toISOString() });
    link.registration = { credential: serverCredential, credential_expires_at: new Date(Date.now() + 60_000).toISOString() } as ServerLink['registration'];
    app.agent.link = link;
  });
  after(() => app.close());

  const cases: { name: string; url: string; payload: string; contentType?: string; status: number; type: string }[] = [
    { name: 'malformed JSON', url: '/v1/tasks', payload: '{bad', status: 400, type: 'malformed-json' },
    { name: 'an empty batch', url: '/v1/tasks', payload: JSON.stringify({ tasks: [] }), status: 400, type: 'validation-failed' },
    { name: 'a wrong type', url: '/v1/tasks', payload: JSON.stringify({ tasks: [{ ...dispatch, attempt: '1' }] }), status: 400, type: 'validation-failed' },
    { name: 'an unknown field', url: '/v1/tasks', payload: JSON.stringify({ tasks: [{ ...dispatch, extra: true }] }), status: 400, type: 'validation-failed' },
    { name: 'an unknown kind', url: '/v1/tasks', payload: JSON.stringify({ tasks: [{ ...dispatch, kind: 'volume.explode' }] }), status: 400, type: 'validation-failed' },
    { name: 'a traversal device id', url: '/v1/tasks', payload: JSON.stringify({ tasks: [{ ...dispatch, device: '../d0' }] }), status: 400, type: 'validation-failed' },
    { name: 'an oversize batch', url: '/v1/tasks', payload: JSON.stringify({ tasks: Array.from({ length: 1001 }, () => dispatch) }), status: 400, type: 'validation-failed' },
    { name: 'a text body', url: '/v1/tasks', payload: 'hello', contentType: 'text/plain', status: 415, type: 'unsupported-media-type' },
    { name: 'a missing version', url: '/v1/inventory-changes', payload: JSON.stringify({}), status: 400, type: 'validation-failed' },
    { name: 'a negative version', url: '/v1/inventory-changes', payload: JSON.stringify({ version: -1 }), status: 400, type: 'validation-failed' },
    { name: 'a body over 1 MiB', url: '/v1/inventory-changes', payload: JSON.stringify({ version: 1, pad: 'x'.repeat(1_100_000) }), status: 413, type: 'payload-too-large' },
  ];

  for (const testCase of cases) {
    it(`answers ${testCase.status} ${testCase.type} to ${testCase.name}`, async () => {
      const response = await app.inject({
        method: 'POST',
        url: testCase.url,
        payload: testCase.payload,
        headers: {
          'content-type': testCase.contentType ?? 'application/json',
          'x-request-id': 'bad-input-1',
          ...bearer(testCase.url === '/v1/tasks' ? serverCredential : testClusterToken('c0')),
        },
      });
      assert.equal(response.statusCode, testCase.status);
      assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
      const problem = response.json();
      assert.equal(problem.type, `urn:duplex:problem:${testCase.type}`);
      assert.equal(problem.status, testCase.status);
      assert.equal(problem.request_id, 'bad-input-1');
      assert.equal(app.agent.runner?.size ?? 0, 0);
    });
  }

  it('answers 404 with a problem for an unknown route and 400 for an unknown query parameter', async () => {
    const missing = await app.inject({ method: 'GET', url: '/v1/nothing' });
    assert.equal(missing.statusCode, 404);
    assert.equal(missing.json().type, 'urn:duplex:problem:route-not-found');
    const query = await app.inject({ method: 'GET', url: '/v1/status?verbose=1', headers: bearer(testClusterToken('c0')) });
    assert.equal(query.statusCode, 400);
  });
});
