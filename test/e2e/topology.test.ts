/**
 * End to end: `duplex up` runs a whole topology (2 servers, 2 clusters each with a
 * cluster-manager, a driver and one agent per server, 8 file devices) on a fresh database,
 * and everything is checked from the outside: over HTTP, on disk, in Postgres and in the logs.
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres node --import tsx --test test/e2e/topology.test.ts
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { open, readFile, readdir, stat } from 'node:fs/promises';
import { after, before, describe, test, type TestContext } from 'node:test';
import request from 'supertest';
import {
  assertProblem,
  assertSucceeded,
  getJson,
  listAllTasks,
  postTask,
  problemType,
  runTask,
  submitTask,
  waitForTask,
  type Agent,
  type AgentList,
  type DeviceList,
  type StorageSystemList,
  type Task,
  type TaskRequest,
} from './helpers/api.ts';
import { readLog } from './helpers/logs.ts';
import { isAlive } from './helpers/processes.ts';
import { Stack, stoppedLine, type AgentIdentityRow } from './helpers/stack.ts';
import {
  clusterIds,
  deviceCapacity,
  homeOf,
  KiB,
  MiB,
  serverIds,
  smallCapacity,
  smallDevice,
  storageSystemId,
  volumePath,
  volumesDir,
  type ClusterId,
  type ServerId,
} from './helpers/topology.ts';

const stack = new Stack();
const failures: string[] = [];
/** Each server's agent id per cluster, from GET /v1/agents at start. */
const agentIds = new Map<string, string>();
const agentKey = (server: ServerId, cluster: ClusterId) => `${server}/${cluster}`;

const serverUrl = (server: ServerId) => stack.topo.servers[server].url;

/** A test step that records its failure, so the after hook knows to print diagnostics. */
function step(name: string, fn: (t: TestContext) => Promise<void>, timeout = 60_000): void {
  test(name, { timeout }, async (t) => {
    try {
      await fn(t);
    } catch (error) {
      failures.push(name);
      throw error;
    }
  });
}

/** The task ran on the submitting server's own agent in the cluster that owns the device, once. */
function assertRoutedTo(task: Task, server: ServerId, cluster: ClusterId): void {
  assert.equal(task.server_id, server, `task ${task.id} was accepted by ${server}`);
  assert.equal(task.cluster_id, cluster, `task ${task.id} on ${task.device} runs in the owner cluster ${cluster}`);
  assert.equal(task.agent_id, agentIds.get(agentKey(server, cluster)), `task ${task.id} runs on ${server}'s agent in ${cluster}`);
  assert.equal(task.attempt, 1, `task ${task.id} took one attempt`);
  assert.ok(Number.isSafeInteger(task.fencing_token) && (task.fencing_token ?? 0) > 0, `task ${task.id} has a fencing token: ${task.fencing_token}`);
  assert.ok(task.dispatched_at && task.finished_at, `task ${task.id} has dispatched_at and finished_at`);
}

/** Runs a task through a server, and checks it succeeded on that server's agent in the device's owner cluster. */
async function runOk(server: ServerId, body: TaskRequest): Promise<Task> {
  const task = await runTask(serverUrl(server), body);
  assertSucceeded(task);
  assertRoutedTo(task, server, homeOf(stack.topo, body.device));
  return task;
}

const create = (device: string, name: string, size_bytes: number): TaskRequest => ({
  kind: 'volume.create',
  storage_system_id: storageSystemId,
  device,
  params: { name, size_bytes },
});

/** The regular files in a device's volumes directory. */
async function volumesOnDisk(device: string): Promise<string[]> {
  const entries = await readdir(volumesDir(stack.topo, device), { withFileTypes: true });
  return entries.filter((entry) => entry.isFile() && !entry.name.startsWith('.')).map((entry) => entry.name).sort();
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function writeAt(path: string, position: number, data: Buffer): Promise<void> {
  const file = await open(path, 'r+');
  try {
    await file.write(data, 0, data.length, position);
    await file.sync();
  } finally {
    await file.close();
  }
}

describe('duplex up: two servers, two clusters, eight file devices', { concurrency: false }, () => {
  before(async () => {
    try {
      await stack.start();
    } catch (error) {
      failures.push('start');
      throw error;
    }
  }, { timeout: 90_000 });

  after(async () => {
    const report = await stack.shutdown().catch(() => undefined);
    const failed = failures.length > 0 || !report || report.exitCode !== 0 || report.survivors.length > 0 || report.openPorts.length > 0;
    if (failed) process.stderr.write(`\n# e2e failed (${failures.join('; ') || 'shutdown'}); diagnostics:\n${await stack.diagnostics()}\n`);
    const killed = await stack.dispose();
    if (killed.length > 0) process.stderr.write(`# e2e cleanup killed what the launcher left running: ${killed.map((s) => `${s.pid} (${s.what})`).join(', ')}\n`);
  }, { timeout: 60_000 });

  step('startup: each server has its two agents, the inventory is reported and every service answers', async () => {
    const topology = stack.topo;

    for (const server of serverIds) {
      const { items } = await getJson<AgentList>(serverUrl(server), '/v1/agents');
      assert.equal(items.length, 2, `server ${server} lists ${items.length} agents: ${JSON.stringify(items)}`);
      for (const agent of items) {
        assert.equal(agent.server_id, server);
        assert.equal(agent.storage_system_id, storageSystemId);
        assert.equal(agent.state, 'active');
        agentIds.set(agentKey(server, agent.cluster_id as ClusterId), agent.id);
      }
      assert.deepEqual(items.map((agent) => agent.cluster_id).sort(), [...clusterIds], `server ${server} has one agent per cluster`);
      const active = await getJson<AgentList>(serverUrl(server), '/v1/agents?state=active');
      assert.equal(active.items.length, 2);
    }

    // The cluster-managers stored each agent's identity, and each is a live process: the one that registered.
    const identities = await stack.db<AgentIdentityRow>('agent_identities').select('*').orderBy(['cluster_id', 'server_id']);
    assert.equal(identities.length, 4, `agent_identities: ${JSON.stringify(identities)}`);
    assert.deepEqual(
      identities.map((row) => `${row.cluster_id}/${row.server_id}`),
      ['c0/A', 'c0/B', 'c1/A', 'c1/B'],
    );
    for (const row of identities) {
      assert.equal(row.storage_system_id, storageSystemId);
      assert.equal(row.name, `${storageSystemId}-${row.cluster_id}-${row.server_id}`);
      assert.ok(row.started_at instanceof Date && !Number.isNaN(row.started_at.getTime()), `started_at of ${row.name}`);
      assert.ok(row.pid !== null && isAlive(row.pid), `agent ${row.name} has a live pid (${row.pid})`);
      const agentId = agentIds.get(agentKey(row.server_id as ServerId, row.cluster_id as ClusterId));
      assert.ok(agentId, `server ${row.server_id} lists an agent in ${row.cluster_id}`);
      const registered = await getJson<Agent>(serverUrl(row.server_id as ServerId), `/v1/agents/${encodeURIComponent(agentId)}`);
      assert.equal(registered.pid, row.pid, `the agent registered with ${row.server_id} is the process the cluster-manager of ${row.cluster_id} launched`);
    }

    // Both servers were told the same inventory by their own agents.
    for (const server of serverIds) {
      const systems = await getJson<StorageSystemList>(serverUrl(server), '/v1/storage-systems');
      assert.equal(systems.items.length, 1, `server ${server} storage systems: ${JSON.stringify(systems)}`);
      assert.deepEqual(
        { ...systems.items[0], updated_at: undefined },
        { id: storageSystemId, cluster_count: 2, device_count: 8, devices_available: 8, updated_at: undefined },
      );
      const devices = await getJson<DeviceList>(serverUrl(server), `/v1/storage-systems/${storageSystemId}/devices`);
      assert.deepEqual(devices.items.map((device) => device.id).sort(), topology.devices.map((device) => device.id));
      for (const device of devices.items) {
        const configured = topology.devices.find((candidate) => candidate.id === device.id)!;
        assert.equal(device.storage_system_id, storageSystemId);
        assert.equal(device.home_cluster, configured.home_cluster);
        assert.equal(device.owner_cluster, configured.home_cluster, `${device.id} is owned by its home cluster`);
        assert.equal(device.capacity_bytes, configured.capacity_bytes);
        assert.equal(device.state, 'available', `${device.id} on ${server}: ${device.reason}`);
        assert.ok(device.inventory_version >= 1, `${device.id} inventory_version ${device.inventory_version}`);
        assert.ok(!Number.isNaN(Date.parse(device.reported_at)), `${device.id} reported_at ${device.reported_at}`);
      }
    }

    // Health, readiness, Swagger UI and the contract on every server, cluster-manager, driver and agent.
    const agents = await stack.db<{ id: string; url: string }>('agents').select('id', 'url');
    const endpoints = [
      ...topology.services.map((service) => ({ name: service.name, url: service.url, title: `duplex ${service.role} API` })),
      ...agents.map((agent) => ({ name: `agent ${agent.id}`, url: agent.url, title: 'duplex agent API' })),
    ];
    assert.equal(endpoints.length, 10);
    for (const endpoint of endpoints) {
      const health = await request(endpoint.url).get('/healthz');
      assert.equal(health.status, 200, `${endpoint.name} /healthz`);
      assert.deepEqual(health.body, { status: 'ok' });
      const ready = await request(endpoint.url).get('/readyz');
      assert.equal(ready.status, 200, `${endpoint.name} /readyz: ${ready.text}`);
      assert.equal((ready.body as { status: string }).status, 'ready');
      // Swagger UI is the servers' (with every contract); the cluster's processes serve only their contract.
      const docs = await request(endpoint.url).get('/docs').redirects(3);
      if (endpoint.title === 'duplex server API') {
        assert.equal(docs.status, 200, `${endpoint.name} /docs`);
        assert.match(String(docs.headers['content-type']), /^text\/html/, `${endpoint.name} /docs is HTML`);
      } else {
        assert.equal(docs.status, 404, `${endpoint.name} /docs`);
      }
      const contract = await request(endpoint.url).get('/openapi.json');
      assert.equal(contract.status, 200, `${endpoint.name} /openapi.json`);
      assert.match(String(contract.headers['content-type']), /^application\/json/);
      const document = contract.body as { openapi: string; info: { title: string } };
      assert.equal(document.openapi, '3.1.0');
      assert.equal(document.info.title, endpoint.title, `${endpoint.name} serves its own contract`);
    }
  });

  step('volume.create through A and B on both clusters makes sparse files of the asked size', async () => {
    const cases: { server: ServerId; device: string; name: string; size: number }[] = [
      { server: 'A', device: 'd0', name: 'a-on-c0', size: 1 * MiB },
      { server: 'A', device: 'd5', name: 'a-on-c1', size: 2 * MiB },
      { server: 'B', device: 'd1', name: 'src', size: 8 * MiB },
      { server: 'B', device: 'd4', name: 'b-on-c1', size: 3 * MiB + 512 },
    ];
    const tokens: number[] = [];
    for (const { server, device, name, size } of cases) {
      const task = await runOk(server, create(device, name, size));
      assert.deepEqual(task.result?.volume, { device, name, size_bytes: size });
      tokens.push(task.fencing_token ?? 0);
      const file = await stat(volumePath(stack.topo, device, name));
      assert.ok(file.isFile());
      assert.equal(file.size, size, `${device}/${name} has the asked size`);
      assert.ok(file.blocks * 512 <= 64 * KiB, `${device}/${name} is sparse (${file.blocks} blocks allocated)`);
    }
    assert.equal(new Set(tokens).size, tokens.length, `every attempt has its own fencing token: ${tokens.join(', ')}`);
  });

  step('volume.copy to a device of the other cluster copies the bytes as of the copy', async () => {
    const source = volumePath(stack.topo, 'd1', 'src');
    const size = 8 * MiB;
    const head = Buffer.from('duplex e2e: head of the source volume');
    const middle = randomBytes(64 * KiB);
    const tail = randomBytes(16);
    await writeAt(source, 0, head);
    await writeAt(source, 3 * MiB + 123, middle);
    await writeAt(source, size - tail.length, tail);
    const before = await readFile(source);

    // d1 is c0's; the copy runs on A's agent in c0 and writes to d6, a c1 device.
    const task = await runOk('A', {
      kind: 'volume.copy',
      storage_system_id: storageSystemId,
      device: 'd1',
      params: { name: 'src', target_device: 'd6', target_name: 'src-copy' },
    });
    assert.deepEqual(task.result?.volume, { device: 'd6', name: 'src-copy', size_bytes: size });
    assert.deepEqual(task.result?.source, { device: 'd1', name: 'src', size_bytes: size });

    const copyPath = volumePath(stack.topo, 'd6', 'src-copy');
    const copy = await readFile(copyPath);
    assert.equal(copy.length, size);
    assert.ok(copy.equals(before), 'the copy holds the source bytes');
    assert.ok((await stat(copyPath)).blocks * 512 < size, 'the zero ranges of the copy stay holes');

    await writeAt(source, 0, Buffer.from('CHANGED AFTER THE COPY'));
    assert.ok(!(await readFile(source)).equals(before), 'the source changed');
    assert.ok((await readFile(copyPath)).equals(before), 'the copy is independent of later writes to the source');
  });

  step('volume.resize changes the file size (B, on a c1 device)', async () => {
    const task = await runOk('B', { kind: 'volume.resize', storage_system_id: storageSystemId, device: 'd5', params: { name: 'a-on-c1', size_bytes: 5 * MiB } });
    assert.deepEqual(task.result?.volume, { device: 'd5', name: 'a-on-c1', size_bytes: 5 * MiB });
    assert.equal((await stat(volumePath(stack.topo, 'd5', 'a-on-c1'))).size, 5 * MiB);

    const shrunk = await runOk('A', { kind: 'volume.resize', storage_system_id: storageSystemId, device: 'd0', params: { name: 'a-on-c0', size_bytes: 256 * KiB } });
    assert.equal(shrunk.result?.volume?.size_bytes, 256 * KiB);
    assert.equal((await stat(volumePath(stack.topo, 'd0', 'a-on-c0'))).size, 256 * KiB);
  });

  step('volume.delete removes the file (A, on a c1 device); the name can be used again', async () => {
    const task = await runOk('A', { kind: 'volume.delete', storage_system_id: storageSystemId, device: 'd6', params: { name: 'src-copy' } });
    assert.deepEqual(task.result?.deleted, { device: 'd6', name: 'src-copy', size_bytes: 8 * MiB });
    assert.equal(await exists(volumePath(stack.topo, 'd6', 'src-copy')), false, 'the volume file is gone');
    assert.deepEqual(await volumesOnDisk('d6'), []);

    const again = await runOk('B', create('d6', 'src-copy', 1 * MiB));
    assert.equal((await stat(volumePath(stack.topo, 'd6', 'src-copy'))).size, 1 * MiB, 'a deleted name can be created again');
  });

  step('device.probe reports what is on disk (B on c0, A on c1)', async () => {
    for (const { server, device } of [
      { server: 'B' as const, device: 'd1' },
      { server: 'A' as const, device: 'd4' },
    ]) {
      const task = await runOk(server, { kind: 'device.probe', storage_system_id: storageSystemId, device, params: {} });
      const onDisk = await volumesOnDisk(device);
      const sizes = await Promise.all(onDisk.map(async (name) => (await stat(volumePath(stack.topo, device, name))).size));
      assert.ok(onDisk.length > 0, `${device} holds volumes to count`);
      assert.equal(task.result?.device?.id, device);
      assert.equal(task.result?.device?.state, 'available');
      assert.equal(task.result?.device?.capacity_bytes, deviceCapacity);
      assert.equal(task.result?.device?.volume_count, onDisk.length, `${device}: ${onDisk.join(', ')}`);
      assert.equal(task.result?.device?.used_bytes, sizes.reduce((sum, size) => sum + size, 0));
    }
  });

  step('device.format empties the volumes directory (A on c0, B on c1) and frees the names', async () => {
    await runOk('A', create('d1', 'extra', 1 * MiB));
    for (const { server, device } of [
      { server: 'A' as const, device: 'd1' },
      { server: 'B' as const, device: 'd5' },
    ]) {
      const before = await volumesOnDisk(device);
      assert.ok(before.length > 0, `${device} holds volumes before the format`);
      const task = await runOk(server, { kind: 'device.format', storage_system_id: storageSystemId, device, params: {} });
      assert.equal(task.result?.volumes_removed, before.length, `${device} held ${before.join(', ')}`);
      assert.deepEqual(await volumesOnDisk(device), [], `${device}/volumes is empty`);
    }
    // The catalog forgot the formatted device's volumes.
    await runOk('B', create('d1', 'src', 1 * MiB));
    assert.equal((await stat(volumePath(stack.topo, 'd1', 'src'))).size, 1 * MiB);
  });

  step('capacity: a create beyond the free space fails without a file; a taken name is refused with 409', async () => {
    const device = smallDevice;
    await runOk('A', create(device, 'fill', 3 * MiB));

    // 2 MiB fits the 4 MiB device but not the 1 MiB left: accepted, then failed by the driver.
    const accepted = await submitTask(serverUrl('B'), create(device, 'too-big', 2 * MiB));
    const failed = await waitForTask(serverUrl('B'), accepted.id);
    assert.equal(failed.state, 'failed', `the create ended ${failed.state}: ${JSON.stringify(failed.result)}`);
    assert.equal(failed.error?.type, problemType('insufficient-capacity'), JSON.stringify(failed.error));
    assert.equal(failed.result, null);
    assertRoutedTo(failed, 'B', homeOf(stack.topo, device));
    assert.equal(await exists(volumePath(stack.topo, device, 'too-big')), false, 'no file for the failed create');
    assert.deepEqual(await volumesOnDisk(device), ['fill']);

    // More than the device holds at all is refused before it is queued.
    assertProblem(await postTask(serverUrl('A'), create(device, 'huge', smallCapacity + 1)), 422, 'insufficient-capacity');

    // The name is taken: 409 at submission, through either server.
    for (const server of serverIds) {
      const problem = assertProblem(await postTask(serverUrl(server), create(device, 'fill', 1 * MiB)), 409, 'volume-exists');
      assert.ok(problem.request_id, 'a problem names the request');
    }
    assert.equal((await stat(volumePath(stack.topo, device, 'fill'))).size, 3 * MiB, 'the existing volume is untouched');

    // The failed create released its name.
    await runOk('A', create(device, 'too-big', 512 * KiB));
  });

  step('idempotency: the same key and body on the other server answer the same task; another body is 422', async () => {
    const key = `e2e-idem-${randomUUID()}`;
    const body = create('d7', 'idem-vol', 1 * MiB);
    const first = await postTask(serverUrl('A'), body, { idempotencyKey: key });
    assert.equal(first.status, 202, first.text);
    const original = first.body as Task;
    assert.equal(original.server_id, 'A');

    // The same body with its keys in another order is the same request.
    const reordered = { params: { size_bytes: 1 * MiB, name: 'idem-vol' }, device: 'd7', storage_system_id: storageSystemId, kind: 'volume.create' };
    for (const replayBody of [body, reordered]) {
      const replay = await postTask(serverUrl('B'), replayBody, { idempotencyKey: key });
      assert.equal(replay.status, 202, replay.text);
      assert.equal((replay.body as Task).id, original.id, 'server B answers the task server A accepted');
      assert.equal(replay.headers['idempotent-replayed'], 'true');
      assert.equal(replay.headers.location, `/v1/tasks/${original.id}`);
    }

    for (const server of serverIds) {
      assertProblem(await postTask(serverUrl(server), create('d7', 'idem-vol', 2 * MiB), { idempotencyKey: key }), 422, 'idempotency-key-reused');
    }

    const done = await waitForTask(serverUrl('B'), original.id);
    assertSucceeded(done);
    assertRoutedTo(done, 'A', 'c1');
    const rows = await stack.db('tasks').where({ idempotency_key: key }).count<{ count: string }[]>({ count: '*' });
    assert.equal(Number(rows[0]?.count), 1, 'one task for the key');
    assert.equal((await stat(volumePath(stack.topo, 'd7', 'idem-vol'))).size, 1 * MiB);
  });

  step('request id: x-request-id follows the task into the logs of server A, its agent and the driver', async () => {
    const requestId = 'e2e-trace-1';
    const accepted = await postTask(serverUrl('A'), create('d2', 'traced', 1 * MiB), { requestId });
    assert.equal(accepted.status, 202, accepted.text);
    assert.equal(accepted.headers['x-request-id'], requestId);
    const task = await waitForTask(serverUrl('A'), (accepted.body as Task).id);
    assertSucceeded(task);
    assertRoutedTo(task, 'A', 'c0');

    const topology = stack.topo;
    const agentService = `agent-${storageSystemId}-c0-A`;
    const sources = [
      { what: 'server A', file: topology.servers.A.logFile, service: 'server-A' },
      { what: `the agent that ran it (${agentService}, in the cluster-manager's log)`, file: topology.managers.c0.logFile, service: agentService },
      { what: 'the driver of c0', file: topology.drivers.c0.logFile, service: `driver` },
    ];
    for (const source of sources) {
      // Log lines may reach the file a moment after the task is reported.
      const found = await waitForLogLine(source.file, (line) => line.request_id === requestId && String(line.service ?? '').startsWith(source.service));
      assert.ok(found, `${source.what} logged nothing with request_id ${requestId} (${source.file})`);
    }
    const driverLines = (await readLog(topology.drivers.c0.logFile)).filter((line) => line.request_id === requestId);
    assert.ok(
      driverLines.some((line) => line.msg === 'execution' && line.task_id === task.id),
      `the driver's execution line names the task and the request: ${driverLines.map((line) => line.text).join('\n')}`,
    );
  });

  step('pagination: GET /v1/tasks with limit=2 returns every task exactly once, newest first', async (t) => {
    // A burst of concurrent submissions through both servers, so that tasks share timestamps closely.
    const burst = await Promise.all(
      Array.from({ length: 24 }, (_, index) =>
        submitTask(serverUrl(serverIds[index % 2]!), { kind: 'device.probe', storage_system_id: storageSystemId, device: `d${index % 8}`, params: {} }),
      ),
    );
    for (const task of burst) assertSucceeded(await waitForTask(serverUrl('A'), task.id));
    const { rows } = await stack.db.raw<{ rows: { pairs: string }[] }>(
      `select count(*) as pairs from tasks a join tasks b on a.id < b.id and date_trunc('milliseconds', a.created_at) = date_trunc('milliseconds', b.created_at)`,
    );
    t.diagnostic(`${rows[0]?.pairs ?? 0} pair(s) of tasks share a creation millisecond`);

    const stored = await stack.db<{ id: string }>('tasks').select('id');
    const expected = stored.map((row) => row.id).sort();
    assert.ok(expected.length >= 40, `there are ${expected.length} tasks to page through`);

    for (const limit of [2, 1]) {
      const { ids, items, pages } = await listAllTasks([serverUrl('A'), serverUrl('B')], limit);
      const duplicates = ids.filter((id, index) => ids.indexOf(id) !== index);
      const missing = expected.filter((id) => !ids.includes(id));
      assert.deepEqual(duplicates, [], `limit=${limit}: tasks listed twice`);
      assert.deepEqual(missing, [], `limit=${limit}: tasks never listed over ${pages} pages (${await sameMillisecondReport(missing)})`);
      assert.equal(ids.length, expected.length);
      for (let index = 1; index < items.length; index += 1) {
        assert.ok(items[index - 1]!.created_at >= items[index]!.created_at, `limit=${limit}: newest first at position ${index}`);
      }
    }
  });

  step('pagination: tasks created in the same millisecond are each listed once', async () => {
    // Two servers commit tasks concurrently, so creation times can share a millisecond (Postgres
    // keeps microseconds). Such tasks are written here directly, 100-900 µs apart, as the newest.
    const seeded = ['s1', 's2', 's3', 's4'].map((suffix, index) => ({
      id: `tsk_e2e_same_ms_${suffix}`,
      micros: 900 - index * 250,
    }));
    await stack.db.raw(
      `insert into tasks (id, idempotency_key, request_hash, kind, storage_system_id, device, params, state, attempt, server_id, created_at, updated_at, finished_at)
       select s.id, 'e2e-seeded-' || s.id, 'seeded', 'device.probe', ?, 'd0', '{}'::jsonb, 'cancelled', 0, 'A',
              date_trunc('milliseconds', now()) + interval '10 seconds' + make_interval(secs => s.micros / 1000000.0),
              now(), now()
         from jsonb_to_recordset(?::jsonb) as s(id text, micros int)`,
      [storageSystemId, JSON.stringify(seeded)],
    );
    const expected = (await stack.db<{ id: string }>('tasks').select('id')).map((row) => row.id).sort();
    for (const limit of [2, 1]) {
      const { ids, pages } = await listAllTasks([serverUrl('A'), serverUrl('B')], limit);
      assert.deepEqual(ids.slice(0, 4), seeded.map((task) => task.id), `limit=${limit}: the seeded tasks come first, newest first`);
      const missing = expected.filter((id) => !ids.includes(id));
      assert.deepEqual(missing, [], `limit=${limit}: tasks never listed over ${pages} pages (${await sameMillisecondReport(missing)})`);
      assert.equal(ids.length, expected.length, `limit=${limit}: every task once`);
    }
  });

  step('SIGTERM stops the launcher with exit code 0 and every process of the run', async () => {
    const report = await stack.shutdown();
    assert.ok(report.checked.processes >= 11, `the launcher, 2 servers, 2 drivers, 2 cluster-managers and 4 agents were checked (${report.checked.processes})`);
    assert.ok(report.checked.ports >= 10, `the 6 service ports and 4 agent ports were checked (${report.checked.ports})`);
    assert.deepEqual(
      {
        exitCode: report.exitCode,
        signal: report.signal,
        printedStopped: stack.launcher?.output().includes(stoppedLine) ?? false,
        survivors: report.survivors.map((survivor) => `${survivor.pid} ${survivor.what}: ${survivor.command}`),
        openPorts: report.openPorts.map((entry) => `${entry.port} (${entry.what})`),
      },
      { exitCode: 0, signal: null, printedStopped: true, survivors: [], openPorts: [] },
      'after SIGTERM the launcher exits 0, says it stopped, and leaves no process or port of the run behind',
    );
  });
});

/** Polls a log file (up to 5 s) for a line. */
async function waitForLogLine(file: string, match: (line: Awaited<ReturnType<typeof readLog>>[number]) => boolean): Promise<boolean> {
  const deadline = Date.now() + 5_000;
  do {
    if ((await readLog(file)).some(match)) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  } while (Date.now() < deadline);
  return false;
}

/** For a pagination failure: the missing tasks' creation times next to those of tasks in the same millisecond. */
async function sameMillisecondReport(missing: string[]): Promise<string> {
  if (missing.length === 0) return 'none';
  const { rows } = await stack.db.raw<{ rows: { id: string; created_at_us: string; same_ms: string }[] }>(
    `select t.id, to_char(t.created_at at time zone 'UTC', 'HH24:MI:SS.US') as created_at_us,
            (select count(*) from tasks o where o.id <> t.id and date_trunc('milliseconds', o.created_at) = date_trunc('milliseconds', t.created_at)) as same_ms
       from tasks t where t.id = any(?)`,
    [missing],
  );
  return rows.map((row) => `${row.id} created ${row.created_at_us} with ${row.same_ms} other task(s) in the same millisecond`).join('; ');
}
