import assert from 'node:assert/strict';
import { rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ProblemError } from '@duplex/shared';
import { DeviceWatch, describeChanges } from '../../src/lib/device-watch.ts';
import { createExecutor } from '../../src/lib/executor.ts';
import { createFileStore, provisionFileDevice } from '../../src/lib/file-store.ts';
import { createMemoryStore } from '../../src/lib/memory-store.ts';
import { GiB, MiB, tempDir } from '../helpers.ts';

function memoryWatch() {
  const store = createMemoryStore([
    { id: 'd0', home_cluster: 'c0', capacity_bytes: GiB },
    { id: 'd1', home_cluster: 'c0', capacity_bytes: GiB },
  ]);
  const backend = createExecutor(store);
  const changes: string[][] = [];
  // A long interval: the test probes by hand.
  const watch = new DeviceWatch(backend, 3_600_000, (snapshot, previous) => changes.push(describeChanges(previous, snapshot.devices)));
  return { store, backend, watch, changes };
}

describe('DeviceWatch', () => {
  test('numbers only the probes that find a change, and names each change', async (t) => {
    const { store, backend, watch, changes } = memoryWatch();
    t.after(() => watch.stop());
    await watch.start();
    assert.equal(watch.current().generation, 1);
    await watch.probe();
    assert.equal(watch.current().generation, 1, 'nothing changed');

    store.setFault('d1', 'controller lost');
    await watch.probe();
    store.setFault('d1', null);
    store.setCapacity('d0', 2 * GiB);
    await watch.probe();
    await backend.provision({ id: 'd2', home_cluster: 'c1', capacity_bytes: MiB });
    store.detach('d1');
    await watch.probe();
    assert.equal(watch.current().generation, 4);
    assert.deepEqual(changes, [['d1 unavailable (controller lost)'], ['d0 capacity 1073741824 -> 2147483648', 'd1 available'], ['d2 found', 'd1 gone']]);
    await assert.rejects(backend.provision({ id: 'd2', home_cluster: 'c1', capacity_bytes: MiB }), (error: unknown) => error instanceof ProblemError && error.code === 'device-exists');
  });

  test('a long poll answers at the next change, at its deadline, or at once for news', async (t) => {
    const { store, watch } = memoryWatch();
    t.after(() => watch.stop());
    await watch.start();
    const { instance_id: instance, generation } = watch.current();
    assert.equal((await watch.changesAfter(generation - 1, instance, 10_000)).generation, generation, 'a newer generation answers at once');
    assert.equal((await watch.changesAfter(generation, 'an earlier run', 10_000)).generation, generation, 'another run answers at once');
    const startedAt = Date.now();
    assert.equal((await watch.changesAfter(generation, instance, 30)).generation, generation);
    assert.ok(Date.now() - startedAt >= 25, 'waited for its deadline');

    const waiting = watch.changesAfter(generation, instance, 10_000);
    store.setFault('d0', 'gone');
    await watch.probe();
    assert.equal((await waiting).generation, generation + 1);

    const aborted = new AbortController();
    const cancelled = watch.changesAfter(generation + 1, instance, 10_000, aborted.signal);
    aborted.abort();
    assert.equal((await cancelled).generation, generation + 1);
    const pending = watch.changesAfter(generation + 1, instance, 10_000);
    watch.stop();
    assert.equal((await pending).generation, generation + 1, 'stopping answers every waiter');
  });

  test('sees file devices marked FAILED, removed, relabelled and added', async (t) => {
    const root = await tempDir(t);
    await provisionFileDevice(root, { id: 'd0', home_cluster: 'c0', capacity_bytes: GiB });
    await provisionFileDevice(root, { id: 'd1', home_cluster: 'c0', capacity_bytes: GiB });
    const backend = createExecutor(createFileStore(root));
    const watch = new DeviceWatch(backend, 3_600_000);
    t.after(() => watch.stop());
    await watch.start();
    const statusOf = (id: string) => watch.current().devices.find((status) => status.id === id);

    await writeFile(join(root, 'd0', 'FAILED'), 'media errors\nmore detail\n');
    await watch.probe();
    assert.deepEqual([statusOf('d0')?.state, statusOf('d0')?.reason], ['unavailable', 'the device is marked FAILED: media errors']);
    await rm(join(root, 'd0', 'FAILED'));
    await rename(join(root, 'd1'), join(root, '.d1-away'));
    await watch.probe();
    assert.equal(statusOf('d0')?.state, 'available');
    assert.equal(statusOf('d1'), undefined);
    await rename(join(root, '.d1-away'), join(root, 'd1'));
    await writeFile(join(root, 'd1', 'device.json'), JSON.stringify({ id: 'd1', home_cluster: 'c0', capacity_bytes: 3 * GiB }));
    const created = await backend.provision({ id: 'd5', home_cluster: 'c1', capacity_bytes: MiB });
    assert.deepEqual([created.id, created.capacity_bytes, created.volume_count], ['d5', MiB, 0]);
    await watch.probe();
    assert.equal(statusOf('d1')?.capacity_bytes, 3 * GiB);
    assert.equal(statusOf('d5')?.home_cluster, 'c1');
    assert.equal(watch.current().generation, 4);
  });
});
