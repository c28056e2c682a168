import assert from 'node:assert/strict';
import { mkdir, open, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { ProblemError } from '@duplex/shared';
import type { DeviceLabel, DeviceStore } from '../../src/lib/device-store.ts';
import { createExecutor, type Executor, type ExecutorOptions } from '../../src/lib/executor.ts';
import { FileDeviceStore, provisionFileDevice } from '../../src/lib/file-store.ts';
import { MemoryDeviceStore } from '../../src/lib/memory-store.ts';
import { UsageCache, usageOf, type UsageBasis } from '../../src/lib/volume-usage.ts';
import { MiB, request, tempDir } from '../helpers.ts';

const capacity = 64 * MiB;
const labels: DeviceLabel[] = [
  { id: 'd0', home_cluster: 'c0', capacity_bytes: capacity },
  { id: 'd1', home_cluster: 'c1', capacity_bytes: capacity },
];

/** Stores that count the full listings they are asked for. */
class CountingMemoryStore extends MemoryDeviceStore {
  listings = 0;
  override async volumes(id: string) {
    this.listings += 1;
    return super.volumes(id);
  }
}

class CountingFileStore extends FileDeviceStore {
  listings = 0;
  override async volumes(id: string) {
    this.listings += 1;
    return super.volumes(id);
  }
}

interface Harness {
  backend: Executor;
  store: DeviceStore & { listings: number };
}

const harnesses: Record<string, (t: TestContext, options?: ExecutorOptions) => Promise<Harness>> = {
  file: async (t, options) => {
    const root = await tempDir(t);
    for (const label of labels) await provisionFileDevice(root, label);
    const store = new CountingFileStore(root);
    return { backend: createExecutor(store, options), store };
  },
  memory: async (_t, options) => {
    const store = new CountingMemoryStore(labels);
    return { backend: createExecutor(store, options), store };
  },
};

/**
 * The free bytes the executor counts on for a device, read without a listing: a create one
 * byte larger than the device is refused, naming the free bytes it saw.
 */
async function countedFree(backend: Executor, device: string): Promise<number> {
  const result = await backend.execute(request('volume.create', { name: 'never', size_bytes: capacity + 1 }, { device }));
  const match = /has (\d+) of \d+ bytes free/.exec(result.error?.detail ?? '');
  assert.ok(match, `an over-capacity create names the free bytes: ${JSON.stringify(result)}`);
  return Number(match[1]);
}

async function listedFree(store: DeviceStore, device: string): Promise<number> {
  return capacity - usageOf(await store.volumes(device)).used_bytes;
}

for (const [storeName, makeHarness] of Object.entries(harnesses)) {
  describe(`kept usage over the ${storeName} store`, () => {
    test('executions list a device once, and count every change the driver makes exactly', async (t) => {
      const { backend, store } = await makeHarness(t);
      // The epoch the tasks carry is already on the devices (a new one makes them be listed again).
      for (const device of ['d0', 'd1']) await store.writeEpoch(device, 1);
      const steps: [string, ReturnType<typeof request>][] = [
        ['create a', request('volume.create', { name: 'a', size_bytes: 3 * MiB })],
        ['create b', request('volume.create', { name: 'b', size_bytes: 5 * MiB })],
        ['grow a', request('volume.resize', { name: 'a', size_bytes: 7 * MiB })],
        ['shrink b', request('volume.resize', { name: 'b', size_bytes: 2 * MiB })],
        ['copy a on d0', request('volume.copy', { name: 'a', target_name: 'a-copy' })],
        ['copy b to d1', request('volume.copy', { name: 'b', target_device: 'd1', target_name: 'b' })],
        ['delete a', request('volume.delete', { name: 'a' })],
        ['a name taken', request('volume.create', { name: 'b', size_bytes: MiB })],
        ['too big', request('volume.create', { name: 'c', size_bytes: capacity })],
        ['missing', request('volume.delete', { name: 'ghost' })],
      ];
      for (const [what, step] of steps) {
        await backend.execute(step);
        for (const device of ['d0', 'd1']) {
          const listings = store.listings;
          const listed = await listedFree(store, device);
          store.listings = listings;
          assert.equal(await countedFree(backend, device), listed, `${what}: ${device}`);
        }
      }
      assert.equal(store.listings, 2, 'one listing per device for all of the executions');

      const fill = await backend.execute(request('volume.create', { name: 'fill', size_bytes: await listedFree(store, 'd0') }));
      assert.equal(fill.outcome, 'succeeded');
      assert.equal(await countedFree(backend, 'd0'), 0);
      assert.equal((await backend.execute(request('volume.create', { name: 'one-more', size_bytes: 1 }))).error?.type, 'urn:duplex:problem:insufficient-capacity');
    });

    test('a format, a probe and a replaced device list the volumes again', async (t) => {
      const { backend, store } = await makeHarness(t);
      await backend.execute(request('volume.create', { name: 'a', size_bytes: MiB }));
      await backend.execute(request('volume.create', { name: 'b', size_bytes: MiB }));
      const before = store.listings;
      await backend.execute(request('device.format'));
      assert.equal(store.listings, before + 1, 'the format lists what it removes');
      assert.equal(await countedFree(backend, 'd0'), capacity);
      assert.equal(store.listings, before + 2, 'and the next execution lists again');

      const probed = await backend.execute(request('device.probe'));
      assert.equal(store.listings, before + 3, 'a probe always lists');
      assert.equal(probed.result?.device?.volume_count, 0);
      assert.equal((await backend.probe('d0')).volume_count, 0);
      assert.equal(store.listings, before + 4, 'and so does reading the device');
    });

    test('with no kept usage every execution lists, as the driver did before', async (t) => {
      const { backend, store } = await makeHarness(t, { usageMaxAgeMs: 0 });
      for (const name of ['a', 'b', 'c']) await backend.execute(request('volume.create', { name, size_bytes: MiB }));
      assert.equal(store.listings, 3);
    });

    test('work a crash cut short is counted once when the retry finishes it', async (t) => {
      const { backend, store } = await makeHarness(t);
      for (const device of ['d0', 'd1']) await store.writeEpoch(device, 1);
      const copy = request('volume.copy', { name: 'src', target_device: 'd1', target_name: 'dst' });
      const create = request('volume.create', { name: 'half', size_bytes: 4 * MiB });
      await store.createVolume('d0', 'src', 3 * MiB);
      // What the crash left: each task's intent, part of the copy and the new volume without its size.
      await store.createVolume('d1', 'dst', MiB);
      await store.createVolume('d0', 'half', 1);
      for (const task of [copy, create]) {
        const { task_id, kind, device, attempt, fencing } = task;
        await store.writeRecord(device, { task_id, kind, device, attempt, token: fencing.token, epoch: fencing.epoch, outcome: 'applying', recorded_at: new Date().toISOString() });
      }
      assert.equal(await countedFree(backend, 'd0'), capacity - 3 * MiB - 1);
      assert.equal(await countedFree(backend, 'd1'), capacity - MiB);
      for (const task of [copy, create]) {
        const retried = await backend.execute({ ...task, attempt: 2, fencing: { token: 2, epoch: 1 } });
        assert.equal(retried.outcome, 'succeeded', JSON.stringify(retried));
      }
      assert.equal(await countedFree(backend, 'd0'), capacity - 7 * MiB);
      assert.equal(await countedFree(backend, 'd1'), capacity - 3 * MiB);
      for (const device of ['d0', 'd1']) assert.equal(await countedFree(backend, device), await listedFree(store, device), device);
    });

    test('a newer epoch recorded by another driver makes the device be listed again', async (t) => {
      const { backend, store } = await makeHarness(t);
      await backend.execute(request('volume.create', { name: 'a', size_bytes: MiB }, { fencing: { token: 1, epoch: 1 } }));
      assert.equal(await countedFreeAt(backend, 'd0', 1), capacity - MiB);
      // The other cluster takes the device over and creates a volume of its own.
      await store.writeEpoch('d0', 2);
      await store.createVolume('d0', 'theirs', 4 * MiB);
      assert.equal(await countedFreeAt(backend, 'd0', 2), capacity - 5 * MiB);
    });
  });
}

/** countedFree under a given epoch. */
async function countedFreeAt(backend: Executor, device: string, epoch: number): Promise<number> {
  const result = await backend.execute(request('volume.create', { name: 'never', size_bytes: capacity + 1 }, { device, fencing: { token: 1, epoch } }));
  return Number(/has (\d+) of/.exec(result.error?.detail ?? '')?.[1]);
}

describe('changes made outside the driver on the file store', () => {
  async function warmed(t: TestContext, options?: ExecutorOptions) {
    const root = await tempDir(t);
    for (const label of labels) await provisionFileDevice(root, label);
    const store = new CountingFileStore(root);
    const backend = createExecutor(store, options);
    await store.writeEpoch('d0', 1);
    await backend.execute(request('volume.create', { name: 'mine', size_bytes: MiB }));
    const volumes = join(root, 'd0', 'volumes');
    const addByHand = async (name: string, size: number, directory = volumes) => {
      const file = await open(join(directory, name), 'wx');
      await file.truncate(size);
      await file.close();
    };
    return { root, store, backend, volumes, addByHand };
  }

  test('a volume added by hand is shown at once by the device endpoints and the probe execution, and counted from then on', async (t) => {
    const { store, backend, addByHand } = await warmed(t);
    await addByHand('by-hand', 2 * MiB);
    assert.equal(await countedFree(backend, 'd0'), capacity - MiB, 'executions count on the kept usage for a while');
    assert.equal((await backend.probe('d0')).used_bytes, 3 * MiB);
    assert.equal((await backend.discover()).find((device) => device.id === 'd0')?.volume_count, 2);
    const probed = await backend.execute(request('device.probe'));
    assert.deepEqual([probed.result?.device?.used_bytes, probed.result?.device?.volume_count], [3 * MiB, 2]);
    assert.equal(await countedFree(backend, 'd0'), capacity - 3 * MiB);
    assert.equal(await countedFree(backend, 'd0'), await listedFree(store, 'd0'));
  });

  test('kept usage expires', async (t) => {
    const { backend, addByHand } = await warmed(t, { usageMaxAgeMs: 20 });
    await addByHand('by-hand', 2 * MiB);
    await new Promise((resolve) => setTimeout(resolve, 40));
    assert.equal(await countedFree(backend, 'd0'), capacity - 3 * MiB);
  });

  test('a device that was marked FAILED is listed again when it comes back', async (t) => {
    const { root, backend, addByHand } = await warmed(t);
    await writeFile(join(root, 'd0', 'FAILED'), 'controller swapped\n');
    const failed = await backend.execute(request('volume.create', { name: 'x', size_bytes: 1 }));
    assert.equal(failed.error?.type, 'urn:duplex:problem:device-unavailable');
    await addByHand('restored', 2 * MiB);
    await rm(join(root, 'd0', 'FAILED'));
    assert.equal(await countedFree(backend, 'd0'), capacity - 3 * MiB);
  });

  test('the device probe forgets a device whose label changed, even if it changed back', async (t) => {
    const { root, backend, addByHand } = await warmed(t);
    const labelPath = join(root, 'd0', 'device.json');
    await writeFile(labelPath, JSON.stringify({ ...labels[0], capacity_bytes: 2 * capacity }));
    await backend.scan();
    await writeFile(labelPath, JSON.stringify(labels[0]));
    await addByHand('by-hand', 2 * MiB);
    assert.equal(await countedFree(backend, 'd0'), capacity - 3 * MiB);
  });

  test('a replaced volumes directory is listed again', async (t) => {
    const { root, backend, volumes, addByHand } = await warmed(t);
    await rename(volumes, join(root, 'd0', 'volumes-old'));
    await mkdir(volumes);
    await addByHand('restored', 5 * MiB);
    assert.equal(await countedFree(backend, 'd0'), capacity - 5 * MiB);
  });

  test('a volumes directory turned into a link makes the device unavailable, kept usage or not', async (t) => {
    const { root, backend, volumes } = await warmed(t);
    const elsewhere = join(root, 'elsewhere');
    await rename(volumes, elsewhere);
    await symlink(elsewhere, volumes);
    const result = await backend.execute(request('volume.create', { name: 'v', size_bytes: 1 }));
    assert.equal(result.error?.type, 'urn:duplex:problem:device-unavailable');
    assert.match(result.error?.detail ?? '', /volumes\/ of device d0 is a symbolic link/);
  });

  test('a change that fails half done makes the device be listed again', async (t) => {
    const root = await tempDir(t);
    for (const label of labels) await provisionFileDevice(root, label);
    class FlakyStore extends CountingFileStore {
      override async createVolume(id: string, name: string, sizeBytes: number): Promise<void> {
        await super.createVolume(id, name, sizeBytes);
        if (name === 'flaky') throw new ProblemError('device-unavailable', 'the device stopped answering');
      }
    }
    const backend = createExecutor(new FlakyStore(root));
    await backend.execute(request('volume.create', { name: 'mine', size_bytes: MiB }));
    const flaky = await backend.execute(request('volume.create', { name: 'flaky', size_bytes: 2 * MiB }));
    assert.equal(flaky.error?.type, 'urn:duplex:problem:device-unavailable');
    assert.equal(await countedFree(backend, 'd0'), capacity - 3 * MiB, 'the volume the failed create left is counted');
  });
});

test('a memory device detached and provisioned again under its id starts empty', async () => {
  const store = new CountingMemoryStore(labels);
  const backend = createExecutor(store);
  await backend.execute(request('volume.create', { name: 'a', size_bytes: 8 * MiB }));
  store.detach('d0');
  await backend.provision(labels[0]!);
  assert.equal(await countedFree(backend, 'd0'), capacity);
});

describe('UsageCache', () => {
  const basis: UsageBasis = { inspection: 'label', epoch: 1, volumes: 'dir-1' };

  test('holds a listing and the changes added to it while the device looks the same and for its maximum age', () => {
    let now = 1_000;
    const cache = new UsageCache(100, () => now);
    assert.equal(cache.valid('d0', basis), undefined);
    cache.keep('d0', basis, { used_bytes: 10, volume_count: 1 });
    cache.add('d0', 5, 1);
    cache.add('d1', 5, 1);
    assert.deepEqual(cache.valid('d0', basis), { used_bytes: 15, volume_count: 2 });
    assert.equal(cache.valid('d1', basis), undefined, 'nothing is added to a device never listed');
    for (const changed of [{ inspection: 'other' }, { epoch: 2 }, { volumes: 'dir-2' }]) {
      assert.equal(cache.valid('d0', { ...basis, ...changed }), undefined, JSON.stringify(changed));
    }
    now += 99;
    assert.ok(cache.valid('d0', basis));
    now += 1;
    assert.equal(cache.valid('d0', basis), undefined, 'expired');
    now = 500;
    assert.equal(cache.valid('d0', basis), undefined, 'a clock that went back is not trusted');
  });

  test('forgets a device, or every device that is gone or looks different', () => {
    const cache = new UsageCache(1_000, () => 0);
    for (const id of ['d0', 'd1', 'd2']) cache.keep(id, basis, { used_bytes: 1, volume_count: 1 });
    cache.forget('d0');
    cache.forgetChanged(new Map([['d1', 'label'], ['d2', 'another label']]));
    assert.deepEqual(['d0', 'd1', 'd2'].map((id) => cache.valid(id, basis) !== undefined), [false, true, false]);
    cache.forgetChanged(new Map());
    assert.equal(cache.valid('d1', basis), undefined, 'a device the probe no longer finds');
  });
});
