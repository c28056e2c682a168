import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { ProblemError } from '@duplex/shared';
import type { DeviceLabel, DeviceStore } from '../../src/lib/device-store.ts';
import { createExecutor, type Executor } from '../../src/lib/executor.ts';
import { createFileStore, provisionFileDevice } from '../../src/lib/file-store.ts';
import { createMemoryStore, MemoryDeviceStore } from '../../src/lib/memory-store.ts';
import type { ExecutionResult } from '../../src/lib/types.ts';
import { MiB, request, tempDir } from '../helpers.ts';

const labels: DeviceLabel[] = [
  { id: 'd0', home_cluster: 'c0', capacity_bytes: 100 * MiB },
  { id: 'd1', home_cluster: 'c1', capacity_bytes: 10 * MiB },
];

interface Harness {
  backend: Executor;
  store: DeviceStore;
  markUnavailable(id: string): Promise<void>;
}

/** The same suite runs over every store: the semantics are the executor's, not the store's. */
const harnesses: Record<string, (t: TestContext) => Promise<Harness>> = {
  file: async (t) => {
    const root = await tempDir(t);
    for (const label of labels) await provisionFileDevice(root, label);
    const store = createFileStore(root);
    return { backend: createExecutor(store), store, markUnavailable: (id) => writeFile(join(root, id, 'FAILED'), 'disk pulled\n') };
  },
  memory: async () => {
    const store = createMemoryStore(labels);
    return { backend: createExecutor(store), store, markUnavailable: async (id) => store.setFault(id, 'the device is marked FAILED: disk pulled') };
  },
};

const problemCode = (result: ExecutionResult) => result.error?.type.replace('urn:duplex:problem:', '');
const refusedWith = (code: string) => (error: unknown) => error instanceof ProblemError && error.code === code;

for (const [storeName, makeHarness] of Object.entries(harnesses)) {
  describe(`executor over the ${storeName} store`, () => {
    test('creates, resizes (grow and shrink) and deletes a volume, and probing shows the usage', async (t) => {
      const { backend } = await makeHarness(t);
      const created = await backend.execute(request('volume.create', { name: 'vol1', size_bytes: 4 * MiB }));
      assert.deepEqual(created, {
        task_id: created.task_id,
        outcome: 'succeeded',
        replayed: false,
        result: { volume: { device: 'd0', name: 'vol1', size_bytes: 4 * MiB } },
      });
      let report = await backend.probe('d0');
      assert.equal(report.used_bytes, 4 * MiB);
      assert.equal(report.volume_count, 1);

      const grown = await backend.execute(request('volume.resize', { name: 'vol1', size_bytes: 8 * MiB }));
      assert.deepEqual(grown.result, { volume: { device: 'd0', name: 'vol1', size_bytes: 8 * MiB } });
      const shrunk = await backend.execute(request('volume.resize', { name: 'vol1', size_bytes: MiB }));
      assert.equal(shrunk.result?.volume?.size_bytes, MiB);
      assert.equal((await backend.probe('d0')).used_bytes, MiB);

      const deleted = await backend.execute(request('volume.delete', { name: 'vol1' }));
      assert.deepEqual(deleted.result, { deleted: { device: 'd0', name: 'vol1', size_bytes: MiB } });
      report = await backend.probe('d0');
      assert.equal(report.used_bytes, 0);
      assert.equal(report.volume_count, 0);
    });

    test('a missing volume and an existing name are failed outcomes', async (t) => {
      const { backend } = await makeHarness(t);
      for (const [kind, params] of [
        ['volume.delete', { name: 'ghost' }],
        ['volume.resize', { name: 'ghost', size_bytes: 1 }],
        ['volume.copy', { name: 'ghost', target_name: 'copy' }],
      ] as const) {
        const result = await backend.execute(request(kind, params));
        assert.equal(result.outcome, 'failed', kind);
        assert.equal(problemCode(result), 'volume-not-found', kind);
        assert.equal(result.error?.status, 404);
      }
      await backend.execute(request('volume.create', { name: 'vol1', size_bytes: MiB }));
      const again = await backend.execute(request('volume.create', { name: 'vol1', size_bytes: 2 * MiB }));
      assert.equal(problemCode(again), 'volume-exists');
      assert.equal((await backend.probe('d0')).used_bytes, MiB);
    });

    test('capacity is the sum of logical sizes and is never exceeded', async (t) => {
      const { backend } = await makeHarness(t);
      const tooBig = await backend.execute(request('volume.create', { name: 'big', size_bytes: 10 * MiB + 1 }, { device: 'd1' }));
      assert.equal(tooBig.outcome, 'failed');
      assert.equal(problemCode(tooBig), 'insufficient-capacity');

      const exact = await backend.execute(request('volume.create', { name: 'a', size_bytes: 6 * MiB }, { device: 'd1' }));
      assert.equal(exact.outcome, 'succeeded');
      const second = await backend.execute(request('volume.create', { name: 'b', size_bytes: 4 * MiB }, { device: 'd1' }));
      assert.equal(second.outcome, 'succeeded');
      const full = await backend.execute(request('volume.create', { name: 'c', size_bytes: 1 }, { device: 'd1' }));
      assert.equal(problemCode(full), 'insufficient-capacity');

      const growTooFar = await backend.execute(request('volume.resize', { name: 'a', size_bytes: 6 * MiB + 1 }, { device: 'd1' }));
      assert.equal(problemCode(growTooFar), 'insufficient-capacity');
      const copyTooBig = await backend.execute(
        request('volume.copy', { name: 'a', target_name: 'a-copy' }, { device: 'd1' }),
      );
      assert.equal(problemCode(copyTooBig), 'insufficient-capacity');
      const report = await backend.probe('d1');
      assert.equal(report.used_bytes, 10 * MiB);
      assert.equal(report.volume_count, 2);
    });

    test('copies a volume on the same device and to another device', async (t) => {
      const { backend, store } = await makeHarness(t);
      await backend.execute(request('volume.create', { name: 'src', size_bytes: 3 * MiB }));
      const local = await backend.execute(request('volume.copy', { name: 'src', target_name: 'src-copy' }));
      assert.deepEqual(local.result, {
        volume: { device: 'd0', name: 'src-copy', size_bytes: 3 * MiB },
        source: { device: 'd0', name: 'src', size_bytes: 3 * MiB },
      });
      const remote = await backend.execute(request('volume.copy', { name: 'src', target_device: 'd1', target_name: 'src' }));
      assert.deepEqual(remote.result?.volume, { device: 'd1', name: 'src', size_bytes: 3 * MiB });
      assert.equal(await store.volumeSize('d1', 'src'), 3 * MiB);
      assert.equal((await backend.probe('d0')).used_bytes, 6 * MiB);

      const onto = await backend.execute(request('volume.copy', { name: 'src', target_name: 'src-copy' }));
      assert.equal(problemCode(onto), 'volume-exists');
      await assert.rejects(
        backend.execute(request('volume.copy', { name: 'src', target_device: 'd9', target_name: 'x' })),
        refusedWith('device-not-found'),
      );
    });

    test('format removes every volume on the device and nothing elsewhere', async (t) => {
      const { backend } = await makeHarness(t);
      await backend.execute(request('volume.create', { name: 'a', size_bytes: MiB }));
      await backend.execute(request('volume.create', { name: 'b', size_bytes: MiB }));
      await backend.execute(request('volume.create', { name: 'keep', size_bytes: MiB }, { device: 'd1' }));
      const formatted = await backend.execute(request('device.format'));
      assert.deepEqual(formatted.result, { volumes_removed: 2 });
      assert.equal((await backend.probe('d0')).volume_count, 0);
      assert.equal((await backend.probe('d1')).volume_count, 1);
    });

    test('the probe execution and discovery report each device', async (t) => {
      const { backend } = await makeHarness(t);
      await backend.execute(request('volume.create', { name: 'a', size_bytes: 5 }));
      const probed = await backend.execute(request('device.probe'));
      assert.deepEqual(probed.result, {
        device: { id: 'd0', state: 'available', reason: null, capacity_bytes: 100 * MiB, used_bytes: 5, volume_count: 1 },
      });
      const devices = await backend.discover();
      assert.deepEqual(
        devices.map(({ id, home_cluster, state, epoch }) => ({ id, home_cluster, state, epoch })),
        [
          { id: 'd0', home_cluster: 'c0', state: 'available', epoch: 1 },
          { id: 'd1', home_cluster: 'c1', state: 'available', epoch: 0 },
        ],
      );
      await assert.rejects(backend.probe('d9'), refusedWith('device-not-found'));
    });

    test('an unknown device is refused with device-not-found', async (t) => {
      const { backend } = await makeHarness(t);
      await assert.rejects(backend.execute(request('device.probe', {}, { device: 'd9' })), refusedWith('device-not-found'));
    });

    test('an invalid name is refused before anything is written', async (t) => {
      const { backend, store } = await makeHarness(t);
      for (const name of ['../x', 'a/b', '.hidden', 'a\u0000b', `a${'b'.repeat(128)}`, '..', 'a\\b']) {
        const create = request('volume.create', { name, size_bytes: 1 }, { fencing: { token: 1, epoch: 7 } });
        await assert.rejects(backend.execute(create), refusedWith('invalid-name'), JSON.stringify(name));
        const copy = request('volume.copy', { name: 'vol1', target_device: 'd1', target_name: name }, { fencing: { token: 1, epoch: 7 } });
        await assert.rejects(backend.execute(copy), refusedWith('invalid-name'), JSON.stringify(name));
        assert.equal(await store.readRecord('d0', create.task_id), undefined);
      }
      assert.equal(await store.readEpoch('d0'), 0);
      assert.equal(await store.readEpoch('d1'), 0);
      assert.deepEqual(await store.volumes('d0'), []);
    });

    test('a newer epoch is recorded on the device and an older one is refused without work', async (t) => {
      const { backend, store } = await makeHarness(t);
      await backend.execute(request('volume.create', { name: 'a', size_bytes: 1 }, { fencing: { token: 1, epoch: 3 } }));
      assert.equal(await store.readEpoch('d0'), 3);
      assert.equal((await backend.probe('d0')).epoch, 3);

      const stale = request('volume.create', { name: 'b', size_bytes: 1 }, { fencing: { token: 9, epoch: 2 } });
      await assert.rejects(backend.execute(stale), refusedWith('stale-epoch'));
      assert.equal(await store.volumeSize('d0', 'b'), undefined);
      assert.equal(await store.readRecord('d0', stale.task_id), undefined);
      assert.equal(await store.readEpoch('d0'), 3);
    });

    test('a copy fences both devices', async (t) => {
      const { backend, store } = await makeHarness(t);
      await backend.execute(request('volume.create', { name: 'src', size_bytes: 1 }, { fencing: { token: 1, epoch: 2 } }));
      await backend.execute(request('device.probe', {}, { device: 'd1', fencing: { token: 1, epoch: 5 } }));

      const staleOnTarget = request('volume.copy', { name: 'src', target_device: 'd1', target_name: 'dst' }, { fencing: { token: 1, epoch: 4 } });
      await assert.rejects(backend.execute(staleOnTarget), refusedWith('stale-epoch'));
      assert.equal(await store.volumeSize('d1', 'dst'), undefined);
      assert.equal(await store.readEpoch('d0'), 2, 'a refused copy records no epoch on the source either');

      const current = await backend.execute(
        request('volume.copy', { name: 'src', target_device: 'd1', target_name: 'dst' }, { fencing: { token: 1, epoch: 6 } }),
      );
      assert.equal(current.outcome, 'succeeded');
      assert.equal(await store.readEpoch('d0'), 6);
      assert.equal(await store.readEpoch('d1'), 6);
    });

    test('a recorded task replays its outcome for its token or a newer one and refuses an older one', async (t) => {
      const { backend, store } = await makeHarness(t);
      const first = request('volume.create', { name: 'vol1', size_bytes: MiB }, { fencing: { token: 5, epoch: 1 } });
      const original = await backend.execute(first);
      assert.equal(original.replayed, false);

      // The volume goes away behind the driver's back: a replay must not do the work again.
      await store.deleteVolume('d0', 'vol1');
      const replayed = await backend.execute(first);
      assert.deepEqual(replayed, { ...original, replayed: true });
      assert.equal(await store.volumeSize('d0', 'vol1'), undefined);

      await assert.rejects(backend.execute({ ...first, fencing: { token: 4, epoch: 1 } }), refusedWith('stale-fencing-token'));
      const newer = await backend.execute({ ...first, attempt: 2, fencing: { token: 8, epoch: 1 } });
      assert.equal(newer.replayed, true);
      assert.equal(newer.outcome, 'succeeded');
      await assert.rejects(backend.execute({ ...first, fencing: { token: 5, epoch: 1 } }), refusedWith('stale-fencing-token'));
      assert.equal(await store.volumeSize('d0', 'vol1'), undefined);
    });

    test('a failed outcome is recorded and replayed', async (t) => {
      const { backend, store } = await makeHarness(t);
      const tooBig = request('volume.create', { name: 'big', size_bytes: 11 * MiB }, { device: 'd1' });
      const failed = await backend.execute(tooBig);
      assert.equal(problemCode(failed), 'insufficient-capacity');
      assert.equal((await store.readRecord('d1', tooBig.task_id))?.outcome, 'failed');
      const replayed = await backend.execute(tooBig);
      assert.deepEqual(replayed, { ...failed, replayed: true });
    });

    test('an unavailable device fails the work without a record, and the probe reports it', async (t) => {
      const { backend, store, markUnavailable } = await makeHarness(t);
      await markUnavailable('d1');
      const create = request('volume.create', { name: 'a', size_bytes: 1 }, { device: 'd1' });
      const failed = await backend.execute(create);
      assert.equal(failed.outcome, 'failed');
      assert.equal(problemCode(failed), 'device-unavailable');
      assert.match(failed.error?.detail ?? '', /disk pulled/);
      assert.equal(await store.readRecord('d1', create.task_id), undefined);

      await backend.execute(request('volume.create', { name: 'src', size_bytes: 1 }));
      const copy = await backend.execute(request('volume.copy', { name: 'src', target_device: 'd1', target_name: 'dst' }));
      assert.equal(problemCode(copy), 'device-unavailable');

      const probed = await backend.execute(request('device.probe', {}, { device: 'd1' }));
      assert.equal(probed.outcome, 'succeeded');
      assert.equal(probed.result?.device?.state, 'unavailable');
      const report = await backend.probe('d1');
      assert.equal(report.state, 'unavailable');
      assert.match(report.reason ?? '', /FAILED: disk pulled/);
      assert.equal(report.home_cluster, 'c1');
    });
  });
}

test('executions on one device never interleave; different devices run in parallel', async () => {
  const active = new Map<string, number>();
  let maxOnOneDevice = 0;
  let maxOverall = 0;
  class SlowStore extends MemoryDeviceStore {
    override async createVolume(id: string, name: string, sizeBytes: number): Promise<void> {
      active.set(id, (active.get(id) ?? 0) + 1);
      maxOnOneDevice = Math.max(maxOnOneDevice, active.get(id) ?? 0);
      maxOverall = Math.max(maxOverall, [...active.values()].reduce((sum, count) => sum + count, 0));
      await new Promise((resolve) => setTimeout(resolve, 20));
      await super.createVolume(id, name, sizeBytes);
      active.set(id, (active.get(id) ?? 1) - 1);
    }
  }
  const backend = createExecutor(new SlowStore(labels));
  const results = await Promise.all(
    ['d0', 'd1'].flatMap((device) =>
      [1, 2, 3].map((n) => backend.execute(request('volume.create', { name: `v${n}`, size_bytes: 1 }, { device }))),
    ),
  );
  assert.ok(results.every((result) => result.outcome === 'succeeded'));
  assert.equal(maxOnOneDevice, 1);
  assert.equal(maxOverall, 2);
});

test('the same task sent twice at once runs once', async () => {
  const store = createMemoryStore(labels);
  const backend = createExecutor(store);
  const create = request('volume.create', { name: 'once', size_bytes: 1 });
  const [a, b] = await Promise.all([backend.execute(create), backend.execute(create)]);
  assert.deepEqual([a.replayed, b.replayed].sort(), [false, true]);
  assert.equal(a.outcome, 'succeeded');
  assert.equal(b.outcome, 'succeeded');
});
