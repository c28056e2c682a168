import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { bearer, testClusterToken } from '@duplex/testkit';
import { MiB, request } from '../helpers.ts';
import { fileDriver } from './file-driver.ts';

/** Every device operation of the contract, as one request each. */
const deviceOperations = [
  { method: 'GET', url: '/v1/devices' },
  { method: 'POST', url: '/v1/devices', payload: { id: 'd9', home_cluster: 'c0', capacity_bytes: MiB } },
  { method: 'GET', url: '/v1/device-changes?wait_ms=0' },
  { method: 'GET', url: '/v1/devices/d0' },
  { method: 'POST', url: '/v1/executions', payload: request('volume.create', { name: 'intruder', size_bytes: MiB }) },
] as const;

const refusals = [
  ['no token', {}],
  ['the token of another cluster', bearer(testClusterToken('c1'))],
  ['a token that is not a bearer token', { authorization: `Basic ${testClusterToken('c0')}` }],
] as const;

for (const [who, headers] of refusals) {
  test(`the driver refuses ${who} on every device operation, and nothing changes on disk`, async (t) => {
    const { app, root } = await fileDriver(t);
    const before = await readdir(root);
    for (const operation of deviceOperations) {
      const response = await app.inject({ ...operation, headers: { authorization: undefined, ...headers } });
      assert.equal(response.statusCode, 401, `${operation.method} ${operation.url}`);
      assert.equal(response.json().type, 'urn:duplex:problem:unauthenticated');
      assert.equal(response.headers['www-authenticate'], 'Bearer realm="duplex"');
    }
    assert.deepEqual(await readdir(root), before, 'no device was created');
    assert.deepEqual(await readdir(join(root, 'd0', 'volumes')), [], 'no volume was created');
  });
}

test("the driver runs its own cluster's calls, and health and the contract stay open", async (t) => {
  const { app, root } = await fileDriver(t);
  const execution = await app.inject({ method: 'POST', url: '/v1/executions', payload: request('volume.create', { name: 'mine', size_bytes: MiB }) });
  assert.equal(execution.statusCode, 200);
  assert.deepEqual(await readdir(join(root, 'd0', 'volumes')), ['mine']);
  for (const url of ['/healthz', '/readyz', '/openapi.json', '/metrics']) {
    assert.equal((await app.inject({ method: 'GET', url, headers: { authorization: undefined } })).statusCode, 200, url);
  }
});

test('an address that failed authentication too often is answered 429 until its window ends, even with the right token', async (t) => {
  const { app } = await fileDriver(t);
  const wrong = bearer(testClusterToken('c1'));
  for (let attempt = 0; attempt < 20; attempt += 1) {
    assert.equal((await app.inject({ method: 'GET', url: '/v1/devices', headers: wrong })).statusCode, 401);
  }
  const blocked = await app.inject({ method: 'GET', url: '/v1/devices' });
  assert.equal(blocked.statusCode, 429);
  assert.equal(blocked.json().type, 'urn:duplex:problem:too-many-failures');
  assert.ok(Number(blocked.headers['retry-after']) > 0);
  const other = await app.inject({ method: 'GET', url: '/v1/devices', remoteAddress: '10.0.0.9' });
  assert.equal(other.statusCode, 200, 'another address is not held back');
});
