import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { GiB } from '../helpers.ts';
import { fileDriver } from './file-driver.ts';

test('GET /v1/devices discovers every device with its label, usage, state and epoch', async (t) => {
  const { app, root } = await fileDriver(t);
  await writeFile(join(root, 'd1', 'FAILED'), 'pulled');
  const response = await app.inject({ method: 'GET', url: '/v1/devices' });
  assert.equal(response.statusCode, 200);
  assert.deepEqual(response.json(), {
    items: [
      { id: 'd0', home_cluster: 'c0', capacity_bytes: GiB, used_bytes: 0, volume_count: 0, state: 'available', reason: null, epoch: 0 },
      {
        id: 'd1',
        home_cluster: 'c1',
        capacity_bytes: GiB,
        used_bytes: 0,
        volume_count: 0,
        state: 'unavailable',
        reason: 'the device is marked FAILED: pulled',
        epoch: 0,
      },
    ],
  });
});

test('GET /v1/devices/{id} probes one device', async (t) => {
  const { app } = await fileDriver(t);
  const response = await app.inject({ method: 'GET', url: '/v1/devices/d0' });
  assert.equal(response.statusCode, 200);
  assert.equal(response.json().id, 'd0');
  assert.equal(response.json().state, 'available');
});

test('an unknown device is a 404 problem', async (t) => {
  const { app } = await fileDriver(t);
  const response = await app.inject({ method: 'GET', url: '/v1/devices/d9' });
  assert.equal(response.statusCode, 404);
  assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
  assert.equal(response.json().type, 'urn:duplex:problem:device-not-found');
});

test('a device id outside the contract pattern is a 400 problem', async (t) => {
  const { app } = await fileDriver(t);
  const response = await app.inject({ method: 'GET', url: '/v1/devices/..%2Fd0' });
  assert.equal(response.statusCode, 400);
  assert.equal(response.json().type, 'urn:duplex:problem:validation-failed');
});

test('discovery answers 503 when the device root cannot be read', async (t) => {
  const { app, root } = await fileDriver(t);
  await rm(root, { recursive: true });
  const response = await app.inject({ method: 'GET', url: '/v1/devices' });
  assert.equal(response.statusCode, 503);
  assert.equal(response.headers['retry-after'], '1');
  assert.equal(response.json().type, 'urn:duplex:problem:not-ready');
});
