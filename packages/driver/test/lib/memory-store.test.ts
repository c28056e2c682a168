import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createExecutor } from '../../src/lib/executor.ts';
import { createMemoryStore, parseMemoryDevices } from '../../src/lib/memory-store.ts';
import { GiB, request } from '../helpers.ts';

test('the device list is id:home_cluster:capacity_bytes, comma separated', () => {
  assert.deepEqual(parseMemoryDevices('d0:c0:1073741824, d1:c1:5'), [
    { id: 'd0', home_cluster: 'c0', capacity_bytes: GiB },
    { id: 'd1', home_cluster: 'c1', capacity_bytes: 5 },
  ]);
  assert.throws(() => parseMemoryDevices('d0:c0'), /d0:c0/);
  assert.throws(() => parseMemoryDevices('d0:c0:ten'), /capacity_bytes/);
  assert.throws(() => parseMemoryDevices('D0:c0:1'), /valid id/);
  assert.throws(() => parseMemoryDevices('d0:c0:1:x'), /d0:c0:1:x/);
  assert.throws(() => parseMemoryDevices('d0:c0:1,d0:c1:2'), /listed twice/);
});

test('injected failures are device-unavailable outcomes that leave no record, so a retry runs', async () => {
  const store = createMemoryStore([{ id: 'd0', home_cluster: 'c0', capacity_bytes: GiB }]);
  const draws = [0.1, 0.9];
  const backend = createExecutor(store, { faults: { failureRate: 0.5, random: () => draws.shift() ?? 1 } });
  const create = request('volume.create', { name: 'v', size_bytes: 1 });
  const failed = await backend.execute(create);
  assert.equal(failed.outcome, 'failed');
  assert.equal(failed.error?.type, 'urn:duplex:problem:device-unavailable');
  assert.match(failed.error?.detail ?? '', /injected/);
  assert.equal(await store.volumeSize('d0', 'v'), undefined);

  const retried = await backend.execute(create);
  assert.equal(retried.outcome, 'succeeded');
  assert.equal(retried.replayed, false);
  assert.equal(await store.volumeSize('d0', 'v'), 1);
});

test('latency is added to every execution', async () => {
  const backend = createExecutor(createMemoryStore([{ id: 'd0', home_cluster: 'c0', capacity_bytes: GiB }]), {
    faults: { latencyMs: 60 },
  });
  const started = performance.now();
  await backend.execute(request('device.probe'));
  await backend.execute(request('device.probe'));
  assert.ok(performance.now() - started >= 115, 'two executions on one device take at least twice the latency');
});

test('a device can be failed and brought back', async () => {
  const store = createMemoryStore([{ id: 'd0', home_cluster: 'c0', capacity_bytes: GiB }]);
  const backend = createExecutor(store);
  store.setFault('d0', 'pulled');
  assert.deepEqual([(await backend.probe('d0')).state, (await backend.probe('d0')).reason], ['unavailable', 'pulled']);
  store.setFault('d0', null);
  assert.equal((await backend.probe('d0')).state, 'available');
});
