import assert from 'node:assert/strict';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { createExecutor } from '../../src/lib/executor.ts';
import { createFileStore, provisionFileDevice } from '../../src/lib/file-store.ts';
import { MiB, request, tempDir } from '../helpers.ts';

/** A device where a crash left this task's intent on record but not its outcome. */
async function interruptedDevice(t: Parameters<typeof tempDir>[0], task: ReturnType<typeof request>) {
  const root = await tempDir(t);
  await provisionFileDevice(root, { id: 'd0', home_cluster: 'c0', capacity_bytes: 64 * MiB });
  const store = createFileStore(root);
  await store.writeRecord('d0', {
    task_id: task.task_id,
    kind: task.kind,
    device: 'd0',
    attempt: 1,
    token: task.fencing.token,
    epoch: task.fencing.epoch,
    outcome: 'applying',
    recorded_at: new Date().toISOString(),
  });
  return { root, store, executor: createExecutor(store) };
}

test('a create cut short by a crash is finished by the retry, not refused as a duplicate', async (t) => {
  const task = request('volume.create', { name: 'v1', size_bytes: 2 * MiB });
  const { root, executor } = await interruptedDevice(t, task);
  // The crash came after the file was made and before it got its size.
  await writeFile(join(root, 'd0', 'volumes', 'v1'), '');
  const retried = await executor.execute({ ...task, attempt: 2, fencing: { token: 2, epoch: 1 } });
  assert.equal(retried.outcome, 'succeeded');
  assert.equal(retried.replayed, false);
  assert.equal((await stat(join(root, 'd0', 'volumes', 'v1'))).size, 2 * MiB);
  const again = await executor.execute({ ...task, attempt: 3, fencing: { token: 3, epoch: 1 } });
  assert.equal(again.replayed, true);
});

test('a delete cut short after the volume went is finished by the retry', async (t) => {
  const task = request('volume.delete', { name: 'gone' });
  const { executor } = await interruptedDevice(t, task);
  const retried = await executor.execute({ ...task, attempt: 2, fencing: { token: 2, epoch: 1 } });
  assert.equal(retried.outcome, 'succeeded');
  assert.equal(retried.result?.deleted?.name, 'gone');
});

test('a retry older than the interrupted attempt is refused', async (t) => {
  const task = request('volume.create', { name: 'v2', size_bytes: MiB }, { fencing: { token: 5, epoch: 1 } });
  const { executor } = await interruptedDevice(t, task);
  await assert.rejects(executor.execute({ ...task, fencing: { token: 4, epoch: 1 } }), /older/);
});

test('a create that was never started still refuses a name another task holds', async (t) => {
  const root = await tempDir(t);
  await provisionFileDevice(root, { id: 'd0', home_cluster: 'c0', capacity_bytes: 64 * MiB });
  const executor = createExecutor(createFileStore(root));
  await executor.execute(request('volume.create', { name: 'taken', size_bytes: MiB }));
  const second = await executor.execute(request('volume.create', { name: 'taken', size_bytes: MiB }));
  assert.equal(second.outcome, 'failed');
  assert.equal(second.error?.type, 'urn:duplex:problem:volume-exists');
});
