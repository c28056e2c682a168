import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { buildApp, loadServerConfig } from '@duplex/server';
import { injectWithToken, testAdminToken, testJoinTokens, testServiceToken } from '@duplex/testkit';
import {
  GiB,
  MiB,
  assertProblem,
  device,
  inventoryReport,
  registerAgent,
  reportInventory,
  snapshot,
  startServer,
  stopServer,
  type ReportedDevice,
  type TestServer,
} from './helpers.ts';

interface ServerInventoryRow {
  server_id: string;
  storage_system_id: string;
  cluster_id: string;
  version: number;
  cluster_state: string;
  epoch: number;
  devices: ReportedDevice[];
  reported_by: string;
  recorded_at: Date;
  reported_at: Date;
}

interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

describe('inventory', () => {
  let server: TestServer;
  let c0: string;
  let c1: string;
  const storedView = (cluster: string) =>
    server.db<ServerInventoryRow>('server_inventories').where({ server_id: 'A', storage_system_id: 'ss1', cluster_id: cluster }).first();
  const get = async <T>(url: string): Promise<T> => {
    const response = await server.app.inject({ method: 'GET', url });
    assert.equal(response.statusCode, 200, response.body);
    return response.json<T>();
  };

  before(async () => {
    server = await startServer();
    c0 = await registerAgent(server.app, { name: 'ss1-c0-A', cluster_id: 'c0' });
    c1 = await registerAgent(server.app, { name: 'ss1-c1-A', cluster_id: 'c1', pid: 2 });
  });
  after(() => stopServer(server));

  describe('PUT /v1/agents/{id}/inventory', () => {
    it('stores the report as this server’s view of the cluster', async () => {
      const report = inventoryReport({ version: 3, epoch: 2, devices: [device('d0', 'c0'), device('d1', 'c0', { state: 'unavailable', reason: 'pulled' })] });
      const response = await server.app.inject({ method: 'PUT', url: `/v1/agents/${c0}/inventory`, payload: report });
      assert.equal(response.statusCode, 200);
      assert.deepEqual(response.json(), { accepted: true, version: 3 });
      const row = await storedView('c0');
      assert.equal(row?.version, 3);
      assert.equal(row?.epoch, 2);
      assert.equal(row?.cluster_state, 'online');
      assert.equal(row?.reported_by, c0);
      assert.equal(row?.recorded_at.toISOString(), '2026-11-25T10:00:00.000Z');
      assert.deepEqual(row?.devices, report.devices);
    });

    it('ignores an older or equal version and says which version it holds', async () => {
      const before = await snapshot(server.db);
      assert.deepEqual(await reportInventory(server.app, c0, inventoryReport({ version: 2, devices: [] })), { accepted: false, version: 3 });
      assert.deepEqual(await reportInventory(server.app, c0, inventoryReport({ version: 3, devices: [] })), { accepted: false, version: 3 });
      assert.equal(await snapshot(server.db), before);
      assert.deepEqual((await storedView('c0'))?.devices.map((d) => d.id), ['d0', 'd1']);
    });

    it('a report for another cluster than the agent serves is 409 agent-mismatch', async () => {
      const before = await snapshot(server.db);
      const other = await server.app.inject({ method: 'PUT', url: `/v1/agents/${c0}/inventory`, payload: inventoryReport({ cluster_id: 'c1', version: 99 }) });
      assertProblem(other, 409, 'agent-mismatch');
      const elsewhere = await server.app.inject({ method: 'PUT', url: `/v1/agents/${c0}/inventory`, payload: inventoryReport({ storage_system_id: 'ss9', version: 99 }) });
      assertProblem(elsewhere, 409, 'agent-mismatch');
      assert.equal(await snapshot(server.db), before);
    });

    it('an unknown agent is 401: no credential can be its', async () => {
      const before = await snapshot(server.db);
      const response = await server.app.inject({ method: 'PUT', url: '/v1/agents/A:ss1:c0:ghost/inventory', payload: inventoryReport({ version: 50 }) });
      assertProblem(response, 401, 'unauthenticated');
      assert.equal(await snapshot(server.db), before);
    });

    it('a newer version replaces the view, and heartbeats report it', async () => {
      assert.deepEqual(await reportInventory(server.app, c1, inventoryReport({ cluster_id: 'c1', version: 1, devices: [device('d4', 'c1', { capacity_bytes: 2 * GiB })] })), { accepted: true, version: 1 });
      assert.deepEqual(await reportInventory(server.app, c1, inventoryReport({ cluster_id: 'c1', version: 2, devices: [device('d4', 'c1', { capacity_bytes: 2 * GiB }), device('d5', 'c1', { capacity_bytes: MiB })] })), { accepted: true, version: 2 });
      assert.equal((await storedView('c1'))?.version, 2);
      const heartbeat = await server.app.inject({ method: 'POST', url: `/v1/agents/${c1}/heartbeats`, payload: { incarnation: 1 } });
      assert.equal(heartbeat.json().inventory_version, 2);
    });
  });

  describe('GET /v1/storage-systems', () => {
    it('lists the reported storage systems with their counts', async () => {
      const page = await get<Page<{ id: string; cluster_count: number; device_count: number; devices_available: number; updated_at: string }>>('/v1/storage-systems');
      assert.equal(page.next_cursor, null);
      assert.equal(page.items.length, 1);
      const [ss1] = page.items;
      assert.equal(ss1?.id, 'ss1');
      assert.equal(ss1?.cluster_count, 2);
      assert.equal(ss1?.device_count, 4);
      assert.equal(ss1?.devices_available, 3);
      const latest = [(await storedView('c0'))!.reported_at, (await storedView('c1'))!.reported_at].map((d) => d.toISOString()).sort().at(-1);
      assert.equal(ss1?.updated_at, latest);
    });

    it('GET /v1/storage-systems/{id} answers one system', async () => {
      const ss1 = await get<{ id: string; device_count: number; cluster_count: number }>('/v1/storage-systems/ss1');
      assert.equal(ss1.id, 'ss1');
      assert.equal(ss1.cluster_count, 2);
      assert.equal(ss1.device_count, 4);
    });

    it('pages through storage systems', async () => {
      const other = await registerAgent(server.app, { name: 'ss2-c0-A', storage_system_id: 'ss2' });
      await reportInventory(server.app, other, inventoryReport({ storage_system_id: 'ss2', devices: [device('x0', 'c0')] }));
      const first = await get<Page<{ id: string }>>('/v1/storage-systems?limit=1');
      assert.deepEqual(first.items.map((s) => s.id), ['ss1']);
      assert.equal(typeof first.next_cursor, 'string');
      const second = await get<Page<{ id: string }>>(`/v1/storage-systems?limit=1&cursor=${first.next_cursor}`);
      assert.deepEqual(second.items.map((s) => s.id), ['ss2']);
      assert.equal(second.next_cursor, null);
    });
  });

  describe('GET /v1/storage-systems/{id}/clusters', () => {
    it('lists each cluster with its state, epoch, owned devices and report', async () => {
      const page = await get<Page<Record<string, unknown>>>('/v1/storage-systems/ss1/clusters');
      const reportedAt = async (cluster: string) => (await storedView(cluster))!.reported_at.toISOString();
      assert.deepEqual(page.items, [
        { id: 'c0', storage_system_id: 'ss1', state: 'online', epoch: 2, device_count: 2, inventory_version: 3, recorded_at: '2026-11-25T10:00:00.000Z', reported_at: await reportedAt('c0'), reported_by: c0 },
        { id: 'c1', storage_system_id: 'ss1', state: 'online', epoch: 1, device_count: 2, inventory_version: 2, recorded_at: '2026-11-25T10:00:00.000Z', reported_at: await reportedAt('c1'), reported_by: c1 },
      ]);
      assert.equal(page.next_cursor, null);
    });

    it('shows the state the cluster-managers keep: a cluster its peer took over is failed, though its last report said online', async () => {
      await server.db('storage_systems').insert({ id: 'ss1' }).onConflict('id').ignore();
      await server.db('clusters').insert([
        { storage_system_id: 'ss1', id: 'c0', state: 'online' },
        { storage_system_id: 'ss1', id: 'c1', state: 'failed' },
      ]);
      try {
        const page = await get<Page<{ id: string; state: string }>>('/v1/storage-systems/ss1/clusters');
        assert.deepEqual(page.items.map((cluster) => `${cluster.id}:${cluster.state}`), ['c0:online', 'c1:failed']);
        assert.equal((await storedView('c1'))!.cluster_state, 'online', 'the last report c1 sent');
      } finally {
        await server.db('clusters').where({ storage_system_id: 'ss1' }).del();
      }
    });

    it('pages with limit=1', async () => {
      const first = await get<Page<{ id: string }>>('/v1/storage-systems/ss1/clusters?limit=1');
      assert.deepEqual(first.items.map((c) => c.id), ['c0']);
      const second = await get<Page<{ id: string }>>(`/v1/storage-systems/ss1/clusters?limit=1&cursor=${first.next_cursor}`);
      assert.deepEqual(second.items.map((c) => c.id), ['c1']);
      assert.equal(second.next_cursor, null);
    });
  });

  describe('GET /v1/storage-systems/{id}/devices', () => {
    it('lists every device with its owner, state and report version', async () => {
      const page = await get<Page<Record<string, unknown>>>('/v1/storage-systems/ss1/devices');
      assert.deepEqual(page.items.map(({ reported_at: _reportedAt, ...rest }) => rest), [
        { ...device('d0', 'c0'), storage_system_id: 'ss1', inventory_version: 3 },
        { ...device('d1', 'c0', { state: 'unavailable', reason: 'pulled' }), storage_system_id: 'ss1', inventory_version: 3 },
        { ...device('d4', 'c1', { capacity_bytes: 2 * GiB }), storage_system_id: 'ss1', inventory_version: 2 },
        { ...device('d5', 'c1', { capacity_bytes: MiB }), storage_system_id: 'ss1', inventory_version: 2 },
      ]);
    });

    it('filters by owner cluster and by state', async () => {
      const ids = async (query: string) => (await get<Page<{ id: string }>>(`/v1/storage-systems/ss1/devices?${query}`)).items.map((d) => d.id);
      assert.deepEqual(await ids('cluster_id=c1'), ['d4', 'd5']);
      assert.deepEqual(await ids('state=unavailable'), ['d1']);
      assert.deepEqual(await ids('state=available&cluster_id=c0'), ['d0']);
    });

    it('pages with limit=1 through every device', async () => {
      const seen: string[] = [];
      let cursor: string | null = null;
      for (let pages = 0; pages < 10; pages += 1) {
        const page: Page<{ id: string }> = await get(`/v1/storage-systems/ss1/devices?limit=1${cursor ? `&cursor=${cursor}` : ''}`);
        seen.push(...page.items.map((d) => d.id));
        cursor = page.next_cursor;
        if (cursor === null) break;
      }
      assert.deepEqual(seen, ['d0', 'd1', 'd4', 'd5']);
    });

    it('shows a device taken over by the peer cluster at the higher epoch', async () => {
      await reportInventory(server.app, c1, inventoryReport({ cluster_id: 'c1', version: 3, epoch: 2, devices: [device('d4', 'c1', { capacity_bytes: 2 * GiB }), device('d5', 'c1', { capacity_bytes: MiB }), device('d0', 'c1', { home_cluster: 'c0', epoch: 2 })] }));
      const page = await get<Page<{ id: string; owner_cluster: string; home_cluster: string; epoch: number; inventory_version: number }>>('/v1/storage-systems/ss1/devices?cluster_id=c1');
      assert.deepEqual(page.items.map((d) => `${d.id}:${d.home_cluster}->${d.owner_cluster}@${d.epoch}v${d.inventory_version}`), ['d0:c0->c1@2v3', 'd4:c1->c1@1v3', 'd5:c1->c1@1v3']);
    });
  });

  describe('unknown storage system', () => {
    for (const path of ['/v1/storage-systems/nope', '/v1/storage-systems/nope/clusters', '/v1/storage-systems/nope/devices']) {
      it(`GET ${path} is 404 storage-system-not-found`, async () => {
        const problem = assertProblem(await server.app.inject({ method: 'GET', url: path }), 404, 'storage-system-not-found');
        assert.equal(problem.instance, path);
      });
    }
  });

  it('a restarted server rebuilds its view from Postgres', async () => {
    const restarted = injectWithToken(await buildApp({ config: loadServerConfig({ DATABASE_URL: server.tdb.url, SERVER_ID: 'A', ADMIN_TOKEN: testAdminToken, JOIN_TOKENS: testJoinTokens, SERVICE_TOKEN: testServiceToken }), db: server.db, logger: false }));
    await restarted.ready();
    try {
      const fresh = await restarted.inject({ method: 'GET', url: '/v1/storage-systems/ss1/devices' });
      const current = await server.app.inject({ method: 'GET', url: '/v1/storage-systems/ss1/devices' });
      assert.equal(fresh.statusCode, 200);
      assert.deepEqual(fresh.json(), current.json());
    } finally {
      await restarted.close();
    }
  });
});
