import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { lstat, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';
import { buildApp as buildAgentApp, loadAgentConfig } from '@duplex/agent';
import { buildApp as buildClusterManagerApp, loadClusterManagerConfig } from '@duplex/cluster-manager';
import { buildApp as buildDriverApp, createBackend, provisionFileDevice } from '@duplex/driver';
import { bearer, createTestDatabase, freePort, testAdminToken, testClusterToken, testJoinToken, testServiceToken, waitFor, type KnownValues, type TestDatabase } from '@duplex/testkit';
import { fuzzContract, fuzzRuns, fuzzSeed, Observed } from './support/service-fuzzer.ts';
import { listen, MiB, serverApp, type App } from './support/services.ts';

// Random and mutated requests to every operation of the agent, cluster-manager and driver
// contracts (see support/service-fuzzer.ts for what is checked after each). Each service
// belongs to a cluster of its own, with that cluster's token, so another cluster's token is
// one of the wrong credentials sent. Bugs found and not fixed yet are listed with their
// service (knownBugs): each has a test that fails once it is fixed.

const c0Token = testClusterToken('c0');
const c1Token = testClusterToken('c1');
// Refused tokens are part of the fuzzing: the limit on failed authentications must not shut the fuzzer out.
const unlimitedFailures = { limit: 100_000, windowMs: 60_000 };

console.log(`fuzz: seed ${fuzzSeed}, ${fuzzRuns} requests for each operation (set FUZZ_SEED and FUZZ_RUNS to change)`);

/** An execution request of the driver's contract, at the first fencing token and epoch. */
function execution(taskId: string, kind: string, device: string, params: Record<string, unknown>): Record<string, unknown> {
  return { task_id: taskId, kind, device, params, attempt: 1, fencing: { token: 1, epoch: 1 } };
}

/** Every entry under a directory: its type, its size, and the sha256 of a small file (volumes are sparse and may be large). */
async function treeOf(root: string): Promise<Record<string, string>> {
  const entries: Record<string, string> = {};
  const walk = async (directory: string, relative: string): Promise<void> => {
    for (const name of (await readdir(directory)).sort()) {
      const path = join(directory, name);
      const key = `${relative}/${name}`;
      const stats = await lstat(path);
      if (stats.isDirectory()) {
        entries[key] = 'directory';
        await walk(path, key);
      } else if (stats.isFile()) {
        entries[key] = `file of ${stats.size} bytes${stats.size <= 65_536 ? `, sha256 ${createHash('sha256').update(await readFile(path)).digest('hex')}` : ''}`;
      } else {
        entries[key] = stats.isSymbolicLink() ? `link to ${await readlink(path)}` : 'other';
      }
    }
  };
  await walk(root, '');
  return entries;
}

describe(`fuzzing the driver contract (seed ${fuzzSeed}, ${fuzzRuns} runs each)`, () => {
  const observed = new Observed();
  let root: string;
  let driver: App;
  let known: KnownValues;

  before(async () => {
    // The file backend, so that a refused request can be seen to leave every byte on the devices as it was.
    root = await mkdtemp(join(tmpdir(), 'duplex-fuzz-driver-'));
    for (const label of [
      { id: 'd0', home_cluster: 'c0', capacity_bytes: 64 * MiB },
      { id: 'd1', home_cluster: 'c1', capacity_bytes: 64 * MiB },
      { id: 'd2', home_cluster: 'c0', capacity_bytes: MiB },
    ]) {
      await provisionFileDevice(root, label);
    }
    driver = await buildDriverApp({ backend: createBackend({ kind: 'file', deviceRoot: root }), clusterToken: c0Token, authFailures: unlimitedFailures, logger: observed.logger('driver') });
    observed.watch(driver);
    await driver.ready();
    // A volume and an execution on record, for the requests to find (and replay).
    const created = await driver.inject({
      method: 'POST',
      url: '/v1/executions',
      headers: bearer(c0Token),
      payload: { task_id: 'tsk_fuzz_done', kind: 'volume.create', device: 'd0', params: { name: 'vol1', size_bytes: 4096 }, attempt: 1, fencing: { token: 1, epoch: 1 } },
    });
    assert.equal(created.json<{ outcome: string }>().outcome, 'succeeded', created.body);
    const devices = ['d0', 'd1', 'd2'];
    known = {
      byCollection: { devices: [...devices, 'd9'] },
      byName: {
        id: [...devices, 'd8'],
        device: devices,
        target_device: devices,
        home_cluster: ['c0', 'c1'],
        capacity_bytes: [MiB],
        task_id: ['tsk_fuzz_done', 'tsk_fuzz_new'],
        name: ['vol1', 'vol2'],
        target_name: ['vol1', 'vol2'],
        size_bytes: [1, 4096, MiB],
        attempt: [1, 2],
        token: [1, 2],
        epoch: [0, 1],
        // The running driver's instance with a generation it has reached makes a long poll wait.
        instance_id: [driver.deviceWatch.instanceId],
        after: [0, 1, 1_000_000],
        wait_ms: [0, 1, 100],
      },
      credentials: { cluster: c0Token },
      foreignTokens: [c1Token, testServiceToken, testJoinToken, testAdminToken],
      // Each kind of work with the parameters it takes (the contract does not say which).
      bodies: {
        execute: [
          execution('tsk_fuzz_create', 'volume.create', 'd0', { name: 'vol2', size_bytes: 4096 }),
          execution('tsk_fuzz_resize', 'volume.resize', 'd0', { name: 'vol1', size_bytes: 8192 }),
          execution('tsk_fuzz_copy', 'volume.copy', 'd0', { name: 'vol1', target_device: 'd2', target_name: 'vol1' }),
          execution('tsk_fuzz_delete', 'volume.delete', 'd0', { name: 'vol2' }),
          execution('tsk_fuzz_format', 'device.format', 'd2', {}),
          execution('tsk_fuzz_probe', 'device.probe', 'd1', {}),
        ],
      },
    };
  });

  after(async () => {
    await driver?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  fuzzContract({
    contract: 'driver',
    app: () => driver,
    known: () => known,
    observed,
    snapshot: () => treeOf(root),
    // A long poll for a generation the driver has not reached waits for up to wait_ms (25 s by default).
    longPolls: { watchDevices: 1_000 },
    knownBugs: [],
  });
});

describe(`fuzzing the agent contract (seed ${fuzzSeed}, ${fuzzRuns} runs each)`, () => {
  const observed = new Observed();
  let tdb: TestDatabase;
  let server: App;
  let agentDriver: App;
  let agent: App;
  let known: KnownValues;
  let executions = 0;

  before(async () => {
    // A real server to register with, so that the agent holds a credential its server issued.
    tdb = await createTestDatabase();
    server = await serverApp(tdb.db, tdb.url);
    const serverUrl = await listen(server);
    // A real driver for the tasks the agent takes; the executions it is asked for are counted.
    agentDriver = await buildDriverApp({
      backend: createBackend({ kind: 'memory', devices: [{ id: 'd4', home_cluster: 'c1', capacity_bytes: 64 * MiB }, { id: 'd5', home_cluster: 'c1', capacity_bytes: 64 * MiB }] }),
      clusterToken: c1Token,
      authFailures: unlimitedFailures,
      logger: false,
    });
    agentDriver.addHook('onRequest', async (request) => {
      if (request.method === 'POST' && request.url.startsWith('/v1/executions')) executions += 1;
    });
    const driverUrl = await listen(agentDriver);
    agent = await buildAgentApp({
      config: loadAgentConfig({
        AGENT_NAME: 'ss1-c1-A',
        SERVER_ID: 'A',
        SERVER_URL: serverUrl,
        STORAGE_SYSTEM_ID: 'ss1',
        CLUSTER_ID: 'c1',
        JOIN_TOKEN: testJoinToken,
        CLUSTER_TOKEN: c1Token,
        DRIVER_URL: driverUrl,
        // No cluster-manager: an inventory report after a change notice fails at once and is retried at the next heartbeat.
        CLUSTER_MANAGER_URL: `http://127.0.0.1:${await freePort()}`,
        AUTH_FAILURE_LIMIT: '100000',
      }),
      logger: observed.logger('agent'),
    });
    observed.watch(agent);
    agent.agent.start(await listen(agent));
    // The server issues credentials for a day (AGENT_CREDENTIAL_TTL_MS): no rotation during the run.
    const credential = await waitFor('the agent to register', async () => agent.agent.link?.registration?.credential);
    // Another agent of the same server and cluster: its credential is not this agent's.
    const other = await server.inject({
      method: 'POST',
      url: '/v1/agents',
      payload: { name: 'ss1-c1-B', server_id: 'A', storage_system_id: 'ss1', cluster_id: 'c1', url: 'http://127.0.0.1:9', pid: 2, started_at: '2026-12-01T00:00:00Z' },
    });
    assert.equal(other.statusCode, 201, other.body);
    known = {
      byCollection: {},
      byName: {
        task_id: ['tsk_fuzz_1', 'tsk_fuzz_2'],
        device: ['d4', 'd5'],
        target_device: ['d4', 'd5'],
        name: ['vol1'],
        target_name: ['vol2'],
        size_bytes: [4096],
        attempt: [1],
        fencing_token: [1, 2],
        epoch: [0, 1],
        request_id: ['req-fuzz'],
        version: [1, 2],
      },
      credentials: { cluster: c1Token, server: credential },
      bodies: {
        acceptTasks: [
          { tasks: [{ task_id: 'tsk_fuzz_1', kind: 'device.probe', device: 'd4', params: {}, attempt: 1, fencing_token: 1, epoch: 0, request_id: 'req-fuzz' }] },
          {
            tasks: [
              { task_id: 'tsk_fuzz_2', kind: 'volume.create', device: 'd5', params: { name: 'vol1', size_bytes: 4096 }, attempt: 1, fencing_token: 1, epoch: 0 },
              { task_id: 'tsk_fuzz_3', kind: 'volume.copy', device: 'd5', params: { name: 'vol1', target_device: 'd4', target_name: 'vol2' }, attempt: 1, fencing_token: 1, epoch: 0 },
            ],
          },
        ],
      },
      foreignTokens: [c0Token, testServiceToken, testJoinToken, testAdminToken, other.json<{ credential: string }>().credential],
    };
  });

  after(async () => {
    await agent?.close();
    await agentDriver?.close();
    await server?.close();
    await tdb?.drop();
  });

  fuzzContract({
    contract: 'agent',
    app: () => agent,
    known: () => known,
    observed,
    // What the agent holds, as its status tells it, and the executions the driver was asked for.
    snapshot: async () => {
      const status = await agent.inject({ method: 'GET', url: '/v1/status', headers: bearer(c1Token) });
      assert.equal(status.statusCode, 200, status.body);
      const { registered, agent_id, incarnation, tasks_in_hand, reports_pending } = status.json<Record<string, unknown>>();
      return { registered, agent_id, incarnation, tasks_in_hand, reports_pending, fenced: agent.agent.fenced, driver_executions: executions };
    },
    // A task taken runs through the driver and is reported to the server (which drops reports on tasks it never dispatched).
    settle: () =>
      waitFor('the agent to finish the tasks it took', async () => ((agent.agent.runner?.size ?? 0) === 0 && (agent.agent.link?.reports.size ?? 0) === 0 ? true : undefined), 10_000, 10).then(() => undefined),
    knownBugs: [],
  });
});

describe(`fuzzing the cluster-manager contract (seed ${fuzzSeed}, ${fuzzRuns} runs each)`, () => {
  const observed = new Observed();
  let tdb: TestDatabase;
  let cmDriver: App;
  let manager: App;
  let known: KnownValues;
  let snapshotSql = '';

  before(async () => {
    tdb = await createTestDatabase();
    // A real driver (memory backend), so that inventory and device operations run through to it.
    cmDriver = await buildDriverApp({
      backend: createBackend({
        kind: 'memory',
        devices: [
          { id: 'd0', home_cluster: 'c0', capacity_bytes: 64 * MiB },
          { id: 'd1', home_cluster: 'c0', capacity_bytes: 64 * MiB },
          { id: 'd2', home_cluster: 'c0', capacity_bytes: MiB },
          { id: 'd4', home_cluster: 'c1', capacity_bytes: 64 * MiB },
        ],
      }),
      clusterToken: c0Token,
      authFailures: unlimitedFailures,
      logger: false,
    });
    const driverUrl = await listen(cmDriver);
    manager = await buildClusterManagerApp({
      config: loadClusterManagerConfig({
        DATABASE_URL: tdb.url,
        STORAGE_SYSTEM_ID: 'ss1',
        CLUSTER_ID: 'c0',
        JOIN_TOKEN: testJoinToken,
        CLUSTER_TOKEN: c0Token,
        SERVICE_TOKEN: testServiceToken,
        DRIVER_URL: driverUrl,
        CM_SERVERS: 'A=http://127.0.0.1:9',
        AUTH_FAILURE_LIMIT: '100000',
      }),
      db: tdb.db,
      logger: observed.logger('cluster-manager'),
    });
    observed.watch(manager);
    await manager.ready();
    // The cluster-manager is not started: start() launches an agent process per server (and a
    // spare), renews the cluster's lease every few hundred ms and follows the driver's probes,
    // each of which writes rows between a refused request's two snapshots. Instead the cluster
    // is stored as start() stores it, and the first inventory through the manager's own
    // refreshInventory, from the driver; every operation of the API then works as after start().
    await tdb.db('storage_systems').insert({ id: 'ss1' });
    await tdb.db('clusters').insert([
      { storage_system_id: 'ss1', id: 'c0', manager_url: 'http://127.0.0.1:9' },
      { storage_system_id: 'ss1', id: 'c1' },
    ]);
    const inventory = await manager.clusterManager.refreshInventory('launch');
    assert.deepEqual(inventory.devices.map((device) => device.id), ['d0', 'd1', 'd2']);
    // d2 offline, so that retiring it can succeed; an agent of server A, for listAgentProcesses.
    const offline = await manager.inject({ method: 'POST', url: '/v1/devices/d2:set-state', headers: bearer(testServiceToken), payload: { state: 'offline', reason: 'fuzzing' } });
    assert.equal(offline.statusCode, 200, offline.body);
    await tdb.db('agent_identities').insert({ storage_system_id: 'ss1', cluster_id: 'c0', server_id: 'A', name: 'ss1-c0-A', pid: 4242, state: 'running', restarts: 0, started_at: new Date() });

    const tables = await tdb.db('information_schema.tables').where({ table_schema: 'public', table_type: 'BASE TABLE' }).whereNot('table_name', 'like', 'knex_%').orderBy('table_name').pluck('table_name');
    snapshotSql = tables
      .map((table: string) => `select '${table}' as name, count(*)::int as rows, md5(coalesce(string_agg(t::text, E'\\n' order by t::text), '')) as hash from "${table}" t`)
      .join(' union all ');
    const devices = ['d0', 'd1', 'd2', 'd4'];
    known = {
      // Mostly devices of this cluster, so that requests get past the ownership check.
      byCollection: { devices: ['d0', 'd1', 'd2', 'd2', 'd4', 'd9'] },
      byName: {
        id: [...devices, 'd8', 'd9'],
        capacity_bytes: [MiB],
        reason: ['maintenance'],
        'if-none-match': ['"c0-v1"', '"c0-v2"', '"c0-v3"'],
      },
      credentials: { cluster: c0Token, service: testServiceToken },
      foreignTokens: [c1Token, testJoinToken, testAdminToken],
      bodies: {
        setDeviceState: [{ state: 'offline', reason: 'maintenance' }, { state: 'available' }],
        addDevice: [{ id: 'd7', capacity_bytes: MiB }, { id: 'd2', capacity_bytes: MiB }],
      },
    };
  });

  after(async () => {
    await manager?.close();
    await cmDriver?.close();
    await tdb?.drop();
  });

  fuzzContract({
    contract: 'cluster-manager',
    app: () => manager,
    known: () => known,
    observed,
    // Every table (row counts and a hash of every row), and the devices on the driver.
    snapshot: async () => {
      const { rows } = await tdb.db.raw<{ rows: { name: string; rows: number; hash: string }[] }>(snapshotSql);
      const discovered = await cmDriver.inject({ method: 'GET', url: '/v1/devices', headers: bearer(c0Token) });
      return { ...Object.fromEntries(rows.map((row) => [row.name, `${row.rows} rows, ${row.hash}`])), driver: discovered.body };
    },
    knownBugs: [],
  });
});
