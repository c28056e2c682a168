import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ServerApi } from '@duplex/contracts';
import { steadyLeases, TopologyHarness } from '@duplex/harness';
import { bearer, testAdminToken, waitFor } from '@duplex/testkit';

// Each kind of configuration or state change, end to end through real processes: the driver's
// probe (or an operator) finds it, the cluster-manager stores a new inventory version with its
// history and events and broadcasts it, every agent reports it, and both servers show it.

type Device = ServerApi.components['schemas']['Device'];
type Problem = ServerApi.components['schemas']['Problem'];

const servers = ['A', 'B'] as const;

async function call<T>(url: string, method: string, body?: unknown): Promise<{ status: number; body: T }> {
  const headers: Record<string, string> = { ...bearer(testAdminToken), ...(body === undefined ? {} : { 'content-type': 'application/json' }) };
  if (url.endsWith('/v1/tasks')) headers['idempotency-key'] = randomUUID();
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: (text ? JSON.parse(text) : undefined) as T };
}

describe('configuration and state changes reach every server', { timeout: 180_000 }, () => {
  let harness: TopologyHarness;

  const deviceAt = async (server: 'A' | 'B', id: string): Promise<Device | undefined> => {
    const { status, body } = await call<Device>(`${harness.serverUrl(server)}/v1/storage-systems/ss1/devices/${id}`, 'GET');
    return status === 200 ? body : undefined;
  };

  /** Waits until both servers show the device matching `expected`, and returns server A's view. */
  const untilBothShow = async (what: string, id: string, expected: (device: Device) => boolean): Promise<Device> => {
    let seen: Device | undefined;
    for (const server of servers) {
      seen = await waitFor(
        `server ${server} to show ${what}`,
        async () => {
          const device = await deviceAt(server, id);
          return device && expected(device) ? device : undefined;
        },
        10_000,
        50,
      );
    }
    return seen!;
  };

  const historyOf = async (deviceId: string): Promise<{ cause: string; kinds: string[] }[]> => {
    const rows: { cause: string; changes: { device_id: string; changes: string[] }[] }[] = await harness
      .db('inventory_versions')
      .orderBy('recorded_at')
      .select('cause', 'changes');
    return rows.flatMap((row) => row.changes.filter((change) => change.device_id === deviceId).map((change) => ({ cause: row.cause, kinds: change.changes })));
  };

  before(async () => {
    harness = await TopologyHarness.start({ devicesPerCluster: 2, env: steadyLeases });
  });
  after(() => harness?.stop());

  it('a FAILED marker makes a device unavailable everywhere; tasks for it fail at once; removing it brings it back', async () => {
    const marker = join(harness.deviceRoot, 'd1', 'FAILED');
    writeFileSync(marker, 'controller reports media errors\n');
    const failed = await untilBothShow('d1 unavailable', 'd1', (device) => device.state === 'unavailable');
    assert.match(failed.reason ?? '', /marked FAILED: controller reports media errors/);

    const refused = await call<Problem>(`${harness.serverUrl('B')}/v1/tasks`, 'POST', {
      kind: 'volume.create',
      storage_system_id: 'ss1',
      device: 'd1',
      params: { name: 'never', size_bytes: 4096 },
    });
    assert.equal(refused.status, 422);
    assert.equal(refused.body.type, 'urn:duplex:problem:device-unavailable');
    assert.match(refused.body.detail ?? '', /d1' is unavailable/);

    const row: { state: string; reason: string } = await harness.db('devices').where({ id: 'd1' }).first('state', 'reason');
    assert.equal(row.state, 'unavailable');
    const events: { payload: { device_id: string; state: string } }[] = await harness.db('events').where({ type: 'device.changed' }).select('payload');
    assert.ok(events.some((event) => event.payload.device_id === 'd1' && event.payload.state === 'unavailable'), 'a device.changed event is in the outbox');

    rmSync(marker);
    await untilBothShow('d1 available again', 'd1', (device) => device.state === 'available' && device.reason === null);
    assert.deepEqual(
      (await historyOf('d1')).filter((entry) => entry.cause === 'device probe').map((entry) => entry.kinds),
      [['state'], ['state']],
    );
  });

  it('a device directory that goes away is unavailable, and available when it comes back', async () => {
    const directory = join(harness.deviceRoot, 'd2');
    const away = join(harness.deviceRoot, '.d2-detached');
    renameSync(directory, away);
    // A probe that was listing d2's volumes as it went says so first; the next one no longer finds d2.
    const gone = await untilBothShow('d2 gone', 'd2', (device) => device.state === 'unavailable' && /no longer finds the device/.test(device.reason ?? ''));
    assert.equal(gone.state, 'unavailable');
    renameSync(away, directory);
    await untilBothShow('d2 back', 'd2', (device) => device.state === 'available');
  });

  it('a changed capacity is stored and shown', async () => {
    const labelPath = join(harness.deviceRoot, 'd3', 'device.json');
    const label = JSON.parse(readFileSync(labelPath, 'utf8')) as { capacity_bytes: number };
    const grown = label.capacity_bytes * 2;
    writeFileSync(labelPath, JSON.stringify({ ...label, capacity_bytes: grown }));
    await untilBothShow('d3 grown', 'd3', (device) => device.capacity_bytes === grown);
    const stored: { capacity_bytes: string } = await harness.db('devices').where({ id: 'd3' }).first('capacity_bytes');
    assert.equal(Number(stored.capacity_bytes), grown);
    assert.deepEqual((await historyOf('d3')).at(-1)?.kinds, ['capacity']);
  });

  it('a new device directory with a label joins its home cluster', async () => {
    const directory = join(harness.deviceRoot, 'd9');
    // Written the way a provisioning script would: volumes first, the label last.
    await import('node:fs/promises').then(({ mkdir }) => mkdir(join(directory, 'volumes'), { recursive: true }));
    writeFileSync(join(directory, 'device.json'), JSON.stringify({ id: 'd9', home_cluster: 'c1', capacity_bytes: 64 * 1024 * 1024 }));
    const found = await untilBothShow('d9 found', 'd9', (device) => device.state === 'available');
    assert.equal(found.owner_cluster, 'c1');
    assert.deepEqual((await historyOf('d9')).at(-1), { cause: 'device probe', kinds: ['added'] });
  });

  it('an operator takes a device offline through one server, every server shows it, and tasks for it fail', async () => {
    const offline = await call<Device>(`${harness.serverUrl('A')}/v1/storage-systems/ss1/devices/d0:set-state`, 'POST', {
      state: 'offline',
      reason: 'replacing a fan',
    });
    assert.equal(offline.status, 200, JSON.stringify(offline.body));
    assert.equal(offline.body.state, 'offline');
    assert.equal(offline.body.reason, 'replacing a fan');
    // The answer waits for the server's own view, so a read right after shows the change.
    assert.equal((await deviceAt('A', 'd0'))?.state, 'offline');
    await untilBothShow('d0 offline', 'd0', (device) => device.state === 'offline');
    const refused = await call<Problem>(`${harness.serverUrl('B')}/v1/tasks`, 'POST', {
      kind: 'volume.create',
      storage_system_id: 'ss1',
      device: 'd0',
      params: { name: 'never', size_bytes: 4096 },
    });
    assert.equal(refused.status, 422);
    assert.match(refused.body.detail ?? '', /d0' is offline: replacing a fan/);
    const row: { admin_state: string; admin_reason: string } = await harness.db('devices').where({ id: 'd0' }).first('admin_state', 'admin_reason');
    assert.deepEqual(row, { admin_state: 'offline', admin_reason: 'replacing a fan' });

    const back = await call<Device>(`${harness.serverUrl('B')}/v1/storage-systems/ss1/devices/d0:set-state`, 'POST', { state: 'available' });
    assert.equal(back.status, 200);
    assert.equal(back.body.state, 'available');
    await untilBothShow('d0 back in service', 'd0', (device) => device.state === 'available');
  });

  it('an operator retires an offline device, and adds it back; adding a new id creates the device on disk', async () => {
    const base = `${harness.serverUrl('A')}/v1/storage-systems/ss1/devices`;
    const inService = await call<Problem>(`${base}/d1`, 'DELETE');
    assert.equal(inService.status, 409);
    assert.equal(inService.body.type, 'urn:duplex:problem:device-in-service');

    assert.equal((await call(`${base}/d1:set-state`, 'POST', { state: 'offline' })).status, 200);
    const retired = await call<Device>(`${base}/d1`, 'DELETE');
    assert.equal(retired.status, 200);
    assert.equal(retired.body.state, 'retired');
    await untilBothShow('d1 retired', 'd1', (device) => device.state === 'retired');
    assert.ok(existsSync(join(harness.deviceRoot, 'd1', 'device.json')), 'a retired device keeps its data');
    const stillRetired = await call<Problem>(`${base}/d1:set-state`, 'POST', { state: 'available' });
    assert.equal(stillRetired.status, 409);
    assert.equal(stillRetired.body.type, 'urn:duplex:problem:device-retired');

    const reinstated = await call<Device>(base, 'POST', { id: 'd1', cluster_id: 'c0', capacity_bytes: 1 });
    assert.equal(reinstated.status, 201, JSON.stringify(reinstated.body));
    assert.equal(reinstated.body.state, 'available');

    const taken = await call<Problem>(base, 'POST', { id: 'd2', cluster_id: 'c0', capacity_bytes: 1024 });
    assert.equal(taken.status, 409);
    assert.equal(taken.body.type, 'urn:duplex:problem:device-exists');

    const added = await call<Device>(base, 'POST', { id: 'd8', cluster_id: 'c0', capacity_bytes: 32 * 1024 * 1024 });
    assert.equal(added.status, 201, JSON.stringify(added.body));
    assert.deepEqual([added.body.state, added.body.owner_cluster, added.body.capacity_bytes], ['available', 'c0', 32 * 1024 * 1024]);
    const label = JSON.parse(readFileSync(join(harness.deviceRoot, 'd8', 'device.json'), 'utf8')) as unknown;
    assert.deepEqual(label, { id: 'd8', home_cluster: 'c0', capacity_bytes: 32 * 1024 * 1024 });
    await untilBothShow('d8 added', 'd8', (device) => device.state === 'available');

    const task = await call<{ id: string }>(`${harness.serverUrl('B')}/v1/tasks`, 'POST', {
      kind: 'volume.create',
      storage_system_id: 'ss1',
      device: 'd8',
      params: { name: 'on-the-new-device', size_bytes: 4096 },
    });
    assert.equal(task.status, 202);
    await waitFor('the task on the new device', async () => {
      const current = await call<{ state: string }>(`${harness.serverUrl('B')}/v1/tasks/${task.body.id}`, 'GET');
      return current.body.state === 'succeeded' ? true : undefined;
    });
    assert.ok(existsSync(join(harness.deviceRoot, 'd8', 'volumes', 'on-the-new-device')));
  });

  it('a rescan answers with the stored version; unknown clusters and devices are 404', async () => {
    const rescan = await call<{ inventory_version: number; device_count: number }>(
      `${harness.serverUrl('B')}/v1/storage-systems/ss1/clusters/c1:rescan`,
      'POST',
    );
    assert.equal(rescan.status, 200);
    const cluster: { inventory_version: number } = await harness.db('clusters').where({ id: 'c1' }).first('inventory_version');
    assert.equal(rescan.body.inventory_version, cluster.inventory_version);
    assert.equal(rescan.body.device_count, 3);
    assert.equal((await call(`${harness.serverUrl('B')}/v1/storage-systems/ss1/clusters/c7:rescan`, 'POST')).status, 404);
    assert.equal((await call(`${harness.serverUrl('B')}/v1/storage-systems/ss1/devices/d77:set-state`, 'POST', { state: 'offline' })).status, 404);
  });
});

describe('a lost broadcast heals by itself', { timeout: 120_000 }, () => {
  let harness: TopologyHarness;

  before(async () => {
    harness = await TopologyHarness.start({ devicesPerCluster: 1, env: { FAULT_DROP_BROADCAST_RATE: '1' } });
  });
  after(() => harness?.stop());

  it('agents find the new version on their next heartbeat and report it', async () => {
    const before: { inventory_version: number } = await harness.db('clusters').where({ id: 'c0' }).first('inventory_version');
    writeFileSync(join(harness.deviceRoot, 'd0', 'FAILED'), 'test\n');
    for (const server of servers) {
      await waitFor(
        `server ${server} to show d0 unavailable`,
        async () => {
          const response = await fetch(`${harness.serverUrl(server)}/v1/storage-systems/ss1/devices/d0`, { headers: bearer(testAdminToken) });
          const device = (await response.json()) as Device;
          return device.state === 'unavailable' && device.inventory_version > before.inventory_version ? true : undefined;
        },
        10_000,
        50,
      );
    }
    const log = readFileSync(join(harness.topology.logs_dir, 'cluster-manager-ss1-c0.log'), 'utf8');
    assert.match(log, /broadcast dropped \(fault injection\)/, 'the broadcast really was dropped');
  });
});
