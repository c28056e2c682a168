import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { test } from 'node:test';
import { buildApp } from '../../src/app.ts';
import { testClusterToken } from '@duplex/testkit';
import { createBackend } from '../../src/lib/backend.ts';
import { fileDriver } from './file-driver.ts';

test('GET /healthz answers ok', async (t) => {
  const { app } = await fileDriver(t);
  const response = await app.inject({ method: 'GET', url: '/healthz' });
  assert.equal(response.statusCode, 200);
  assert.deepEqual(response.json(), { status: 'ok' });
});

test('GET /readyz is ready while the device root can be read, 503 when it cannot', async (t) => {
  const { app, root } = await fileDriver(t);
  const ready = await app.inject({ method: 'GET', url: '/readyz' });
  assert.equal(ready.statusCode, 200);
  assert.deepEqual(ready.json(), { status: 'ready', checks: { devices: 'ok' } });

  await rm(root, { recursive: true });
  const notReady = await app.inject({ method: 'GET', url: '/readyz' });
  assert.equal(notReady.statusCode, 503);
  assert.match(String(notReady.headers['content-type']), /^application\/problem\+json/);
  assert.equal(notReady.json().type, 'urn:duplex:problem:not-ready');
});

test('the memory backend is always ready', async (t) => {
  const app = await buildApp({ backend: createBackend({ kind: 'memory', devices: [] }), clusterToken: testClusterToken(), logger: false });
  t.after(() => app.close());
  const response = await app.inject({ method: 'GET', url: '/readyz' });
  assert.equal(response.statusCode, 200);
});

test('GET /openapi.json serves the driver contract', async (t) => {
  const { app } = await fileDriver(t);
  const response = await app.inject({ method: 'GET', url: '/openapi.json' });
  assert.equal(response.statusCode, 200);
  assert.equal(response.json().info.title, 'duplex driver API');
});
