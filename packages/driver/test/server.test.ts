import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bearer, freePort, startProcess, testClusterToken, waitFor } from '@duplex/testkit';
import { provisionFileDevice } from '../src/lib/file-store.ts';
import { GiB, request, tempDir } from './helpers.ts';

const entry = 'packages/driver/src/server.ts';
const token = testClusterToken('c0');

test('the server runs the file backend over a real socket and stops cleanly on SIGTERM', async (t) => {
  const root = await tempDir(t);
  await provisionFileDevice(root, { id: 'd0', home_cluster: 'c0', capacity_bytes: GiB });
  const port = await freePort();
  const driver = startProcess('driver', entry, { DRIVER_PORT: String(port), DRIVER_DEVICE_ROOT: root, CLUSTER_TOKEN: token });
  t.after(() => driver.stop('SIGKILL'));
  const base = `http://127.0.0.1:${port}`;
  await waitFor('the driver to be ready', async () => ((await fetch(`${base}/readyz`)).ok ? true : undefined));

  const devices = (await (await fetch(`${base}/v1/devices`, { headers: bearer(token) })).json()) as { items: { id: string }[] };
  assert.deepEqual(devices.items.map((device) => device.id), ['d0']);
  const response = await fetch(`${base}/v1/executions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...bearer(token) },
    body: JSON.stringify(request('volume.create', { name: 'vol1', size_bytes: 4096 })),
  });
  assert.equal(response.status, 200);
  assert.equal(((await response.json()) as { outcome: string }).outcome, 'succeeded');

  assert.equal(await driver.stop('SIGTERM'), 0, driver.output());
});

test('the memory backend serves its configured devices', async (t) => {
  const port = await freePort();
  const driver = startProcess('driver', entry, {
    DRIVER_PORT: String(port),
    DRIVER_BACKEND: 'memory',
    DRIVER_MEMORY_DEVICES: 'm0:c0:100,m1:c1:200',
    CLUSTER_TOKEN: token,
  });
  t.after(() => driver.stop('SIGKILL'));
  const base = `http://127.0.0.1:${port}`;
  const devices = await waitFor('the devices', async () => {
    const answer = await fetch(`${base}/v1/devices`, { headers: bearer(token) });
    return answer.ok ? ((await answer.json()) as { items: { id: string; capacity_bytes: number }[] }) : undefined;
  });
  assert.deepEqual(
    devices.items.map((device) => [device.id, device.capacity_bytes]),
    [
      ['m0', 100],
      ['m1', 200],
    ],
  );
});

test('a bad configuration stops the process with one clear line', async () => {
  const driver = startProcess('driver', entry, { DRIVER_BACKEND: 'memory', DRIVER_MEMORY_DEVICES: 'd0:c0:1,d0:c0:2', CLUSTER_TOKEN: token });
  const code = await new Promise<number | null>((resolve) => driver.child.once('exit', resolve));
  assert.equal(code, 1);
  assert.match(driver.output().trim(), /^driver: invalid configuration: DRIVER_MEMORY_DEVICES .*listed twice$/);
});
