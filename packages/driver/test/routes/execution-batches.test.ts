import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ProblemError } from '@duplex/shared';
import { injectWithToken, testClusterToken } from '@duplex/testkit';
import { buildApp } from '../../src/app.ts';
import { createBackend } from '../../src/lib/backend.ts';
import type { ExecutionRequest } from '../../src/lib/types.ts';
import { MiB, request } from '../helpers.ts';
import { fileDriver } from './file-driver.ts';

interface BatchAnswer {
  results: { task_id: string; status: number; result?: { outcome: string; replayed: boolean }; problem?: { type: string } }[];
}

const batch = (executions: ExecutionRequest[]) => ({ method: 'POST' as const, url: '/v1/execution-batches', payload: { executions: executions.map((execution) => ({ execution })) } });

test('POST /v1/execution-batches runs a device\'s executions in order and answers each as a single execution would', async (t) => {
  const { app } = await fileDriver(t);
  const create = request('volume.create', { name: 'vol1', size_bytes: MiB }, { fencing: { token: 17, epoch: 1 } });
  const resize = request('volume.resize', { name: 'vol1', size_bytes: 2 * MiB }, { fencing: { token: 18, epoch: 1 } });
  const other = request('volume.create', { name: 'vol2', size_bytes: MiB }, { device: 'd1' });
  const ghost = request('volume.delete', { name: 'ghost' });
  const response = await app.inject(batch([create, resize, other, ghost]));
  assert.equal(response.statusCode, 200);
  const { results } = response.json<BatchAnswer>();
  assert.deepEqual(results.map((result) => [result.task_id, result.status, result.result?.outcome]), [
    [create.task_id, 200, 'succeeded'],
    [resize.task_id, 200, 'succeeded'],
    [other.task_id, 200, 'succeeded'],
    [ghost.task_id, 200, 'failed'],
  ]);

  // Again: each replays; an attempt older than the recorded one is refused as fenced, alone.
  const again = (await app.inject(batch([create, { ...resize, fencing: { token: 3, epoch: 1 } }]))).json<BatchAnswer>().results;
  assert.deepEqual(again.map((result) => [result.status, result.result?.replayed ?? result.problem?.type]), [
    [200, true],
    [409, 'urn:duplex:problem:stale-fencing-token'],
  ]);
  const probe = await app.inject({ method: 'GET', url: '/v1/devices/d0' });
  assert.equal(probe.json<{ used_bytes: number }>().used_bytes, 2 * MiB);
});

test('after an execution that could not run, the later ones on its device are not run', async (t) => {
  const backend = createBackend({ kind: 'memory', devices: [{ id: 'd0', home_cluster: 'c0', capacity_bytes: 100 * MiB }, { id: 'd1', home_cluster: 'c0', capacity_bytes: 100 * MiB }] });
  const broken = request('volume.create', { name: 'broken', size_bytes: MiB });
  const execute = backend.execute.bind(backend);
  backend.execute = async (execution) => {
    if (execution.task_id === broken.task_id) throw new ProblemError('not-ready', 'the device store is not reachable');
    return execute(execution);
  };
  const app = injectWithToken(await buildApp({ backend, clusterToken: testClusterToken('c0'), logger: false }), testClusterToken('c0'));
  t.after(() => app.close());
  const later = request('volume.create', { name: 'later', size_bytes: MiB });
  const elsewhere = request('volume.create', { name: 'elsewhere', size_bytes: MiB }, { device: 'd1' });
  const { results } = (await app.inject(batch([broken, later, elsewhere]))).json<BatchAnswer>();
  assert.deepEqual(results.map((result) => [result.task_id, result.status]), [
    [broken.task_id, 503],
    [later.task_id, 503],
    [elsewhere.task_id, 200],
  ]);
  const d0 = await app.inject({ method: 'GET', url: '/v1/devices/d0' });
  assert.equal(d0.json<{ volume_count: number }>().volume_count, 0, 'the later execution did not run');
});
