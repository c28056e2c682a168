import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { loadContract, type AgentApi, type ClusterManagerApi, type ContractName, type DriverApi, type ServerApi } from '@duplex/contracts';
import type { MemoryDeviceStore } from '@duplex/driver';
import { bearer, createTestDatabase, EventStreamClient, freePort, injectWithToken, parsePrometheusText, waitFor, type TestDatabase } from '@duplex/testkit';
import { ContractRecorder } from './support/contract-recorder.ts';
import { agentApp, clusterManagerApp, contractClusterToken, driverApp, GiB, listen, MiB, serverApp, type App, type InjectRequest, type InjectResponse } from './support/services.ts';

// Real responses, checked against the contracts. One deployment runs in this process: a
// driver, a server and a cluster-manager listening on loopback, the agent process the
// cluster-manager launches for server A in cluster c0, and an in-process agent for cluster
// c1. Every answer of these apps, to the test or to each other, is checked; each test also
// asserts the outcome it drives.

type Task = ServerApi.components['schemas']['Task'];
type TaskRequest = ServerApi.components['schemas']['TaskRequest'];
type TaskList = ServerApi.components['schemas']['TaskList'];
type Agent = ServerApi.components['schemas']['Agent'];
type AgentList = ServerApi.components['schemas']['AgentList'];
type AgentRegistration = ServerApi.components['schemas']['AgentRegistration'];
type AgentRegistrationRequest = ServerApi.components['schemas']['AgentRegistrationRequest'];
type InventoryReport = ServerApi.components['schemas']['InventoryReport'];
type Problem = ServerApi.components['schemas']['Problem'];
type DeviceList = ServerApi.components['schemas']['DeviceList'];
type ClusterList = ServerApi.components['schemas']['ClusterList'];
type StorageSystemList = ServerApi.components['schemas']['StorageSystemList'];
type FailbackResult = ServerApi.components['schemas']['FailbackResult'];
type AgentStatus = AgentApi.components['schemas']['AgentStatus'];
type TaskDispatch = AgentApi.components['schemas']['TaskDispatch'];
type Inventory = ClusterManagerApi.components['schemas']['Inventory'];
type AgentProcessList = ClusterManagerApi.components['schemas']['AgentProcessList'];
type Event = ServerApi.components['schemas']['Event'];
type EventList = ServerApi.components['schemas']['EventList'];
type ExecutionRequest = DriverApi.components['schemas']['ExecutionRequest'];
type ExecutionResult = DriverApi.components['schemas']['ExecutionResult'];
type DeviceReport = DriverApi.components['schemas']['DeviceReport'];
type DeviceWatch = DriverApi.components['schemas']['DeviceWatch'];
type Device = ServerApi.components['schemas']['Device'];

// The agent process the cluster-manager launches logs to this test's output; only errors are wanted.
process.env.LOG_LEVEL = 'error';

const recorders = {
  server: new ContractRecorder('server'),
  agent: new ContractRecorder('agent'),
  'cluster-manager': new ContractRecorder('cluster-manager'),
  driver: new ContractRecorder('driver'),
} satisfies Record<ContractName, ContractRecorder>;

let tdb: TestDatabase;
let clusterDriver: { app: App; store: MemoryDeviceStore; url: string };
let server: { app: App; url: string };
let clusterManager: { app: App; url: string };
let agent: { app: App; url: string | undefined };
const closing: App[] = [];

const c0AgentId = 'A:ss1:c0:ss1-c0-A';
const c1AgentId = 'A:ss1:c1:ss1-c1-A';

before(async () => {
  tdb = await createTestDatabase();

  // The cluster's devices: d0 and d1 live in c0, d4 in c1; both clusters reach all of them.
  const built = await driverApp([
    { id: 'd0', home_cluster: 'c0', capacity_bytes: GiB },
    { id: 'd1', home_cluster: 'c0', capacity_bytes: GiB },
    { id: 'd4', home_cluster: 'c1', capacity_bytes: GiB },
  ]);
  recorders.driver.observe(built.app);
  closing.push(built.app);
  clusterDriver = { ...built, url: await listen(built.app) };

  const serverInstance = await serverApp(tdb.db, tdb.url);
  recorders.server.observe(serverInstance);
  closing.push(serverInstance);
  server = { app: serverInstance, url: await listen(serverInstance) };

  const port = await freePort();
  const managerInstance = await clusterManagerApp(tdb.db, tdb.url, {
    CM_PORT: String(port),
    CM_PUBLIC_URL: `http://127.0.0.1:${port}`,
    DRIVER_URL: clusterDriver.url,
    CM_SERVERS: `A=${server.url}`,
  });
  recorders['cluster-manager'].observe(managerInstance);
  closing.push(managerInstance);
  clusterManager = { app: managerInstance, url: await listen(managerInstance, port) };

  const agentInstance = await agentApp({
    SERVER_URL: server.url,
    DRIVER_URL: clusterDriver.url,
    // No cluster-manager runs for c1; the test reports c1's inventory itself.
    CLUSTER_MANAGER_URL: `http://127.0.0.1:${await freePort()}`,
  });
  recorders.agent.observe(agentInstance);
  closing.push(agentInstance);
  agent = { app: agentInstance, url: undefined };
});

after(async () => {
  // Agents first (the cluster-manager stops the process it launched), then what they call.
  for (const app of [...closing].reverse()) await app.close();
  await tdb.drop();
});

const call = (name: ContractName, app: () => App) => (operationId: string, status: number, request: InjectRequest) =>
  recorders[name].call(app(), operationId, status, request);
const onServer = call('server', () => server.app);
const onAgent = call('agent', () => agent.app);
const onManager = call('cluster-manager', () => clusterManager.app);

/**
 * Credentials to speak for an agent that a real process registered (over a socket, so its own
 * credential never reached this test): one more credential in the server's registry, beside the
 * process's own, which keeps working.
 */
function speakFor(agentId: string): { authorization: string } {
  const secret = `dpa_contract-test-${agentId}`;
  const held = server.app.duplex.agents.get(agentId)?.credentials ?? [];
  server.app.duplex.agents.setCredentials(agentId, [...held, { sha256: createHash('sha256').update(secret).digest('hex'), expiresAt: Date.now() + 3_600_000 }]);
  return { authorization: `Bearer ${secret}` };
}

function assertProblem(response: InjectResponse, code: string): Problem {
  const problem = response.json<Problem>();
  assert.equal(problem.type, `urn:duplex:problem:${code}`, response.body);
  assert.equal(problem.status, response.statusCode);
  assert.equal(problem.request_id, response.headers['x-request-id']);
  return problem;
}

/** A metric of each service's own, declared on /metrics from the start. */
const ownMetric: Record<ContractName, string> = {
  server: 'duplex_tasks',
  agent: 'duplex_agent_tasks_total',
  'cluster-manager': 'duplex_inventory_version',
  driver: 'duplex_driver_executions_total',
};

/** The operational routes every service has: health, metrics, the document, and a refused query. */
async function checkOperationalRoutes(name: ContractName, app: App): Promise<void> {
  const recorder = recorders[name];
  const metrics = parsePrometheusText((await recorder.call(app, 'getMetrics', 200, { method: 'GET', url: '/metrics' })).body);
  assert.equal(metrics.families.get('nodejs_eventloop_lag_seconds')?.type, 'gauge');
  assert.equal(metrics.families.get('duplex_http_request_duration_seconds')?.type, 'histogram');
  assert.ok(metrics.families.has(ownMetric[name]), `${name} declares ${ownMetric[name]}`);
  const health = await recorder.call(app, 'getHealth', 200, { method: 'GET', url: '/healthz' });
  assert.deepEqual(health.json(), { status: 'ok' });
  const document = await recorder.call(app, 'getOpenApiDocument', 200, { method: 'GET', url: '/openapi.json' });
  assert.deepEqual(document.json(), loadContract(name));
  assertProblem(await recorder.call(app, 'getHealth', 400, { method: 'GET', url: '/healthz?verbose=1' }), 'validation-failed');
  assertProblem(await recorder.call(app, 'getOpenApiDocument', 400, { method: 'GET', url: '/openapi.json?format=yaml' }), 'validation-failed');
}

describe('driver', () => {
  // A driver of its own, so fencing tests cannot disturb the deployment's devices.
  let driver: App;
  let store: MemoryDeviceStore;
  let taskCounter = 0;
  const onDriver = (operationId: string, status: number, request: InjectRequest) => recorders.driver.call(driver, operationId, status, request);

  before(async () => {
    const built = await driverApp([
      { id: 'd0', home_cluster: 'c0', capacity_bytes: GiB },
      { id: 'd1', home_cluster: 'c1', capacity_bytes: GiB },
      { id: 'd2', home_cluster: 'c0', capacity_bytes: MiB },
    ]);
    driver = built.app;
    store = built.store;
    recorders.driver.observe(driver);
    closing.push(driver);
  });

  function execution(kind: ExecutionRequest['kind'], params: ExecutionRequest['params'], overrides: Partial<ExecutionRequest> = {}): ExecutionRequest {
    taskCounter += 1;
    return { task_id: `tsk_contract_${taskCounter}`, kind, device: 'd0', params, attempt: 1, fencing: { token: 1, epoch: 1 }, ...overrides };
  }

  async function execute(body: ExecutionRequest | object, status = 200): Promise<InjectResponse> {
    return onDriver('execute', status, { method: 'POST', url: '/v1/executions', payload: body });
  }

  async function succeeded(body: ExecutionRequest): Promise<ExecutionResult> {
    const result = (await execute(body)).json<ExecutionResult>();
    assert.equal(result.outcome, 'succeeded', JSON.stringify(result));
    assert.equal(result.task_id, body.task_id);
    return result;
  }

  async function failed(body: ExecutionRequest, code: string): Promise<ExecutionResult> {
    const result = (await execute(body)).json<ExecutionResult>();
    assert.equal(result.outcome, 'failed', JSON.stringify(result));
    assert.equal(result.error?.type, `urn:duplex:problem:${code}`);
    return result;
  }

  it('answers health, readiness and its document', async () => {
    await checkOperationalRoutes('driver', driver);
    const ready = await onDriver('getReadiness', 200, { method: 'GET', url: '/readyz' });
    assert.deepEqual(ready.json(), { status: 'ready', checks: { devices: 'ok' } });
  });

  it('discovers and probes devices', async () => {
    const { items } = (await onDriver('discoverDevices', 200, { method: 'GET', url: '/v1/devices' })).json<{ items: DeviceReport[] }>();
    assert.deepEqual(items.map((device) => [device.id, device.home_cluster, device.state]), [['d0', 'c0', 'available'], ['d1', 'c1', 'available'], ['d2', 'c0', 'available']]);
    const probed = (await onDriver('probeDevice', 200, { method: 'GET', url: '/v1/devices/d2' })).json<DeviceReport>();
    assert.equal(probed.capacity_bytes, MiB);
    assertProblem(await onDriver('probeDevice', 404, { method: 'GET', url: '/v1/devices/d9' }), 'device-not-found');
    assertProblem(await onDriver('probeDevice', 400, { method: 'GET', url: '/v1/devices/NOT_AN_ID' }), 'validation-failed');
  });

  it('executes every kind', async () => {
    const created = await succeeded(execution('volume.create', { name: 'vol1', size_bytes: MiB }));
    assert.deepEqual(created.result?.volume, { device: 'd0', name: 'vol1', size_bytes: MiB });
    assert.equal(created.replayed, false);
    const resized = await succeeded(execution('volume.resize', { name: 'vol1', size_bytes: 2 * MiB }));
    assert.equal(resized.result?.volume?.size_bytes, 2 * MiB);
    const copied = await succeeded(execution('volume.copy', { name: 'vol1', target_name: 'vol1-copy' }));
    assert.deepEqual(copied.result?.volume, { device: 'd0', name: 'vol1-copy', size_bytes: 2 * MiB });
    const across = await succeeded(execution('volume.copy', { name: 'vol1', target_device: 'd1', target_name: 'vol1-there' }));
    assert.equal(across.result?.volume?.device, 'd1');
    const deleted = await succeeded(execution('volume.delete', { name: 'vol1-copy' }));
    assert.equal(deleted.result?.deleted?.name, 'vol1-copy');
    const probe = await succeeded(execution('device.probe', {}));
    assert.equal(probe.result?.device?.volume_count, 1);
    const formatted = await succeeded(execution('device.format', {}));
    assert.equal(formatted.result?.volumes_removed, 1);
  });

  it('runs a batch of executions in the order given', async () => {
    const first = execution('volume.create', { name: 'batched', size_bytes: MiB });
    const second = execution('volume.resize', { name: 'batched', size_bytes: 2 * MiB });
    const response = await onDriver('executeBatch', 200, { method: 'POST', url: '/v1/execution-batches', payload: { executions: [{ execution: first }, { execution: second }] } });
    const { results } = response.json<{ results: { status: number; result?: ExecutionResult }[] }>();
    assert.deepEqual(
      results.map((item) => [item.status, item.result?.task_id, item.result?.outcome]),
      [
        [200, first.task_id, 'succeeded'],
        [200, second.task_id, 'succeeded'],
      ],
    );
    assert.equal(results[1]?.result?.result?.volume?.size_bytes, 2 * MiB);
  });

  it('replays an execution it already ran', async () => {
    const body = execution('volume.create', { name: 'again', size_bytes: MiB });
    await succeeded(body);
    const replay = await succeeded(body);
    assert.equal(replay.replayed, true);
  });

  it('reports device-level failures as outcomes', async () => {
    await failed(execution('volume.create', { name: 'big', size_bytes: 2 * MiB }, { device: 'd2' }), 'insufficient-capacity');
    await failed(execution('volume.delete', { name: 'missing' }), 'volume-not-found');
    store.setFault('d2', 'the device does not answer');
    try {
      await failed(execution('volume.create', { name: 'v', size_bytes: 1 }, { device: 'd2' }), 'device-unavailable');
      const probe = await succeeded(execution('device.probe', {}, { device: 'd2' }));
      assert.equal(probe.result?.device?.state, 'unavailable');
      assert.equal(probe.result?.device?.reason, 'the device does not answer');
      const device = (await onDriver('probeDevice', 200, { method: 'GET', url: '/v1/devices/d2' })).json<DeviceReport>();
      assert.equal(device.state, 'unavailable');
    } finally {
      store.setFault('d2', null);
    }
  });

  it('refuses what it will not run', async () => {
    const fenced = execution('volume.create', { name: 'fenced', size_bytes: 1 }, { device: 'd1', fencing: { token: 10, epoch: 3 } });
    await succeeded(fenced);
    assertProblem(await execute(execution('device.probe', {}, { device: 'd1', fencing: { token: 1, epoch: 2 } }), 409), 'stale-epoch');
    assertProblem(await execute({ ...fenced, fencing: { token: 9, epoch: 3 } }, 409), 'stale-fencing-token');
    assertProblem(await execute(execution('device.probe', {}, { device: 'd9' }), 404), 'device-not-found');
    assertProblem(await execute(execution('volume.create', { name: '../escape', size_bytes: 1 }), 400), 'invalid-name');
    assertProblem(await execute({ ...execution('device.probe', {}), kind: 'volume.explode' }, 400), 'validation-failed');
    const malformed = await onDriver('execute', 400, { method: 'POST', url: '/v1/executions', headers: { 'content-type': 'application/json' }, payload: '{"task_id":' });
    assertProblem(malformed, 'malformed-json');
    const text = await onDriver('execute', 415, { method: 'POST', url: '/v1/executions', headers: { 'content-type': 'text/plain' }, payload: 'probe d0' });
    assertProblem(text, 'unsupported-media-type');
  });

  it('creates devices and numbers each probe that finds a change', async () => {
    const created = await onDriver('provisionDevice', 201, { method: 'POST', url: '/v1/devices', payload: { id: 'd3', home_cluster: 'c1', capacity_bytes: MiB } });
    assert.deepEqual([created.json<DeviceReport>().id, created.json<DeviceReport>().state], ['d3', 'available']);
    assertProblem(await onDriver('provisionDevice', 409, { method: 'POST', url: '/v1/devices', payload: { id: 'd3', home_cluster: 'c1', capacity_bytes: MiB } }), 'device-exists');
    assertProblem(await onDriver('provisionDevice', 400, { method: 'POST', url: '/v1/devices', payload: { id: 'D3', home_cluster: 'c1', capacity_bytes: MiB } }), 'validation-failed');

    const first = (await onDriver('watchDevices', 200, { method: 'GET', url: '/v1/device-changes?wait_ms=0' })).json<DeviceWatch>();
    assert.ok(first.devices.some((status) => status.id === 'd3'));
    // Nothing changes: the long poll answers with the same generation when its wait is over.
    const quiet = (await onDriver('watchDevices', 200, { method: 'GET', url: `/v1/device-changes?after=${first.generation}&instance_id=${first.instance_id}&wait_ms=50` })).json<DeviceWatch>();
    assert.equal(quiet.generation, first.generation);
    const waiting = onDriver('watchDevices', 200, { method: 'GET', url: `/v1/device-changes?after=${first.generation}&instance_id=${first.instance_id}&wait_ms=10000` });
    store.setFault('d3', 'controller lost');
    await driver.deviceWatch.probe();
    const changed = (await waiting).json<DeviceWatch>();
    assert.equal(changed.generation, first.generation + 1);
    assert.deepEqual(changed.devices.find((status) => status.id === 'd3'), { id: 'd3', home_cluster: 'c1', capacity_bytes: MiB, state: 'unavailable', reason: 'controller lost' });
    // Another run of the driver (another instance id) answers at once.
    const other = (await onDriver('watchDevices', 200, { method: 'GET', url: `/v1/device-changes?after=${changed.generation}&instance_id=another&wait_ms=10000` })).json<DeviceWatch>();
    assert.equal(other.generation, changed.generation);
    assertProblem(await onDriver('watchDevices', 400, { method: 'GET', url: '/v1/device-changes?wait_ms=-1' }), 'validation-failed');
  });

  it('is not ready, and cannot discover, when its devices cannot be listed', async () => {
    const { buildApp, createBackend } = await import('@duplex/driver');
    const broken = injectWithToken(await buildApp({ backend: createBackend({ kind: 'file', deviceRoot: '/nonexistent/duplex-contract-test' }), clusterToken: contractClusterToken, logger: false }), contractClusterToken);
    recorders.driver.observe(broken);
    closing.push(broken);
    const ready = await recorders.driver.call(broken, 'getReadiness', 503, { method: 'GET', url: '/readyz' });
    assertProblem(ready, 'not-ready');
    assert.equal(ready.headers['retry-after'], '1');
    assertProblem(await recorders.driver.call(broken, 'discoverDevices', 503, { method: 'GET', url: '/v1/devices' }), 'not-ready');
  });
});

describe('cluster-manager', () => {
  it('answers health and its document', async () => {
    await checkOperationalRoutes('cluster-manager', clusterManager.app);
  });

  it('is not ready and has no inventory before it starts', async () => {
    const ready = await onManager('getReadiness', 503, { method: 'GET', url: '/readyz' });
    // 5xx details stay in the log, so the reason is not in the body.
    assertProblem(ready, 'not-ready');
    assert.equal(ready.headers['retry-after'], '1');
    assertProblem(await onManager('getInventory', 503, { method: 'GET', url: '/v1/inventory' }), 'not-ready');
    const agents = (await onManager('listAgentProcesses', 200, { method: 'GET', url: '/v1/agents' })).json<AgentProcessList>();
    assert.deepEqual(agents.items, []);
  });

  it('stores the inventory at start and launches one agent per configured server', async () => {
    await clusterManager.app.clusterManager.start();
    const ready = await onManager('getReadiness', 200, { method: 'GET', url: '/readyz' });
    assert.deepEqual(ready.json(), { status: 'ready', checks: { database: 'ok', inventory: 'ok' } });
    const inventory = (await onManager('getInventory', 200, { method: 'GET', url: '/v1/inventory' })).json<Inventory>();
    assert.equal(inventory.version, 1);
    assert.deepEqual(inventory.devices.map((device) => [device.id, device.owner_cluster, device.state]), [['d0', 'c0', 'available'], ['d1', 'c0', 'available']]);
    const agents = (await onManager('listAgentProcesses', 200, { method: 'GET', url: '/v1/agents' })).json<AgentProcessList>();
    assert.deepEqual(agents.items.map((process) => [process.name, process.server_id, process.state]), [['ss1-c0-A', 'A', 'running']]);
    assert.equal(typeof agents.items[0]?.pid, 'number');
    assertProblem(await onManager('getInventory', 400, { method: 'GET', url: '/v1/inventory?version=1' }), 'validation-failed');
  });

  it('has its agent register with the server and report the inventory', async () => {
    await waitFor('the c0 agent to report its inventory', async () => {
      const response = await server.app.inject({ method: 'GET', url: '/v1/storage-systems/ss1/clusters' });
      return response.statusCode === 200 && response.json<ClusterList>().items.some((cluster) => cluster.id === 'c0') ? true : undefined;
    });
    const registered = (await onServer('getAgent', 200, { method: 'GET', url: `/v1/agents/${c0AgentId}` })).json<Agent>();
    assert.equal(registered.state, 'active');
  });
  it('rescans on request and fails back only a recovering cluster', async () => {
    const refreshed = (await onManager('refreshInventory', 200, { method: 'POST', url: '/v1/inventory:refresh' })).json<Inventory>();
    assert.equal(refreshed.version, 1);
    assertProblem(await onManager('failBack', 409, { method: 'POST', url: '/v1/failback' }), 'cluster-not-recovering');
    assertProblem(await onServer('failBackCluster', 409, { method: 'POST', url: '/v1/storage-systems/ss1/clusters/c0:failback' }), 'cluster-not-recovering');
    assertProblem(await onServer('failBackCluster', 404, { method: 'POST', url: '/v1/storage-systems/ss1/clusters/c9:failback' }), 'cluster-not-found');
    const markFailed = async () => {
      // As the peer does when it takes the cluster over; the cluster-manager then sees it is back.
      await tdb.db('clusters').where({ storage_system_id: 'ss1', id: 'c0' }).update({ state: 'failed' });
      await waitFor('the cluster to be recovering', async () => (clusterManager.app.clusterManager.state === 'recovering' ? true : undefined));
    };
    await markFailed();
    const result = (await onServer('failBackCluster', 200, { method: 'POST', url: '/v1/storage-systems/ss1/clusters/c0:failback' })).json<FailbackResult>();
    assert.equal(result.state, 'online');
    assert.equal(result.epoch, 2);
    assert.deepEqual(result.devices, ['d0', 'd1']);
    await markFailed();
    const inventory = (await onManager('failBack', 200, { method: 'POST', url: '/v1/failback' })).json<Inventory>();
    assert.equal(inventory.cluster_state, 'online');
    assert.equal(inventory.epoch, 3);
  });
});

describe('agent', () => {
  const dispatch = (overrides: Partial<TaskDispatch> = {}): TaskDispatch => ({
    task_id: 'tsk_agent_contract_1',
    kind: 'device.probe',
    device: 'd4',
    params: {},
    attempt: 1,
    fencing_token: 1,
    epoch: 1,
    request_id: 'req-contract',
    ...overrides,
  });

  it('answers health and its document', async () => {
    await checkOperationalRoutes('agent', agent.app);
  });

  it('is not ready and takes no tasks before it is registered', async () => {
    const status = (await onAgent('getAgentStatus', 200, { method: 'GET', url: '/v1/status' })).json<AgentStatus>();
    assert.equal(status.registered, false);
    assert.equal(status.agent_id, null);
    assert.equal(status.name, 'ss1-c1-A');
    const ready = await onAgent('getReadiness', 503, { method: 'GET', url: '/readyz' });
    assertProblem(ready, 'not-ready');
    assert.equal(ready.headers['retry-after'], '1');
    // No server has given it a credential yet, so no dispatch can carry one.
    const refused = await onAgent('acceptTasks', 401, { method: 'POST', url: '/v1/tasks', headers: bearer('dpa_not-issued-yet'), payload: { tasks: [dispatch()] } });
    assertProblem(refused, 'unauthenticated');
    assert.equal(refused.headers['www-authenticate'], 'Bearer realm="duplex"');
    const change = await onAgent('notifyInventoryChange', 202, { method: 'POST', url: '/v1/inventory-changes', payload: { version: 2 } });
    assert.deepEqual(change.json(), { version: 2 });
  });

  it('refuses malformed requests', async () => {
    assertProblem(await onAgent('notifyInventoryChange', 400, { method: 'POST', url: '/v1/inventory-changes', payload: { version: 0 } }), 'validation-failed');
    assertProblem(await onAgent('getAgentStatus', 400, { method: 'GET', url: '/v1/status?full=1' }), 'validation-failed');
  });

  it('registers with its server, then is ready and takes tasks', async () => {
    agent.url = await listen(agent.app);
    agent.app.agent.start(agent.url);
    const status = await waitFor('the c1 agent to register', async () => {
      const body = (await agent.app.inject({ method: 'GET', url: '/v1/status' })).json<AgentStatus>();
      return body.registered ? body : undefined;
    });
    assert.equal(status.agent_id, c1AgentId);
    const ready = await onAgent('getReadiness', 200, { method: 'GET', url: '/readyz' });
    assert.deepEqual(ready.json(), { status: 'ready', checks: { registration: 'ok', lease: 'ok', driver: 'ok' } });
    // Its server dispatches with the agent's credential; so does this test, in the server's place.
    const asServer = bearer(agent.app.agent.link!.registration!.credential);
    assertProblem(await onAgent('acceptTasks', 400, { method: 'POST', url: '/v1/tasks', headers: asServer, payload: { tasks: [] } }), 'validation-failed');
    assertProblem(
      await onAgent('acceptTasks', 415, { method: 'POST', url: '/v1/tasks', headers: { ...asServer, 'content-type': 'text/plain' }, payload: 'tasks' }),
      'unsupported-media-type',
    );
    agent.app.agent.fenced = true;
    const fenced = await onAgent('acceptTasks', 503, { method: 'POST', url: '/v1/tasks', headers: asServer, payload: { tasks: [dispatch()] } });
    assertProblem(fenced, 'fenced');
    assert.equal(fenced.headers['retry-after'], '1');
    agent.app.agent.fenced = false;
    const taken = await onAgent('acceptTasks', 202, { method: 'POST', url: '/v1/tasks', headers: asServer, payload: { tasks: [dispatch()] } });
    assert.deepEqual(taken.json(), { accepted: 1, duplicates: 0 });
    // The attempt runs through the driver and its report reaches the server, which does not know the task.
    await waitFor('the agent to run the dispatched attempt', async () => {
      const body = (await agent.app.inject({ method: 'GET', url: '/v1/status' })).json<AgentStatus>();
      return body.tasks_in_hand === 0 && body.reports_pending === 0 ? true : undefined;
    });
    assert.ok(recorders.driver.exchanges.some((exchange) => exchange.operationId === 'execute' && exchange.payload?.includes('tsk_agent_contract_1')));
    assert.ok(recorders.server.exchanges.some((exchange) => exchange.operationId === 'reportTaskStates' && exchange.payload?.includes('tsk_agent_contract_1')));
  });
});

describe('server', () => {
  let keyCounter = 0;
  const newKey = (): string => `contract-${process.pid}-${++keyCounter}`;
  const fakeAgent = (overrides: Partial<AgentRegistrationRequest> = {}): AgentRegistrationRequest => ({
    name: 'ss9-c0-A',
    server_id: 'A',
    storage_system_id: 'ss9',
    cluster_id: 'c0',
    url: 'http://127.0.0.1:9',
    pid: 4242,
    started_at: '2026-11-25T10:00:00Z',
    ...overrides,
  });
  const c1Inventory = (overrides: Partial<InventoryReport> = {}): InventoryReport => ({
    storage_system_id: 'ss1',
    cluster_id: 'c1',
    version: 1,
    cluster_state: 'online',
    epoch: 1,
    recorded_at: '2026-11-25T10:00:00Z',
    devices: [{ id: 'd4', home_cluster: 'c1', owner_cluster: 'c1', capacity_bytes: GiB, used_bytes: 0, volume_count: 0, state: 'available', reason: null, epoch: 1 }],
    ...overrides,
  });

  async function submit(body: TaskRequest | object, status: number, key: string = newKey()): Promise<InjectResponse> {
    return onServer('submitTask', status, { method: 'POST', url: '/v1/tasks', headers: { 'idempotency-key': key }, payload: body });
  }

  async function accepted(body: TaskRequest, key?: string): Promise<Task> {
    const response = await submit(body, 202, key);
    const task = response.json<Task>();
    assert.equal(response.headers.location, `/v1/tasks/${task.id}`);
    return task;
  }

  /** Waits until the task is final, then fetches it once more through the contract check. */
  async function settled(id: string, state: 'succeeded' | 'failed'): Promise<Task> {
    await waitFor(`task ${id} to finish`, async () => {
      const task = (await server.app.inject({ method: 'GET', url: `/v1/tasks/${id}` })).json<Task>();
      return task.state === 'succeeded' || task.state === 'failed' ? true : undefined;
    });
    const task = (await onServer('getTask', 200, { method: 'GET', url: `/v1/tasks/${id}` })).json<Task>();
    assert.equal(task.state, state, JSON.stringify(task));
    return task;
  }

  it('answers health, readiness and its document', async () => {
    await checkOperationalRoutes('server', server.app);
    const ready = await onServer('getReadiness', 200, { method: 'GET', url: '/readyz' });
    assert.deepEqual(ready.json(), { status: 'ready', checks: { database: 'ok', lease: 'ok' } });
  });

  it('is not ready without its lease', async () => {
    const serverB = await serverApp(tdb.db, tdb.url, { SERVER_ID: 'B', SERVER_LEASE_TTL_MS: '600000' });
    recorders.server.observe(serverB);
    closing.push(serverB);
    await serverB.ready();
    serverB.duplex.lease.expiresAt = 0;
    const ready = await recorders.server.call(serverB, 'getReadiness', 503, { method: 'GET', url: '/readyz' });
    assertProblem(ready, 'not-ready');
    assert.equal(ready.headers['retry-after'], '1');
  });

  it('registers agents, renews their leases and lists them', async () => {
    const first = await onServer('registerAgent', 201, { method: 'POST', url: '/v1/agents', payload: fakeAgent() });
    const registration = first.json<AgentRegistration>();
    assert.equal(registration.id, 'A:ss9:c0:ss9-c0-A');
    assert.equal(registration.incarnation, 1);
    const again = (await onServer('registerAgent', 200, { method: 'POST', url: '/v1/agents', payload: fakeAgent() })).json<AgentRegistration>();
    assert.equal(again.incarnation, 1);
    const restarted = (await onServer('registerAgent', 200, { method: 'POST', url: '/v1/agents', payload: fakeAgent({ pid: 4343 }) })).json<AgentRegistration>();
    assert.equal(restarted.incarnation, 2);

    const url = `/v1/agents/${registration.id}/heartbeats`;
    const beat = await onServer('heartbeatAgent', 200, { method: 'POST', url, payload: { incarnation: 2 } });
    assert.equal(beat.json<{ inventory_version: number | null }>().inventory_version, null);
    assertProblem(await onServer('heartbeatAgent', 409, { method: 'POST', url, payload: { incarnation: 1 } }), 'stale-incarnation');
    assertProblem(await onServer('heartbeatAgent', 401, { method: 'POST', url: '/v1/agents/A:ss9:c0:nobody/heartbeats', payload: { incarnation: 1 } }), 'unauthenticated');
    assertProblem(await onServer('heartbeatAgent', 403, { method: 'POST', url: '/v1/agents/A:ss9:c0:nobody/heartbeats', headers: { authorization: `Bearer ${restarted.credential}` }, payload: { incarnation: 1 } }), 'forbidden');
    assertProblem(await onServer('heartbeatAgent', 400, { method: 'POST', url, payload: { incarnation: 0 } }), 'validation-failed');

    const all = (await onServer('listAgents', 200, { method: 'GET', url: '/v1/agents' })).json<AgentList>();
    assert.deepEqual(all.items.map((item) => item.id).sort(), [c0AgentId, c1AgentId, registration.id].sort());
    assert.equal(all.next_cursor, null);
    const firstPage = (await onServer('listAgents', 200, { method: 'GET', url: '/v1/agents?limit=2' })).json<AgentList>();
    assert.equal(firstPage.items.length, 2);
    assert.ok(firstPage.next_cursor);
    const secondPage = (await onServer('listAgents', 200, { method: 'GET', url: `/v1/agents?limit=2&cursor=${firstPage.next_cursor}` })).json<AgentList>();
    assert.equal(secondPage.items.length, 1);
    const inC1 = (await onServer('listAgents', 200, { method: 'GET', url: '/v1/agents?storage_system_id=ss1&cluster_id=c1&state=active' })).json<AgentList>();
    assert.deepEqual(inC1.items.map((item) => item.id), [c1AgentId]);
    assertProblem(await onServer('listAgents', 400, { method: 'GET', url: '/v1/agents?state=sleeping' }), 'validation-failed');
    assertProblem(await onServer('listAgents', 400, { method: 'GET', url: '/v1/agents?cursor=not-a-cursor' }), 'validation-failed');

    const one = (await onServer('getAgent', 200, { method: 'GET', url: `/v1/agents/${registration.id}` })).json<Agent>();
    assert.equal(one.pid, 4343);
    assertProblem(await onServer('getAgent', 404, { method: 'GET', url: '/v1/agents/A:ss9:c0:nobody' }), 'agent-not-found');
    assertProblem(await onServer('getAgent', 400, { method: 'GET', url: '/v1/agents/-bad' }), 'validation-failed');
  });

  it('refuses registrations it cannot accept', async () => {
    assertProblem(await onServer('registerAgent', 409, { method: 'POST', url: '/v1/agents', payload: fakeAgent({ server_id: 'B' }) }), 'wrong-server');
    assertProblem(await onServer('registerAgent', 400, { method: 'POST', url: '/v1/agents', payload: { ...fakeAgent(), pid: 0 } }), 'validation-failed');
    const text = await onServer('registerAgent', 415, { method: 'POST', url: '/v1/agents', headers: { 'content-type': 'text/plain' }, payload: 'agent' });
    assertProblem(text, 'unsupported-media-type');
  });

  it('takes inventory reports from its agents', async () => {
    const url = `/v1/agents/${c1AgentId}/inventory`;
    const headers = speakFor(c1AgentId);
    const stored = await onServer('reportInventory', 200, { method: 'PUT', url, headers, payload: c1Inventory() });
    assert.deepEqual(stored.json(), { accepted: true, version: 1 });
    const repeated = await onServer('reportInventory', 200, { method: 'PUT', url, headers, payload: c1Inventory() });
    assert.deepEqual(repeated.json(), { accepted: false, version: 1 });
    assertProblem(await onServer('reportInventory', 409, { method: 'PUT', url, headers, payload: c1Inventory({ cluster_id: 'c0' }) }), 'agent-mismatch');
    assertProblem(await onServer('reportInventory', 401, { method: 'PUT', url: '/v1/agents/A:ss1:c1:nobody/inventory', payload: c1Inventory() }), 'unauthenticated');
    assertProblem(await onServer('reportInventory', 400, { method: 'PUT', url, headers, payload: c1Inventory({ version: 0 }) }), 'validation-failed');
    // c1's tasks stay queued from here on, so that they can be cancelled.
    server.app.duplex.agents.markUnreachable(c1AgentId, Number.POSITIVE_INFINITY);
  });

  it('serves storage systems, clusters and devices', async () => {
    const systems = (await onServer('listStorageSystems', 200, { method: 'GET', url: '/v1/storage-systems' })).json<StorageSystemList>();
    assert.deepEqual(systems.items.map((system) => [system.id, system.cluster_count, system.device_count]), [['ss1', 2, 3]]);
    await onServer('listStorageSystems', 200, { method: 'GET', url: '/v1/storage-systems?limit=1' });
    assertProblem(await onServer('listStorageSystems', 400, { method: 'GET', url: '/v1/storage-systems?limit=0' }), 'validation-failed');
    const system = await onServer('getStorageSystem', 200, { method: 'GET', url: '/v1/storage-systems/ss1' });
    assert.equal(system.json<{ devices_available: number }>().devices_available, 3);
    assertProblem(await onServer('getStorageSystem', 404, { method: 'GET', url: '/v1/storage-systems/ss7' }), 'storage-system-not-found');
    assertProblem(await onServer('getStorageSystem', 400, { method: 'GET', url: '/v1/storage-systems/SS1' }), 'validation-failed');

    const clusters = (await onServer('listClusters', 200, { method: 'GET', url: '/v1/storage-systems/ss1/clusters' })).json<ClusterList>();
    assert.deepEqual(clusters.items.map((cluster) => [cluster.id, cluster.device_count, cluster.reported_by]), [['c0', 2, c0AgentId], ['c1', 1, c1AgentId]]);
    const firstCluster = (await onServer('listClusters', 200, { method: 'GET', url: '/v1/storage-systems/ss1/clusters?limit=1' })).json<ClusterList>();
    assert.ok(firstCluster.next_cursor);
    assertProblem(await onServer('listClusters', 404, { method: 'GET', url: '/v1/storage-systems/ss7/clusters' }), 'storage-system-not-found');
    assertProblem(await onServer('listClusters', 400, { method: 'GET', url: '/v1/storage-systems/ss1/clusters?cursor=' }), 'validation-failed');

    const devices = (await onServer('listDevices', 200, { method: 'GET', url: '/v1/storage-systems/ss1/devices' })).json<DeviceList>();
    assert.deepEqual(devices.items.map((device) => [device.id, device.owner_cluster, device.state]), [['d0', 'c0', 'available'], ['d1', 'c0', 'available'], ['d4', 'c1', 'available']]);
    const inC1 = (await onServer('listDevices', 200, { method: 'GET', url: '/v1/storage-systems/ss1/devices?cluster_id=c1&state=available&limit=5' })).json<DeviceList>();
    assert.deepEqual(inC1.items.map((device) => device.id), ['d4']);
    assertProblem(await onServer('listDevices', 404, { method: 'GET', url: '/v1/storage-systems/ss7/devices' }), 'storage-system-not-found');
    assertProblem(await onServer('listDevices', 400, { method: 'GET', url: '/v1/storage-systems/ss1/devices?state=broken' }), 'validation-failed');
  });

  it('runs a task of every kind through its agent and the driver', async () => {
    const create = await accepted({ kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol1', size_bytes: MiB } });
    assert.equal(create.state, 'queued');
    assert.equal(create.attempt, 0);
    const created = await settled(create.id, 'succeeded');
    assert.deepEqual(created.result?.volume, { device: 'd0', name: 'vol1', size_bytes: MiB });
    assert.equal(created.agent_id, c0AgentId);
    assert.equal(created.cluster_id, 'c0');

    const resized = await settled((await accepted({ kind: 'volume.resize', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol1', size_bytes: 2 * MiB } })).id, 'succeeded');
    assert.equal(resized.result?.volume?.size_bytes, 2 * MiB);
    const copied = await settled((await accepted({ kind: 'volume.copy', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol1', target_name: 'vol1-copy' } })).id, 'succeeded');
    assert.equal(copied.result?.volume?.name, 'vol1-copy');
    const across = await settled(
      (await accepted({ kind: 'volume.copy', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol1', target_device: 'd4', target_name: 'vol1-c1' } })).id,
      'succeeded',
    );
    assert.equal(across.result?.volume?.device, 'd4');
    const deleted = await settled((await accepted({ kind: 'volume.delete', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol1-copy' } })).id, 'succeeded');
    assert.equal(deleted.result?.deleted?.name, 'vol1-copy');
    const probed = await settled((await accepted({ kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' })).id, 'succeeded');
    assert.equal(probed.result?.device?.volume_count, 1);

    await settled((await accepted({ kind: 'volume.create', storage_system_id: 'ss1', device: 'd1', params: { name: 'scratch', size_bytes: MiB } })).id, 'succeeded');
    const formatted = await settled((await accepted({ kind: 'device.format', storage_system_id: 'ss1', device: 'd1', params: {} })).id, 'succeeded');
    assert.equal(formatted.result?.volumes_removed, 1);
  });

  it('records a task that fails on the device with its problem', async () => {
    clusterDriver.store.setFault('d1', 'the device does not answer');
    const task = await settled((await accepted({ kind: 'volume.create', storage_system_id: 'ss1', device: 'd1', params: { name: 'lost', size_bytes: MiB } })).id, 'failed');
    assert.equal(task.error?.type, 'urn:duplex:problem:device-unavailable');
    assert.equal(task.result, null);
    assert.ok(task.finished_at);

    // The driver's probe finds the fault by itself; the cluster-manager stores the change and
    // broadcasts it; the agent reports it to the server.
    await waitFor('the server to see d1 unavailable', async () => {
      const response = await server.app.inject({ method: 'GET', url: '/v1/storage-systems/ss1/devices?state=unavailable' });
      return response.json<DeviceList>().items.some((device) => device.id === 'd1') ? true : undefined;
    });
    const stored = clusterManager.app.clusterManager.inventory!.version;
    const unavailable = (await onServer('listDevices', 200, { method: 'GET', url: '/v1/storage-systems/ss1/devices?state=unavailable' })).json<DeviceList>();
    assert.deepEqual(unavailable.items.map((device) => [device.id, device.reason, device.inventory_version]), [['d1', 'the device does not answer', stored]]);
    const current = (await onManager('getInventory', 200, { method: 'GET', url: '/v1/inventory' })).json<Inventory>();
    assert.equal(current.version, stored);
    // A rescan with nothing new stores no version.
    assert.equal((await clusterManager.app.clusterManager.refreshInventory('contract test')).version, stored);
    assertProblem(await submit({ kind: 'device.probe', storage_system_id: 'ss1', device: 'd1' }, 422), 'device-unavailable');
  });

  it('keeps submissions idempotent per key', async () => {
    const key = newKey();
    const body: TaskRequest = { kind: 'device.probe', storage_system_id: 'ss1', device: 'd4' };
    const original = await accepted(body, key);
    const replay = await submit(body, 202, key);
    assert.equal(replay.json<Task>().id, original.id);
    assert.equal(replay.headers['idempotent-replayed'], 'true');
    assertProblem(await submit({ ...body, device: 'd0' }, 422, key), 'idempotency-key-reused');
  });

  it('submits many tasks in one request, each accepted or refused on its own', async () => {
    const key = newKey();
    const batch = (tasks: unknown[], status: number, batchKey = key) =>
      onServer('submitTasks', status, { method: 'POST', url: '/v1/tasks:batch', headers: { 'idempotency-key': batchKey }, payload: { tasks } });
    const tasks = [
      { kind: 'device.probe', storage_system_id: 'ss1', device: 'd4' },
      { kind: 'device.probe', storage_system_id: 'ss1', device: 'd9' },
    ];
    const result = (await batch(tasks, 200)).json<{ accepted: number; refused: number; results: { status: number; task?: Task; problem?: Problem }[] }>();
    assert.deepEqual([result.accepted, result.refused], [1, 1]);
    assert.deepEqual(result.results.map((item) => item.status), [202, 404]);
    assert.equal(result.results[1]?.problem?.type, 'urn:duplex:problem:device-not-found');
    const replay = (await batch(tasks.slice(0, 1), 200)).json<{ replayed: number; results: { task?: Task }[] }>();
    assert.equal(replay.replayed, 1);
    assert.equal(replay.results[0]?.task?.id, result.results[0]?.task?.id);
    assertProblem(await batch([], 400), 'validation-failed');
  });

  it('refuses tasks it cannot accept', async () => {
    assertProblem(await submit({ kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol1', size_bytes: MiB } }, 409), 'volume-exists');
    assertProblem(await submit({ kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'huge', size_bytes: 2 * GiB } }, 422), 'insufficient-capacity');
    assertProblem(await submit({ kind: 'volume.delete', storage_system_id: 'ss1', device: 'd0', params: { name: 'missing' } }, 404), 'volume-not-found');
    assertProblem(await submit({ kind: 'device.probe', storage_system_id: 'ss7', device: 'd0' }, 404), 'storage-system-not-found');
    assertProblem(await submit({ kind: 'device.probe', storage_system_id: 'ss1', device: 'd9' }, 404), 'device-not-found');
    const invalid = assertProblem(await submit({ kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'v' } }, 400), 'validation-failed');
    assert.ok((invalid.errors ?? []).length > 0);
    assertProblem(await onServer('submitTask', 400, { method: 'POST', url: '/v1/tasks', payload: { kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' } }), 'validation-failed');
    const malformed = await onServer('submitTask', 400, {
      method: 'POST',
      url: '/v1/tasks',
      headers: { 'idempotency-key': newKey(), 'content-type': 'application/json' },
      payload: '{"kind":',
    });
    assertProblem(malformed, 'malformed-json');
    const text = await onServer('submitTask', 415, { method: 'POST', url: '/v1/tasks', headers: { 'idempotency-key': newKey(), 'content-type': 'text/plain' }, payload: 'probe d0' });
    assertProblem(text, 'unsupported-media-type');
    const large = JSON.stringify({ kind: 'device.probe', storage_system_id: 'ss1', device: 'd0', padding: 'x'.repeat(1_100_000) });
    const tooLarge = await onServer('submitTask', 413, { method: 'POST', url: '/v1/tasks', headers: { 'idempotency-key': newKey(), 'content-type': 'application/json' }, payload: large });
    assertProblem(tooLarge, 'payload-too-large');
  });

  it('cancels a queued task, and only a queued one', async () => {
    const queued = await accepted({ kind: 'volume.create', storage_system_id: 'ss1', device: 'd4', params: { name: 'never', size_bytes: MiB } });
    const cancelled = (await onServer('cancelTask', 200, { method: 'POST', url: `/v1/tasks/${queued.id}:cancel` })).json<Task>();
    assert.equal(cancelled.state, 'cancelled');
    assert.ok(cancelled.finished_at);
    assertProblem(await onServer('cancelTask', 409, { method: 'POST', url: `/v1/tasks/${queued.id}:cancel` }), 'task-not-cancellable');
    assertProblem(await onServer('cancelTask', 404, { method: 'POST', url: '/v1/tasks/tsk_nothing:cancel' }), 'task-not-found');
    assertProblem(await onServer('cancelTask', 400, { method: 'POST', url: '/v1/tasks/not.an.id:cancel' }), 'validation-failed');
  });

  it('streams events and lists a task’s history', async () => {
    // Over a socket: the stream answers until the client leaves, and its answer is checked by verifyAll.
    const stream = await EventStreamClient.open(`${server.url}/v1/events?type=task.state_changed&storage_system_id=ss1&heartbeat_ms=100`);
    let task: Task;
    try {
      assert.equal(stream.status, 200);
      task = await accepted({ kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' });
      await settled(task.id, 'succeeded');
      await stream.waitFor('the task to end on the stream', (c) => (c.events<Event>().some((event) => event.task_id === task.id && event.data.state === 'succeeded') ? true : undefined));
      await stream.waitFor('a heartbeat', (c) => (c.comments.includes('heartbeat') ? true : undefined));
    } finally {
      await stream.close();
    }
    const history = (await onServer('listTaskEvents', 200, { method: 'GET', url: `/v1/tasks/${task.id}/events` })).json<EventList>();
    assert.equal(history.items[0]?.data.state, 'queued');
    assert.equal(history.items.at(-1)?.data.state, 'succeeded');
    assert.deepEqual(stream.events<Event>().filter((event) => event.task_id === task.id), history.items);
    const page = (await onServer('listTaskEvents', 200, { method: 'GET', url: `/v1/tasks/${task.id}/events?limit=1` })).json<EventList>();
    assert.ok(page.next_cursor);
    assertProblem(await onServer('listTaskEvents', 404, { method: 'GET', url: '/v1/tasks/tsk_nothing/events' }), 'task-not-found');
    assertProblem(await onServer('listTaskEvents', 400, { method: 'GET', url: `/v1/tasks/${task.id}/events?cursor=bm90LWEtY3Vyc29y` }), 'validation-failed');
    assertProblem(await onServer('streamEvents', 400, { method: 'GET', url: '/v1/events?type=task.exploded' }), 'validation-failed');
    assertProblem(await onServer('streamEvents', 410, { method: 'GET', url: '/v1/events', headers: { 'last-event-id': '999999999' } }), 'event-id-unknown');
    const streamed = recorders.server.exchanges.filter((exchange) => exchange.operationId === 'streamEvents' && exchange.status === 200);
    assert.equal(streamed.length, 1);
    recorders.server.check(streamed[0]!);
  });

  it('gets and lists tasks', async () => {
    assertProblem(await onServer('getTask', 404, { method: 'GET', url: '/v1/tasks/tsk_nothing' }), 'task-not-found');
    assertProblem(await onServer('getTask', 400, { method: 'GET', url: '/v1/tasks/not.an.id' }), 'validation-failed');
    const all = (await onServer('listTasks', 200, { method: 'GET', url: '/v1/tasks' })).json<TaskList>();
    assert.deepEqual(new Set(all.items.map((task) => task.state)), new Set(['succeeded', 'failed', 'queued', 'cancelled']));
    const page = (await onServer('listTasks', 200, { method: 'GET', url: '/v1/tasks?limit=3' })).json<TaskList>();
    assert.equal(page.items.length, 3);
    assert.ok(page.next_cursor);
    const next = (await onServer('listTasks', 200, { method: 'GET', url: `/v1/tasks?limit=3&cursor=${page.next_cursor}` })).json<TaskList>();
    assert.deepEqual(next.items.map((task) => task.id), all.items.slice(3, 6).map((task) => task.id));
    const creates = (await onServer('listTasks', 200, { method: 'GET', url: '/v1/tasks?kind=volume.create&state=succeeded&storage_system_id=ss1&device=d0' })).json<TaskList>();
    assert.equal(creates.items.length, 1);
    const failedTasks = (await onServer('listTasks', 200, { method: 'GET', url: '/v1/tasks?state=failed' })).json<TaskList>();
    assert.deepEqual(failedTasks.items.map((task) => task.error?.type), ['urn:duplex:problem:device-unavailable']);
    assertProblem(await onServer('listTasks', 400, { method: 'GET', url: '/v1/tasks?state=lost' }), 'validation-failed');
    assertProblem(await onServer('listTasks', 400, { method: 'GET', url: '/v1/tasks?cursor=bm90LWEtY3Vyc29y' }), 'validation-failed');
    assertProblem(await onServer('listTasks', 400, { method: 'GET', url: '/v1/tasks?owner=me' }), 'validation-failed');
  });

  it('judges task reports by their fencing token, and takes them only on tasks dispatched to the agent', async () => {
    const succeeded = (await onServer('listTasks', 200, { method: 'GET', url: '/v1/tasks?state=succeeded&limit=100' })).json<TaskList>().items;
    const done = succeeded.find((task) => task.agent_id === c0AgentId);
    assert.ok(done, 'a task c0 ran');
    const url = `/v1/agents/${c0AgentId}/task-reports`;
    const headers = speakFor(c0AgentId);
    // The task is finished: a report of it is stale, and a batch of stale reports only is a 409.
    const stale = await onServer('reportTaskStates', 409, {
      method: 'POST',
      url,
      headers,
      payload: { reports: [{ task_id: done.id, attempt: done.attempt, fencing_token: done.fencing_token ?? 1, state: 'failed' }] },
    });
    assertProblem(stale, 'stale-fencing-token');
    assertProblem(await onServer('reportTaskStates', 400, { method: 'POST', url, headers, payload: { reports: [] } }), 'validation-failed');
    const never = { reports: [{ task_id: 'tsk_unknown', attempt: 1, fencing_token: 1, state: 'running' }] };
    assertProblem(await onServer('reportTaskStates', 403, { method: 'POST', url, headers, payload: never }), 'forbidden');
    assertProblem(await onServer('reportTaskStates', 401, { method: 'POST', url: '/v1/agents/A:ss1:c0:nobody/task-reports', payload: never }), 'unauthenticated');
  });

  it('administers devices through the cluster-manager that owns them', async () => {
    const base = '/v1/storage-systems/ss1/devices';
    const device = (await onServer('getDevice', 200, { method: 'GET', url: `${base}/d0` })).json<Device>();
    assert.deepEqual([device.id, device.owner_cluster, device.state], ['d0', 'c0', 'available']);
    // d1 is unavailable (an earlier test injected a fault) but in service, so it cannot be retired.
    assertProblem(await onServer('getDevice', 404, { method: 'GET', url: `${base}/d9` }), 'device-not-found');

    // The cluster-manager's own device operations, and the conditional read agents use.
    const current = await onManager('getInventory', 200, { method: 'GET', url: '/v1/inventory' });
    const etag = String(current.headers.etag);
    const unchanged = await onManager('getInventory', 304, { method: 'GET', url: '/v1/inventory', headers: { 'if-none-match': etag } });
    assert.equal(unchanged.body, '');
    const offline = (await onManager('setDeviceState', 200, { method: 'POST', url: '/v1/devices/d0:set-state', payload: { state: 'offline', reason: 'maintenance' } })).json<Inventory>();
    assert.equal(offline.devices.find((candidate) => candidate.id === 'd0')?.state, 'offline');
    assert.equal(offline.version, current.json<Inventory>().version + 1);
    await onManager('getInventory', 200, { method: 'GET', url: '/v1/inventory', headers: { 'if-none-match': etag } });
    const retired = (await onManager('retireDevice', 200, { method: 'DELETE', url: '/v1/devices/d0' })).json<Inventory>();
    assert.equal(retired.devices.find((candidate) => candidate.id === 'd0')?.state, 'retired');
    assertProblem(await onManager('setDeviceState', 409, { method: 'POST', url: '/v1/devices/d0:set-state', payload: { state: 'available' } }), 'device-retired');
    assertProblem(await onManager('retireDevice', 409, { method: 'DELETE', url: '/v1/devices/d1' }), 'device-in-service');
    assertProblem(await onManager('retireDevice', 404, { method: 'DELETE', url: '/v1/devices/d4' }), 'device-not-found');
    const reinstated = (await onManager('addDevice', 201, { method: 'POST', url: '/v1/devices', payload: { id: 'd0', capacity_bytes: GiB } })).json<Inventory>();
    assert.equal(reinstated.devices.find((candidate) => candidate.id === 'd0')?.state, 'available');
    assertProblem(await onManager('addDevice', 409, { method: 'POST', url: '/v1/devices', payload: { id: 'd4', capacity_bytes: GiB } }), 'device-exists');
    assertProblem(await onManager('addDevice', 400, { method: 'POST', url: '/v1/devices', payload: { id: 'd5', capacity_bytes: 0 } }), 'validation-failed');

    // The same through the server, which answers once its own agents have reported the change.
    const down = (await onServer('setDeviceState', 200, { method: 'POST', url: `${base}/d0:set-state`, payload: { state: 'offline' } })).json<Device>();
    assert.deepEqual([down.state, down.reason], ['offline', 'taken out of service by an operator']);
    assert.equal((await server.app.inject({ method: 'GET', url: `${base}/d0` })).json<Device>().state, 'offline');
    assertProblem(await submit({ kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' }, 422), 'device-unavailable');
    const gone = (await onServer('retireDevice', 200, { method: 'DELETE', url: `${base}/d0` })).json<Device>();
    assert.equal(gone.state, 'retired');
    assertProblem(await onServer('retireDevice', 409, { method: 'DELETE', url: `${base}/d1` }), 'device-in-service');
    assertProblem(await onServer('setDeviceState', 404, { method: 'POST', url: `${base}/d9:set-state`, payload: { state: 'offline' } }), 'device-not-found');
    assertProblem(await onServer('setDeviceState', 400, { method: 'POST', url: `${base}/d0:set-state`, payload: { state: 'broken' } }), 'validation-failed');
    const back = (await onServer('addDevice', 201, { method: 'POST', url: base, payload: { id: 'd0', cluster_id: 'c0', capacity_bytes: GiB } })).json<Device>();
    assert.equal(back.state, 'available');
    const added = (await onServer('addDevice', 201, { method: 'POST', url: base, payload: { id: 'd3', cluster_id: 'c0', capacity_bytes: MiB } })).json<Device>();
    assert.deepEqual([added.id, added.owner_cluster, added.capacity_bytes, added.state], ['d3', 'c0', MiB, 'available']);
    assertProblem(await onServer('addDevice', 409, { method: 'POST', url: base, payload: { id: 'd3', cluster_id: 'c0', capacity_bytes: MiB } }), 'device-exists');
    assertProblem(await onServer('addDevice', 404, { method: 'POST', url: '/v1/storage-systems/ss7/devices', payload: { id: 'd5', cluster_id: 'c0', capacity_bytes: MiB } }), 'storage-system-not-found');
    const rescan = (await onServer('rescanCluster', 200, { method: 'POST', url: '/v1/storage-systems/ss1/clusters/c0:rescan' })).json<{ device_count: number }>();
    assert.equal(rescan.device_count, 3);
    assertProblem(await onServer('rescanCluster', 404, { method: 'POST', url: '/v1/storage-systems/ss1/clusters/c9:rescan' }), 'cluster-not-found');
  });

  it('issues, lists and revokes API tokens, and refuses a call without the role it needs', async () => {
    type CreatedToken = ServerApi.components['schemas']['CreatedToken'];
    type Token = ServerApi.components['schemas']['Token'];
    const created = (await onServer('createToken', 201, { method: 'POST', url: '/v1/tokens', payload: { name: 'dashboards', role: 'viewer' } })).json<CreatedToken>();
    assert.match(created.secret, /^dpx_[A-Za-z0-9_-]{43}$/);
    assert.deepEqual([created.name, created.role, created.expires_at, created.revoked_at], ['dashboards', 'viewer', null, null]);
    const viewer = { authorization: `Bearer ${created.secret}` };
    const listed = (await onServer('listTokens', 200, { method: 'GET', url: '/v1/tokens?limit=100' })).json<{ items: Token[] }>();
    const mine = listed.items.find((token) => token.id === created.id);
    assert.ok(mine && !('secret' in mine), 'listed without its secret');

    await onServer('listTasks', 200, { method: 'GET', url: '/v1/tasks', headers: viewer });
    assertProblem(await onServer('submitTask', 403, { method: 'POST', url: '/v1/tasks', headers: { ...viewer, 'idempotency-key': 'viewer-try' }, payload: { kind: 'device.probe', storage_system_id: 'ss1', device: 'd0', params: {} } }), 'forbidden');
    assertProblem(await onServer('listTokens', 403, { method: 'GET', url: '/v1/tokens', headers: viewer }), 'forbidden');
    const anonymous = await onServer('listTasks', 401, { method: 'GET', url: '/v1/tasks', headers: { authorization: undefined } });
    assertProblem(anonymous, 'unauthenticated');
    assert.equal(anonymous.headers['www-authenticate'], 'Bearer realm="duplex"');
    assertProblem(await onServer('createToken', 401, { method: 'POST', url: '/v1/tokens', headers: { authorization: 'Basic YWRtaW46YWRtaW4=' }, payload: { name: 'x', role: 'admin' } }), 'unauthenticated');
    assertProblem(await onServer('createToken', 400, { method: 'POST', url: '/v1/tokens', payload: { name: 'x', role: 'root' } }), 'validation-failed');

    const revoked = (await onServer('revokeToken', 200, { method: 'DELETE', url: `/v1/tokens/${created.id}` })).json<Token>();
    assert.ok(revoked.revoked_at);
    const again = (await onServer('revokeToken', 200, { method: 'DELETE', url: `/v1/tokens/${created.id}` })).json<Token>();
    assert.equal(again.revoked_at, revoked.revoked_at, 'revoked once');
    assertProblem(await onServer('revokeToken', 404, { method: 'DELETE', url: '/v1/tokens/tok_unknown' }), 'token-not-found');
    assertProblem(await onServer('getStorageSystem', 401, { method: 'GET', url: '/v1/storage-systems/ss1', headers: viewer }), 'unauthenticated');
  });

  it('answers a route that does not exist with a problem', async () => {
    const response = await server.app.inject({ method: 'GET', url: '/v1/volumes' });
    assert.equal(response.statusCode, 404);
    assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
    assertProblem(response, 'route-not-found');
  });
});

describe('every answer recorded, whoever asked', () => {
  for (const name of Object.keys(recorders) as ContractName[]) {
    it(`matches the ${name} contract, and every ${name} operation answered with a 2xx`, (t) => {
      const recorder = recorders[name];
      // The one answer that is no operation's: the 404 for a route that does not exist.
      const checked = recorder.verifyAll((exchange) => exchange.operationId === undefined && exchange.status === 404 && exchange.url === '/v1/volumes');
      const coverage = recorder.coverage();
      t.diagnostic(`${checked} answers checked; statuses by operation: ${JSON.stringify(coverage.statuses)}`);
      assert.deepEqual(coverage.withoutSuccess, []);
    });
  }

  it('includes answers the services gave each other over sockets', () => {
    const overSocket = (name: ContractName, operationId: string): number =>
      recorders[name].exchanges.filter((exchange) => exchange.overSocket && exchange.operationId === operationId).length;
    assert.ok(overSocket('server', 'registerAgent') >= 2, 'registrations of both agents');
    assert.ok(overSocket('server', 'reportInventory') >= 2, 'inventory reports of the c0 agent');
    assert.ok(overSocket('server', 'reportTaskStates') >= 1, 'task reports');
    assert.ok(overSocket('server', 'heartbeatAgent') >= 1, 'heartbeats');
    assert.ok(overSocket('cluster-manager', 'getInventory') >= 2, 'inventory reads by the c0 agent');
    assert.ok(overSocket('driver', 'execute') >= 10, 'executions by the agents');
  });
});
