import assert from 'node:assert/strict';
import { lstat, mkdir, open, readdir, readFile, rm, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { ProblemError } from '@duplex/shared';
import { createExecutor } from '../../src/lib/executor.ts';
import { createFileStore, provisionFileDevice } from '../../src/lib/file-store.ts';
import { GiB, MiB, request, tempDir } from '../helpers.ts';

async function setup(t: TestContext) {
  const root = await tempDir(t);
  await provisionFileDevice(root, { id: 'd0', home_cluster: 'c0', capacity_bytes: GiB });
  await provisionFileDevice(root, { id: 'd1', home_cluster: 'c1', capacity_bytes: GiB });
  const store = createFileStore(root);
  const backend = createExecutor(store);
  const volumePath = (device: string, name: string) => join(root, device, 'volumes', name);
  return { root, store, backend, volumePath };
}

async function writeAt(path: string, position: number, text: string): Promise<void> {
  const file = await open(path, 'r+');
  try {
    await file.write(Buffer.from(text), 0, text.length, position);
  } finally {
    await file.close();
  }
}

async function readAt(path: string, position: number, length: number): Promise<string> {
  const file = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(length);
    await file.read(buffer, 0, length, position);
    return buffer.toString();
  } finally {
    await file.close();
  }
}

const allocatedBytes = async (path: string) => (await stat(path)).blocks * 512;

describe('file store on disk', () => {
  test('provisioning writes a label once and never overwrites it', async (t) => {
    const root = await tempDir(t);
    assert.deepEqual(await provisionFileDevice(root, { id: 'd0', home_cluster: 'c0', capacity_bytes: 1000 }), { created: true });
    assert.deepEqual(await provisionFileDevice(root, { id: 'd0', home_cluster: 'c1', capacity_bytes: 5 }), { created: false });
    assert.deepEqual(JSON.parse(await readFile(join(root, 'd0', 'device.json'), 'utf8')), {
      id: 'd0',
      home_cluster: 'c0',
      capacity_bytes: 1000,
    });
    assert.ok((await stat(join(root, 'd0', 'volumes'))).isDirectory());
    assert.deepEqual((await readdir(join(root, 'd0'))).sort(), ['device.json', 'volumes']);
    await assert.rejects(provisionFileDevice(root, { id: '../x', home_cluster: 'c0', capacity_bytes: 1 }), /no valid id/);
  });

  test('a volume is a sparse file of the asked size, resized in place', async (t) => {
    const { backend, volumePath } = await setup(t);
    await backend.execute(request('volume.create', { name: 'vol1', size_bytes: 256 * MiB }));
    const path = volumePath('d0', 'vol1');
    assert.equal((await stat(path)).size, 256 * MiB);
    assert.ok((await allocatedBytes(path)) < MiB, 'a new volume allocates (almost) nothing');

    await writeAt(path, 100 * MiB, 'kept');
    await backend.execute(request('volume.resize', { name: 'vol1', size_bytes: 512 * MiB }));
    assert.equal((await stat(path)).size, 512 * MiB);
    assert.equal(await readAt(path, 100 * MiB, 4), 'kept');
    await backend.execute(request('volume.resize', { name: 'vol1', size_bytes: 50 * MiB }));
    assert.equal((await stat(path)).size, 50 * MiB);

    await backend.execute(request('volume.delete', { name: 'vol1' }));
    await assert.rejects(lstat(path), { code: 'ENOENT' });
  });

  test('a copy holds the source bytes as of the copy and stays sparse', async (t) => {
    const { backend, volumePath } = await setup(t);
    await backend.execute(request('volume.create', { name: 'src', size_bytes: 64 * MiB }));
    const source = volumePath('d0', 'src');
    await writeAt(source, 0, 'first-bytes');
    await writeAt(source, 40 * MiB + 123, 'middle-bytes');

    const copied = await backend.execute(request('volume.copy', { name: 'src', target_name: 'snap' }));
    assert.equal(copied.outcome, 'succeeded');
    await writeAt(source, 0, 'CHANGED-AFTER');
    await writeAt(source, 40 * MiB + 123, 'CHANGED-AFTER');

    const copy = volumePath('d0', 'snap');
    assert.equal((await stat(copy)).size, 64 * MiB);
    assert.equal(await readAt(copy, 0, 11), 'first-bytes');
    assert.equal(await readAt(copy, 40 * MiB + 123, 12), 'middle-bytes');
    assert.equal(await readAt(copy, 20 * MiB, 8), '\0'.repeat(8));
    assert.ok((await allocatedBytes(copy)) <= 4 * MiB, `the copy allocates only the chunks with data, not ${await allocatedBytes(copy)}`);
  });

  test('a copy to another device writes the bytes there', async (t) => {
    const { backend, volumePath } = await setup(t);
    await backend.execute(request('volume.create', { name: 'src', size_bytes: 3 * MiB + 7 }));
    await writeAt(volumePath('d0', 'src'), 3 * MiB, 'tail!!!');
    const result = await backend.execute(request('volume.copy', { name: 'src', target_device: 'd1', target_name: 'dst' }));
    assert.deepEqual(result.result?.volume, { device: 'd1', name: 'dst', size_bytes: 3 * MiB + 7 });
    assert.equal((await stat(volumePath('d1', 'dst'))).size, 3 * MiB + 7);
    assert.equal(await readAt(volumePath('d1', 'dst'), 3 * MiB, 7), 'tail!!!');
  });

  test('the epoch and each outcome are recorded on the device itself', async (t) => {
    const { root, backend } = await setup(t);
    const create = request('volume.create', { name: 'vol1', size_bytes: 1 }, { fencing: { token: 3, epoch: 4 } });
    await backend.execute(create);
    assert.deepEqual(JSON.parse(await readFile(join(root, 'd0', 'fence.json'), 'utf8')), { epoch: 4 });
    const record = JSON.parse(await readFile(join(root, 'd0', 'executions', `${create.task_id}.json`), 'utf8'));
    assert.equal(record.token, 3);
    assert.equal(record.outcome, 'succeeded');
    assert.deepEqual(record.result, { volume: { device: 'd0', name: 'vol1', size_bytes: 1 } });
    assert.deepEqual((await readdir(join(root, 'd0'))).filter((name) => name.includes('.tmp-')), []);
  });

  test('a replay does not recreate a volume deleted behind the driver', async (t) => {
    const { backend, volumePath } = await setup(t);
    const create = request('volume.create', { name: 'vol1', size_bytes: MiB });
    await backend.execute(create);
    await unlink(volumePath('d0', 'vol1'));
    const replayed = await backend.execute(create);
    assert.equal(replayed.replayed, true);
    assert.equal(replayed.outcome, 'succeeded');
    await assert.rejects(lstat(volumePath('d0', 'vol1')), { code: 'ENOENT' });
  });

  test('an invalid name writes nothing on disk', async (t) => {
    const { root, backend } = await setup(t);
    for (const name of ['../escape', '../../etc/x', 'a/b', '.hidden', 'a\u0000b', `a${'b'.repeat(128)}`]) {
      await assert.rejects(
        backend.execute(request('volume.create', { name, size_bytes: 1 }, { fencing: { token: 1, epoch: 9 } })),
        (error: unknown) => error instanceof ProblemError && error.code === 'invalid-name',
      );
    }
    assert.deepEqual((await readdir(join(root, 'd0'))).sort(), ['device.json', 'volumes']);
    assert.deepEqual(await readdir(join(root, 'd0', 'volumes')), []);
    assert.deepEqual((await readdir(root)).sort(), ['d0', 'd1']);
  });

  test('a volume that is a symbolic link is never followed', async (t) => {
    const { root, backend, volumePath } = await setup(t);
    const outside = join(root, 'outside.img');
    await writeFile(outside, 'precious');
    await symlink(outside, volumePath('d0', 'evil'));

    for (const [kind, params] of [
      ['volume.resize', { name: 'evil', size_bytes: MiB }],
      ['volume.delete', { name: 'evil' }],
      ['volume.create', { name: 'evil', size_bytes: MiB }],
      ['volume.copy', { name: 'evil', target_name: 'stolen' }],
    ] as const) {
      const result = await backend.execute(request(kind, params));
      assert.equal(result.outcome, 'failed', kind);
      assert.equal(result.error?.type, 'urn:duplex:problem:invalid-task', kind);
      assert.match(result.error?.detail ?? '', /symbolic link/, kind);
    }
    assert.equal(await readFile(outside, 'utf8'), 'precious');
    assert.ok((await lstat(volumePath('d0', 'evil'))).isSymbolicLink());
    await assert.rejects(lstat(volumePath('d0', 'stolen')), { code: 'ENOENT' });
    assert.equal((await backend.probe('d0')).volume_count, 0, 'a link is not counted as a volume');
  });

  test('a volumes directory that is a symbolic link makes the device unavailable', async (t) => {
    const { root, backend } = await setup(t);
    const elsewhere = join(root, 'elsewhere');
    await mkdir(elsewhere);
    await rm(join(root, 'd1', 'volumes'), { recursive: true });
    await symlink(elsewhere, join(root, 'd1', 'volumes'));

    const report = await backend.probe('d1');
    assert.equal(report.state, 'unavailable');
    assert.match(report.reason ?? '', /symbolic link/);
    const result = await backend.execute(request('volume.create', { name: 'v', size_bytes: 1 }, { device: 'd1' }));
    assert.equal(result.error?.type, 'urn:duplex:problem:device-unavailable');
    assert.deepEqual(await readdir(elsewhere), []);
  });

  test('discovery lists devices with bad labels or a FAILED marker as unavailable, with the reason', async (t) => {
    const { root, backend } = await setup(t);
    await mkdir(join(root, 'd2'));
    await writeFile(join(root, 'd2', 'device.json'), '{not json');
    await mkdir(join(root, 'd3'));
    await mkdir(join(root, 'd4'));
    await writeFile(join(root, 'd4', 'device.json'), JSON.stringify({ id: 'd9', home_cluster: 'c0', capacity_bytes: 1 }));
    await mkdir(join(root, 'd5'));
    await writeFile(join(root, 'd5', 'device.json'), JSON.stringify({ id: 'd5', home_cluster: 'c0', capacity_bytes: -1 }));
    await writeFile(join(root, 'd1', 'FAILED'), 'controller lost\n');
    await mkdir(join(root, '.staging'));
    await writeFile(join(root, 'notes.txt'), 'not a device');

    const devices = await backend.discover();
    const summary = Object.fromEntries(devices.map((device) => [device.id, [device.state, device.reason]]));
    assert.deepEqual(Object.keys(summary), ['d0', 'd1', 'd2', 'd3', 'd4', 'd5']);
    assert.deepEqual(summary.d0, ['available', null]);
    assert.deepEqual(summary.d1, ['unavailable', 'the device is marked FAILED: controller lost']);
    assert.deepEqual(summary.d2, ['unavailable', 'the label is not valid JSON']);
    assert.deepEqual(summary.d3, ['unavailable', 'the device has no label (device.json)']);
    assert.deepEqual(summary.d4, ['unavailable', 'the label names device d9, not d4']);
    assert.deepEqual(summary.d5, ['unavailable', 'the label has no valid capacity_bytes']);
    const d2 = devices.find((device) => device.id === 'd2');
    assert.equal(d2?.home_cluster, 'unknown');
    assert.equal(d2?.capacity_bytes, 0);
  });

  test('used bytes are the logical sizes, and the device root decides readiness', async (t) => {
    const { root, backend } = await setup(t);
    await backend.execute(request('volume.create', { name: 'a', size_bytes: 300 * MiB }));
    await backend.execute(request('volume.create', { name: 'b', size_bytes: 200 * MiB }));
    const report = await backend.probe('d0');
    assert.equal(report.used_bytes, 500 * MiB);
    assert.equal(report.volume_count, 2);
    assert.deepEqual(await backend.readiness(), { devices: 'ok' });

    const missing = createExecutor(createFileStore(join(root, 'missing')));
    assert.match((await missing.readiness()).devices ?? '', /cannot be read \(ENOENT\)/);
    await assert.rejects(missing.discover(), (error: unknown) => error instanceof ProblemError && error.code === 'not-ready');
  });
  test('volumes deleted while discovery lists them leave the device available', async (t) => {
    const { store, backend, volumePath } = await setup(t);
    const names = Array.from({ length: 400 }, (_, index) => `v${index}`);
    await Promise.all(names.map((name) => writeFile(volumePath('d0', name), 'x')));
    // Deletes race the listings: a name read from the directory may be gone by the time it is looked at.
    const deleting = (async () => {
      for (const name of names) await unlink(volumePath('d0', name));
    })();
    const states: string[] = [];
    while (states.length < 50 || (await store.volumes('d0')).length > 0) {
      const [d0] = await backend.discover();
      states.push(`${d0!.state}${d0!.reason ? `: ${d0!.reason}` : ''}`);
    }
    await deleting;
    assert.deepEqual([...new Set(states)], ['available']);
    assert.deepEqual(await store.volumes('d0'), []);
  });
});
