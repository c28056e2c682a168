import assert from 'node:assert/strict';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { MiB, request } from '../helpers.ts';
import { fileDriver } from './file-driver.ts';

const post = (app: FastifyInstance, payload: unknown) => app.inject({ method: 'POST', url: '/v1/executions', payload: payload as object });

function assertProblem(response: { statusCode: number; headers: Record<string, unknown>; json: () => { type: string; status: number } }, status: number, code: string): void {
  assert.equal(response.statusCode, status);
  assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
  assert.equal(response.json().type, `urn:duplex:problem:${code}`);
  assert.equal(response.json().status, status);
}

test('POST /v1/executions creates a volume on disk and a retry replays it', async (t) => {
  const { app, root } = await fileDriver(t);
  const body = request('volume.create', { name: 'vol1', size_bytes: MiB }, { fencing: { token: 17, epoch: 1 } });
  const response = await post(app, body);
  assert.equal(response.statusCode, 200);
  assert.deepEqual(response.json(), {
    task_id: body.task_id,
    outcome: 'succeeded',
    replayed: false,
    result: { volume: { device: 'd0', name: 'vol1', size_bytes: MiB } },
  });
  assert.equal((await stat(join(root, 'd0', 'volumes', 'vol1'))).size, MiB);

  const retry = await post(app, body);
  assert.equal(retry.statusCode, 200);
  assert.equal(retry.json().replayed, true);
});

test('a device-level failure is 200 with outcome failed and a problem', async (t) => {
  const { app } = await fileDriver(t);
  const response = await post(app, request('volume.delete', { name: 'ghost' }));
  assert.equal(response.statusCode, 200);
  assert.equal(response.json().outcome, 'failed');
  assert.equal(response.json().error.type, 'urn:duplex:problem:volume-not-found');
  assert.match(response.json().error.detail, /ghost/);
});

test('each kind runs through the route', async (t) => {
  const { app } = await fileDriver(t);
  const results = [];
  for (const [kind, params, device] of [
    ['volume.create', { name: 'a', size_bytes: 10 }, 'd0'],
    ['volume.resize', { name: 'a', size_bytes: 20 }, 'd0'],
    ['volume.copy', { name: 'a', target_device: 'd1', target_name: 'b' }, 'd0'],
    ['volume.delete', { name: 'a' }, 'd0'],
    ['device.probe', {}, 'd1'],
    ['device.format', {}, 'd1'],
  ] as const) {
    const response = await post(app, request(kind, params, { device }));
    assert.equal(response.statusCode, 200, kind);
    assert.equal(response.json().outcome, 'succeeded', kind);
    results.push(response.json().result);
  }
  assert.deepEqual(results, [
    { volume: { device: 'd0', name: 'a', size_bytes: 10 } },
    { volume: { device: 'd0', name: 'a', size_bytes: 20 } },
    { volume: { device: 'd1', name: 'b', size_bytes: 20 }, source: { device: 'd0', name: 'a', size_bytes: 20 } },
    { deleted: { device: 'd0', name: 'a', size_bytes: 20 } },
    { device: { id: 'd1', state: 'available', reason: null, capacity_bytes: 1024 ** 3, used_bytes: 20, volume_count: 1 } },
    { volumes_removed: 1 },
  ]);
});

test('malformed JSON is a 400 malformed-json problem', async (t) => {
  const { app } = await fileDriver(t);
  const response = await app.inject({
    method: 'POST',
    url: '/v1/executions',
    headers: { 'content-type': 'application/json' },
    payload: '{"task_id": "t1",',
  });
  assertProblem(response, 400, 'malformed-json');
});

test('a body that is not JSON is a 415 problem', async (t) => {
  const { app } = await fileDriver(t);
  const response = await app.inject({ method: 'POST', url: '/v1/executions', headers: { 'content-type': 'application/xml' }, payload: '<x/>' });
  assertProblem(response, 415, 'unsupported-media-type');
});

test('wrong types and unknown fields are 400 validation-failed problems', async (t) => {
  const { app } = await fileDriver(t);
  const valid = request('volume.create', { name: 'v', size_bytes: 1 });
  for (const body of [
    { ...valid, params: { name: 'v', size_bytes: '1' } },
    { ...valid, fencing: { token: 'one', epoch: 1 } },
    { ...valid, attempt: 0 },
    { ...valid, kind: 'volume.explode' },
    { ...valid, surprise: true },
    { ...valid, params: { name: 'v', size_bytes: 1, colour: 'red' } },
    { ...valid, fencing: { token: 1, epoch: 1, lease: 3 } },
    { ...valid, params: { name: 'v' } },
  ]) {
    assertProblem(await post(app, body), 400, 'validation-failed');
  }
});

test('an unknown device is a 404 problem, for the copy target too', async (t) => {
  const { app } = await fileDriver(t);
  assertProblem(await post(app, request('device.probe', {}, { device: 'd9' })), 404, 'device-not-found');
  await post(app, request('volume.create', { name: 'v', size_bytes: 1 }));
  assertProblem(await post(app, request('volume.copy', { name: 'v', target_device: 'd9', target_name: 'w' })), 404, 'device-not-found');
});

test('a traversal name is a 400 invalid-name problem and nothing is written', async (t) => {
  const { app, root } = await fileDriver(t);
  for (const name of ['../../escape', 'a/b', '.hidden', 'a\u0000b', 'x'.repeat(129)]) {
    assertProblem(await post(app, request('volume.create', { name, size_bytes: 1 }, { fencing: { token: 1, epoch: 5 } })), 400, 'invalid-name');
    assertProblem(
      await post(app, request('volume.copy', { name: 'v', target_device: 'd1', target_name: name }, { fencing: { token: 1, epoch: 5 } })),
      400,
      'invalid-name',
    );
  }
  assert.deepEqual((await readdir(root)).sort(), ['d0', 'd1']);
  for (const device of ['d0', 'd1']) {
    assert.deepEqual((await readdir(join(root, device))).sort(), ['device.json', 'volumes']);
    assert.deepEqual(await readdir(join(root, device, 'volumes')), []);
  }
});

test('a stale epoch and a stale token are 409 problems', async (t) => {
  const { app } = await fileDriver(t);
  const first = request('volume.create', { name: 'v', size_bytes: 1 }, { fencing: { token: 10, epoch: 3 } });
  assert.equal((await post(app, first)).statusCode, 200);
  assertProblem(await post(app, request('device.probe', {}, { fencing: { token: 1, epoch: 2 } })), 409, 'stale-epoch');
  assertProblem(await post(app, { ...first, fencing: { token: 9, epoch: 3 } }), 409, 'stale-fencing-token');
});
