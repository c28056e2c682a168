import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ProblemCode } from '@duplex/shared';
import type { InjectOptions } from 'fastify';
import {
  MiB,
  acceptedTask,
  assertProblem,
  device,
  insertVolume,
  inventoryReport,
  registerAgent,
  registration,
  rowCounts,
  setUpStorageSystem,
  snapshot,
  startFakeAgent,
  startServer,
  stopServer,
  waitForState,
  type FakeAgent,
  type TestServer,
} from './helpers.ts';

/** A request the server must refuse with the given problem, changing nothing in Postgres. */
interface Refusal {
  title: string;
  request: () => InjectOptions;
  status: number;
  code: ProblemCode;
  /** Where the first validation error points, for 400 validation-failed. */
  location?: string;
}

const json = { 'content-type': 'application/json' };
const oversize = (body: object): string => JSON.stringify({ ...body, padding: 'x'.repeat(1_100_000) });
const cursorOf = (key: unknown[]): string => Buffer.from(JSON.stringify(key)).toString('base64url');
const longName = 'n'.repeat(200);

describe('bad input is refused with a problem and changes nothing', () => {
  let server: TestServer;
  let agent: FakeAgent;
  let c0 = '';
  let taskId = '';

  before(async () => {
    agent = await startFakeAgent();
    server = await startServer();
    ({ c0 } = await setUpStorageSystem(server.app, agent.url));
    await insertVolume(server.db, 'd0', 'vol1', MiB);
    // One task in flight, resting in `dispatched` at the fake agent.
    taskId = (await acceptedTask(server.app, { kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' })).id;
    await waitForState(server.db, taskId, 'dispatched');
  });
  after(async () => {
    await stopServer(server);
    await agent.close();
  });

  function refuse(cases: Refusal[]): void {
    for (const refusal of cases) {
      it(`${refusal.title} → ${refusal.status} ${refusal.code}`, async () => {
        const counts = await rowCounts(server.db);
        const rows = await snapshot(server.db);
        const request = refusal.request();
        const response = await server.app.inject(request);
        const problem = assertProblem(response, refusal.status, refusal.code);
        assert.equal(problem.instance, String(request.url).split('?')[0]);
        if (refusal.location !== undefined) {
          assert.ok(problem.errors && problem.errors.length > 0, 'lists the validation errors');
          assert.equal(problem.errors[0]?.location, refusal.location);
        }
        assert.deepEqual(await rowCounts(server.db), counts);
        assert.equal(await snapshot(server.db), rows);
      });
    }
  }

  // The request is otherwise valid, so only the unknown parameter can be the reason.
  const unknownQuery = (method: InjectOptions['method'], url: string, payload?: () => object, headers: Record<string, string> = {}): Refusal => ({
    title: `${method} ${url} with an unknown query parameter`,
    request: () => ({ method, url: `${url}?bogus=1`, headers, ...(payload ? { payload: payload() } : {}) }),
    status: 400,
    code: 'validation-failed',
    location: 'querystring',
  });

  describe('operations', () => {
    refuse([unknownQuery('GET', '/healthz'), unknownQuery('GET', '/readyz'), unknownQuery('GET', '/openapi.json')]);
    refuse([{ title: 'GET of a route that does not exist', request: () => ({ method: 'GET', url: '/v1/nothing' }), status: 404, code: 'route-not-found' }]);
  });

  describe('POST /v1/agents', () => {
    const post = (payload: unknown, headers: Record<string, string> = {}): InjectOptions => ({ method: 'POST', url: '/v1/agents', headers, payload: payload as string });
    refuse([
      { title: 'malformed JSON', request: () => post('{bad', json), status: 400, code: 'malformed-json' },
      { title: 'an empty JSON body', request: () => post('', json), status: 400, code: 'malformed-json' },
      { title: 'pid as a string', request: () => post({ ...registration(), pid: '4242' }), status: 400, code: 'validation-failed', location: 'body/pid' },
      { title: 'an unknown field', request: () => post({ ...registration(), extra: true }), status: 400, code: 'validation-failed', location: 'body' },
      { title: 'no name', request: () => post({ ...registration(), name: undefined }), status: 400, code: 'validation-failed', location: 'body' },
      { title: 'a name of 200 characters', request: () => post(registration({ name: longName })), status: 400, code: 'validation-failed', location: 'body/name' },
      { title: 'name ../etc', request: () => post(registration({ name: '../etc' })), status: 400, code: 'validation-failed', location: 'body/name' },
      { title: 'name a/b', request: () => post(registration({ name: 'a/b' })), status: 400, code: 'validation-failed', location: 'body/name' },
      { title: 'name .x', request: () => post(registration({ name: '.x' })), status: 400, code: 'validation-failed', location: 'body/name' },
      { title: 'cluster_id ../c0', request: () => post(registration({ cluster_id: '../c0' })), status: 400, code: 'validation-failed', location: 'body/cluster_id' },
      { title: 'a url that is not http', request: () => post(registration({ url: 'ftp://127.0.0.1/' })), status: 400, code: 'validation-failed', location: 'body/url' },
      { title: 'pid 0', request: () => post(registration({ pid: 0 })), status: 400, code: 'validation-failed', location: 'body/pid' },
      { title: 'pid above 2^32-1', request: () => post(registration({ pid: 4294967296 })), status: 400, code: 'validation-failed', location: 'body/pid' },
      { title: 'started_at that is not a time', request: () => post(registration({ started_at: 'yesterday' })), status: 400, code: 'validation-failed', location: 'body/started_at' },
      { title: 'a text/plain body', request: () => post(JSON.stringify(registration()), { 'content-type': 'text/plain' }), status: 415, code: 'unsupported-media-type' },
      { title: 'a body over 1 MiB', request: () => post(oversize(registration()), json), status: 413, code: 'payload-too-large' },
      { title: 'an agent of another server', request: () => post(registration({ server_id: 'B' })), status: 409, code: 'wrong-server' },
      unknownQuery('POST', '/v1/agents', () => registration({ name: 'q' })),
    ]);
  });

  describe('GET /v1/agents', () => {
    const get = (query: string): InjectOptions => ({ method: 'GET', url: `/v1/agents?${query}` });
    refuse([
      { title: 'limit=100000', request: () => get('limit=100000'), status: 400, code: 'validation-failed', location: 'querystring/limit' },
      { title: 'limit=0', request: () => get('limit=0'), status: 400, code: 'validation-failed', location: 'querystring/limit' },
      { title: 'limit=abc', request: () => get('limit=abc'), status: 400, code: 'validation-failed', location: 'querystring/limit' },
      { title: 'state=dead', request: () => get('state=dead'), status: 400, code: 'validation-failed', location: 'querystring/state' },
      { title: 'cluster_id=../c0', request: () => get('cluster_id=..%2Fc0'), status: 400, code: 'validation-failed', location: 'querystring/cluster_id' },
      { title: 'a cursor that is not base64 JSON', request: () => get('cursor=%21%21%21'), status: 400, code: 'validation-failed', location: 'querystring/cursor' },
      { title: 'a cursor of the wrong shape', request: () => get(`cursor=${cursorOf(['a', 'b'])}`), status: 400, code: 'validation-failed', location: 'querystring/cursor' },
      { title: 'an empty cursor', request: () => get('cursor='), status: 400, code: 'validation-failed', location: 'querystring/cursor' },
      unknownQuery('GET', '/v1/agents'),
    ]);
  });

  describe('GET /v1/agents/{id}', () => {
    refuse([
      { title: 'id ../etc', request: () => ({ method: 'GET', url: '/v1/agents/..%2Fetc' }), status: 400, code: 'validation-failed', location: 'params/id' },
      { title: 'id .x', request: () => ({ method: 'GET', url: '/v1/agents/.x' }), status: 400, code: 'validation-failed', location: 'params/id' },
      { title: 'an unknown agent', request: () => ({ method: 'GET', url: '/v1/agents/A:ss1:c0:ghost' }), status: 404, code: 'agent-not-found' },
      unknownQuery('GET', '/v1/agents/A:ss1:c0:ss1-c0-A'),
    ]);
  });

  describe('POST /v1/agents/{id}/heartbeats', () => {
    const beat = (payload: unknown, headers: Record<string, string> = {}, id = c0): InjectOptions => ({ method: 'POST', url: `/v1/agents/${id}/heartbeats`, headers, payload: payload as string });
    refuse([
      { title: 'malformed JSON', request: () => beat('{bad', json), status: 400, code: 'malformed-json' },
      { title: 'incarnation as a string', request: () => beat({ incarnation: '1' }), status: 400, code: 'validation-failed', location: 'body/incarnation' },
      { title: 'incarnation 0', request: () => beat({ incarnation: 0 }), status: 400, code: 'validation-failed', location: 'body/incarnation' },
      { title: 'no incarnation', request: () => beat({ inventory_version: 1 }), status: 400, code: 'validation-failed', location: 'body' },
      { title: 'an unknown field', request: () => beat({ incarnation: 1, lease: 'forever' }), status: 400, code: 'validation-failed', location: 'body' },
      { title: 'a text/plain body', request: () => beat('{"incarnation":1}', { 'content-type': 'text/plain' }), status: 415, code: 'unsupported-media-type' },
      { title: 'a body over 1 MiB', request: () => beat(oversize({ incarnation: 1 }), json), status: 413, code: 'payload-too-large' },
      // An agent's request is authenticated first: an id no credential can speak for is 401, whatever its shape.
      { title: 'id ../etc', request: () => beat({ incarnation: 1 }, {}, '..%2Fetc'), status: 401, code: 'unauthenticated' },
      { title: 'an unknown agent', request: () => beat({ incarnation: 1 }, {}, 'A:ss1:c0:ghost'), status: 401, code: 'unauthenticated' },
      { title: 'an old incarnation', request: () => beat({ incarnation: 7 }), status: 409, code: 'stale-incarnation' },
      unknownQuery('POST', '/v1/agents/A:ss1:c0:ss1-c0-A/heartbeats', () => ({ incarnation: 1 })),
    ]);
  });

  describe('PUT /v1/agents/{id}/inventory', () => {
    const put = (payload: unknown, headers: Record<string, string> = {}, id = c0): InjectOptions => ({ method: 'PUT', url: `/v1/agents/${id}/inventory`, headers, payload: payload as string });
    const newer = () => inventoryReport({ version: 100 });
    refuse([
      { title: 'malformed JSON', request: () => put('{bad', json), status: 400, code: 'malformed-json' },
      { title: 'version as a string', request: () => put({ ...newer(), version: '100' }), status: 400, code: 'validation-failed', location: 'body/version' },
      { title: 'version 0', request: () => put(inventoryReport({ version: 0 })), status: 400, code: 'validation-failed', location: 'body/version' },
      { title: 'an unknown field', request: () => put({ ...newer(), extra: 1 }), status: 400, code: 'validation-failed', location: 'body' },
      { title: 'a device with an unknown field', request: () => put({ ...newer(), devices: [{ ...device('d0', 'c0'), color: 'red' }] }), status: 400, code: 'validation-failed', location: 'body/devices/0' },
      { title: 'a device in an unknown state', request: () => put({ ...newer(), devices: [{ ...device('d0', 'c0'), state: 'broken' }] }), status: 400, code: 'validation-failed', location: 'body/devices/0/state' },
      { title: 'a device id ../d0', request: () => put(inventoryReport({ version: 100, devices: [device('../d0', 'c0')] })), status: 400, code: 'validation-failed', location: 'body/devices/0/id' },
      { title: 'a negative capacity', request: () => put(inventoryReport({ version: 100, devices: [device('d0', 'c0', { capacity_bytes: -1 })] })), status: 400, code: 'validation-failed', location: 'body/devices/0/capacity_bytes' },
      { title: 'more than 4096 devices', request: () => put(inventoryReport({ version: 100, devices: Array.from({ length: 4097 }, (_, i) => device(`d${i}`, 'c0')) })), status: 400, code: 'validation-failed', location: 'body/devices' },
      { title: 'a text/plain body', request: () => put(JSON.stringify(newer()), { 'content-type': 'text/plain' }), status: 415, code: 'unsupported-media-type' },
      { title: 'a body over 1 MiB', request: () => put(oversize(newer()), json), status: 413, code: 'payload-too-large' },
      // An agent's request is authenticated first: an id no credential can speak for is 401, whatever its shape.
      { title: 'id ../etc', request: () => put(newer(), {}, '..%2Fetc'), status: 401, code: 'unauthenticated' },
      { title: 'an unknown agent', request: () => put(newer(), {}, 'A:ss1:c0:ghost'), status: 401, code: 'unauthenticated' },
      { title: 'a report for another cluster', request: () => put(inventoryReport({ version: 100, cluster_id: 'c1' })), status: 409, code: 'agent-mismatch' },
      unknownQuery('PUT', '/v1/agents/A:ss1:c0:ss1-c0-A/inventory', () => inventoryReport({ version: 100 })),
    ]);
  });

  describe('POST /v1/agents/{id}/task-reports', () => {
    const post = (payload: unknown, headers: Record<string, string> = {}, id = c0): InjectOptions => ({ method: 'POST', url: `/v1/agents/${id}/task-reports`, headers, payload: payload as string });
    const one = (overrides: Record<string, unknown> = {}) => ({ reports: [{ task_id: taskId, attempt: 1, fencing_token: 1, state: 'succeeded', ...overrides }] });
    refuse([
      { title: 'malformed JSON', request: () => post('{bad', json), status: 400, code: 'malformed-json' },
      { title: 'no reports', request: () => post({ reports: [] }), status: 400, code: 'validation-failed', location: 'body/reports' },
      { title: 'fencing_token as a string', request: () => post(one({ fencing_token: '1' })), status: 400, code: 'validation-failed', location: 'body/reports/0/fencing_token' },
      { title: 'a state an agent cannot report', request: () => post(one({ state: 'cancelled' })), status: 400, code: 'validation-failed', location: 'body/reports/0/state' },
      { title: 'task_id ../x', request: () => post(one({ task_id: '../x' })), status: 400, code: 'validation-failed', location: 'body/reports/0/task_id' },
      { title: 'an unknown field', request: () => post(one({ note: 'hi' })), status: 400, code: 'validation-failed', location: 'body/reports/0' },
      { title: 'more than 1000 reports', request: () => post({ reports: Array.from({ length: 1001 }, () => one().reports[0]) }), status: 400, code: 'validation-failed', location: 'body/reports' },
      { title: 'a text/plain body', request: () => post(JSON.stringify(one()), { 'content-type': 'text/plain' }), status: 415, code: 'unsupported-media-type' },
      { title: 'a body over 1 MiB', request: () => post(oversize(one()), json), status: 413, code: 'payload-too-large' },
      // An agent's request is authenticated first: an id no credential can speak for is 401, whatever its shape.
      { title: 'id ../etc', request: () => post(one(), {}, '..%2Fetc'), status: 401, code: 'unauthenticated' },
      { title: 'an unknown agent', request: () => post(one(), {}, 'A:ss1:c0:ghost'), status: 401, code: 'unauthenticated' },
      unknownQuery('POST', '/v1/agents/A:ss1:c0:ss1-c0-A/task-reports', one),
    ]);
  });

  describe('POST /v1/tasks', () => {
    let keyCounter = 0;
    const submit = (payload: unknown, headers: Record<string, string> = {}): InjectOptions => ({
      method: 'POST',
      url: '/v1/tasks',
      headers: { 'idempotency-key': `bad-input-${++keyCounter}`, ...headers },
      payload: payload as string,
    });
    const create = (params: Record<string, unknown>, rest: Record<string, unknown> = {}) => ({ kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'v-new', size_bytes: MiB, ...params }, ...rest });
    refuse([
      { title: 'no Idempotency-Key', request: () => ({ method: 'POST', url: '/v1/tasks', payload: create({}) }), status: 400, code: 'validation-failed', location: 'headers' },
      { title: 'an Idempotency-Key of 256 characters', request: () => submit(create({}), { 'idempotency-key': 'k'.repeat(256) }), status: 400, code: 'validation-failed', location: 'headers/idempotency-key' },
      { title: 'an Idempotency-Key with a space', request: () => submit(create({}), { 'idempotency-key': 'a b' }), status: 400, code: 'validation-failed', location: 'headers/idempotency-key' },
      { title: 'malformed JSON', request: () => submit('{bad', json), status: 400, code: 'malformed-json' },
      { title: 'an unknown kind', request: () => submit({ ...create({}), kind: 'volume.explode' }), status: 400, code: 'validation-failed' },
      { title: 'size_bytes as a string', request: () => submit(create({ size_bytes: '1024' })), status: 400, code: 'validation-failed', location: 'body/params/size_bytes' },
      { title: 'size_bytes above the maximum', request: () => submit(create({ size_bytes: 1125899906842625 })), status: 400, code: 'validation-failed', location: 'body/params/size_bytes' },
      { title: 'size_bytes 0', request: () => submit(create({ size_bytes: 0 })), status: 400, code: 'validation-failed', location: 'body/params/size_bytes' },
      { title: 'a fractional size_bytes', request: () => submit(create({ size_bytes: 1.5 })), status: 400, code: 'validation-failed', location: 'body/params/size_bytes' },
      { title: 'a name of 200 characters', request: () => submit(create({ name: longName })), status: 400, code: 'validation-failed', location: 'body/params/name' },
      { title: 'name ../etc', request: () => submit(create({ name: '../etc' })), status: 400, code: 'validation-failed', location: 'body/params/name' },
      { title: 'name a/b', request: () => submit(create({ name: 'a/b' })), status: 400, code: 'validation-failed', location: 'body/params/name' },
      { title: 'name .x', request: () => submit(create({ name: '.x' })), status: 400, code: 'validation-failed', location: 'body/params/name' },
      { title: 'an empty name', request: () => submit(create({ name: '' })), status: 400, code: 'validation-failed', location: 'body/params/name' },
      { title: 'a copy target name ../x', request: () => submit({ kind: 'volume.copy', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol1', target_name: '../x' } }), status: 400, code: 'validation-failed', location: 'body/params/target_name' },
      { title: 'device ../d0', request: () => submit(create({}, { device: '../d0' })), status: 400, code: 'validation-failed', location: 'body/device' },
      { title: 'an upper-case storage system id', request: () => submit(create({}, { storage_system_id: 'SS1' })), status: 400, code: 'validation-failed', location: 'body/storage_system_id' },
      { title: 'an unknown top-level field', request: () => submit(create({}, { priority: 1 })), status: 400, code: 'validation-failed', location: 'body' },
      { title: 'an unknown parameter', request: () => submit(create({ thin: true })), status: 400, code: 'validation-failed', location: 'body/params' },
      { title: 'a create without params', request: () => submit({ kind: 'volume.create', storage_system_id: 'ss1', device: 'd0' }), status: 400, code: 'validation-failed', location: 'body' },
      { title: 'a format with parameters', request: () => submit({ kind: 'device.format', storage_system_id: 'ss1', device: 'd0', params: { force: true } }), status: 400, code: 'validation-failed', location: 'body/params' },
      { title: 'a text/plain body', request: () => submit(JSON.stringify(create({})), { 'content-type': 'text/plain' }), status: 415, code: 'unsupported-media-type' },
      { title: 'a body over 1 MiB', request: () => submit(oversize(create({})), json), status: 413, code: 'payload-too-large' },
      unknownQuery('POST', '/v1/tasks', () => create({}), { 'idempotency-key': 'bad-input-query' }),
      { title: 'an unknown storage system', request: () => submit(create({}, { storage_system_id: 'ss9' })), status: 404, code: 'storage-system-not-found' },
      { title: 'an unknown device', request: () => submit(create({}, { device: 'd9' })), status: 404, code: 'device-not-found' },
      { title: 'a copy to an unknown device', request: () => submit({ kind: 'volume.copy', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol1', target_device: 'd9', target_name: 'c' } }), status: 404, code: 'device-not-found' },
      { title: 'a delete of an unknown volume', request: () => submit({ kind: 'volume.delete', storage_system_id: 'ss1', device: 'd0', params: { name: 'nope' } }), status: 404, code: 'volume-not-found' },
      { title: 'a delete of a volume on another device', request: () => submit({ kind: 'volume.delete', storage_system_id: 'ss1', device: 'd4', params: { name: 'vol1' } }), status: 404, code: 'volume-not-found' },
      { title: 'a resize of an unknown volume', request: () => submit({ kind: 'volume.resize', storage_system_id: 'ss1', device: 'd0', params: { name: 'nope', size_bytes: 1 } }), status: 404, code: 'volume-not-found' },
      { title: 'a copy of an unknown volume', request: () => submit({ kind: 'volume.copy', storage_system_id: 'ss1', device: 'd0', params: { name: 'nope', target_name: 'c' } }), status: 404, code: 'volume-not-found' },
      { title: 'a create larger than the device', request: () => submit(create({ size_bytes: MiB + 1 }, { device: 'd2' })), status: 422, code: 'insufficient-capacity' },
      { title: 'a resize larger than the device', request: () => submit({ kind: 'volume.resize', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol1', size_bytes: 2 * 1024 ** 3 } }), status: 422, code: 'insufficient-capacity' },
      { title: 'a task for an unavailable device', request: () => submit({ kind: 'device.probe', storage_system_id: 'ss1', device: 'd1' }), status: 422, code: 'device-unavailable' },
      { title: 'a create of a name that exists', request: () => submit(create({ name: 'vol1' })), status: 409, code: 'volume-exists' },
      { title: 'a copy onto a name that exists', request: () => submit({ kind: 'volume.copy', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol1', target_name: 'vol1' } }), status: 409, code: 'volume-exists' },
    ]);
  });

  describe('GET /v1/tasks', () => {
    const get = (query: string): InjectOptions => ({ method: 'GET', url: `/v1/tasks?${query}` });
    refuse([
      { title: 'limit=100000', request: () => get('limit=100000'), status: 400, code: 'validation-failed', location: 'querystring/limit' },
      { title: 'limit=abc', request: () => get('limit=abc'), status: 400, code: 'validation-failed', location: 'querystring/limit' },
      { title: 'state=done', request: () => get('state=done'), status: 400, code: 'validation-failed', location: 'querystring/state' },
      { title: 'kind=volume.explode', request: () => get('kind=volume.explode'), status: 400, code: 'validation-failed', location: 'querystring/kind' },
      { title: 'device=../d0', request: () => get('device=..%2Fd0'), status: 400, code: 'validation-failed', location: 'querystring/device' },
      { title: 'a cursor that is not base64 JSON', request: () => get('cursor=%21%21%21'), status: 400, code: 'validation-failed', location: 'querystring/cursor' },
      { title: 'a cursor of the wrong shape', request: () => get(`cursor=${cursorOf(['x'])}`), status: 400, code: 'validation-failed', location: 'querystring/cursor' },
      { title: 'a cursor whose time is not a time', request: () => get(`cursor=${cursorOf(['not-a-time', 'tsk_x'])}`), status: 400, code: 'validation-failed', location: 'querystring/cursor' },
      { title: 'a cursor over 512 characters', request: () => get(`cursor=${'a'.repeat(513)}`), status: 400, code: 'validation-failed', location: 'querystring/cursor' },
      unknownQuery('GET', '/v1/tasks'),
    ]);
  });

  describe('GET /v1/tasks/{id}', () => {
    refuse([
      { title: 'id ../etc', request: () => ({ method: 'GET', url: '/v1/tasks/..%2Fetc' }), status: 400, code: 'validation-failed', location: 'params/id' },
      { title: 'id with a dot', request: () => ({ method: 'GET', url: '/v1/tasks/tsk.1' }), status: 400, code: 'validation-failed', location: 'params/id' },
      { title: 'id of 65 characters', request: () => ({ method: 'GET', url: `/v1/tasks/${'t'.repeat(65)}` }), status: 400, code: 'validation-failed', location: 'params/id' },
      { title: 'an unknown task', request: () => ({ method: 'GET', url: '/v1/tasks/tsk_ghost' }), status: 404, code: 'task-not-found' },
      unknownQuery('GET', '/v1/tasks/tsk_ghost'),
    ]);
  });

  describe('POST /v1/tasks/{id}:cancel', () => {
    refuse([
      { title: 'id with a dot', request: () => ({ method: 'POST', url: '/v1/tasks/tsk.1:cancel' }), status: 400, code: 'validation-failed', location: 'params/id' },
      { title: 'id of 65 characters', request: () => ({ method: 'POST', url: `/v1/tasks/${'t'.repeat(65)}:cancel` }), status: 400, code: 'validation-failed', location: 'params/id' },
      { title: 'an unknown task', request: () => ({ method: 'POST', url: '/v1/tasks/tsk_ghost:cancel' }), status: 404, code: 'task-not-found' },
      { title: 'a dispatched task', request: () => ({ method: 'POST', url: `/v1/tasks/${taskId}:cancel` }), status: 409, code: 'task-not-cancellable' },
      unknownQuery('POST', '/v1/tasks/tsk_ghost:cancel'),
    ]);
  });

  describe('storage systems', () => {
    const get = (url: string): InjectOptions => ({ method: 'GET', url });
    refuse([
      { title: 'list with limit=100000', request: () => get('/v1/storage-systems?limit=100000'), status: 400, code: 'validation-failed', location: 'querystring/limit' },
      { title: 'list with limit=abc', request: () => get('/v1/storage-systems?limit=abc'), status: 400, code: 'validation-failed', location: 'querystring/limit' },
      { title: 'list with a bad cursor', request: () => get('/v1/storage-systems?cursor=%21%21%21'), status: 400, code: 'validation-failed', location: 'querystring/cursor' },
      unknownQuery('GET', '/v1/storage-systems'),
      { title: 'id ../etc', request: () => get('/v1/storage-systems/..%2Fetc'), status: 400, code: 'validation-failed', location: 'params/id' },
      { title: 'an upper-case id', request: () => get('/v1/storage-systems/SS1'), status: 400, code: 'validation-failed', location: 'params/id' },
      { title: 'an unknown storage system', request: () => get('/v1/storage-systems/ss9'), status: 404, code: 'storage-system-not-found' },
      unknownQuery('GET', '/v1/storage-systems/ss1'),
      { title: 'clusters of id ../etc', request: () => get('/v1/storage-systems/..%2Fetc/clusters'), status: 400, code: 'validation-failed', location: 'params/id' },
      { title: 'clusters with limit=100000', request: () => get('/v1/storage-systems/ss1/clusters?limit=100000'), status: 400, code: 'validation-failed', location: 'querystring/limit' },
      { title: 'clusters with a bad cursor', request: () => get(`/v1/storage-systems/ss1/clusters?cursor=${cursorOf([1, 2])}`), status: 400, code: 'validation-failed', location: 'querystring/cursor' },
      { title: 'clusters of an unknown storage system', request: () => get('/v1/storage-systems/ss9/clusters'), status: 404, code: 'storage-system-not-found' },
      unknownQuery('GET', '/v1/storage-systems/ss1/clusters'),
      { title: 'devices of id ../etc', request: () => get('/v1/storage-systems/..%2Fetc/devices'), status: 400, code: 'validation-failed', location: 'params/id' },
      { title: 'devices with limit=100000', request: () => get('/v1/storage-systems/ss1/devices?limit=100000'), status: 400, code: 'validation-failed', location: 'querystring/limit' },
      { title: 'devices with limit=abc', request: () => get('/v1/storage-systems/ss1/devices?limit=abc'), status: 400, code: 'validation-failed', location: 'querystring/limit' },
      { title: 'devices with state=broken', request: () => get('/v1/storage-systems/ss1/devices?state=broken'), status: 400, code: 'validation-failed', location: 'querystring/state' },
      { title: 'devices with cluster_id=../c0', request: () => get('/v1/storage-systems/ss1/devices?cluster_id=..%2Fc0'), status: 400, code: 'validation-failed', location: 'querystring/cluster_id' },
      { title: 'devices with a bad cursor', request: () => get('/v1/storage-systems/ss1/devices?cursor=%21%21%21'), status: 400, code: 'validation-failed', location: 'querystring/cursor' },
      { title: 'devices of an unknown storage system', request: () => get('/v1/storage-systems/ss9/devices'), status: 404, code: 'storage-system-not-found' },
      unknownQuery('GET', '/v1/storage-systems/ss1/devices'),
    ]);
  });
});

describe('input the router or the database cannot take', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => stopServer(server));

  it('paths the router cannot take are refused with a problem document and a request id: undecodable (400) or a segment over 512 characters (414)', async () => {
    for (const [url, status, code] of [
      ['/v1/tasks/%zz', 400, 'malformed-url'],
      [`/v1/tasks/${'a'.repeat(513)}`, 414, 'uri-too-long'],
    ] as const) {
      const response = await server.app.inject({ method: 'GET', url });
      assert.equal(response.statusCode, status, response.body);
      assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
      assert.equal(response.json<{ type: string }>().type, `urn:duplex:problem:${code}`);
      assert.equal(response.json<{ request_id: string }>().request_id, response.headers['x-request-id']);
    }
    // An agent id of 191 characters, the longest the contract allows, still reaches its route.
    const long = await server.app.inject({ method: 'GET', url: `/v1/agents/A:ss1:c0:${'n'.repeat(182)}` });
    assert.equal(long.statusCode, 404, long.body);
  });

  it('integers beyond what Postgres holds are refused with 400 by the contract, not 500 by the database', async () => {
    const agent = registration({ name: 'big-numbers' });
    const id = await registerAgent(server.app, agent);
    for (const [url, payload] of [
      ['/v1/agents', { ...agent, pid: 2 ** 31 }],
      [`/v1/agents/${id}/heartbeats`, { incarnation: 2 ** 31 }],
      [`/v1/agents/${id}/task-reports`, { reports: [{ task_id: 'tsk_x', attempt: 1, fencing_token: 2 ** 63, state: 'running' }] }],
    ] as const) {
      const response = await server.app.inject({ method: 'POST', url, payload });
      assert.equal(response.statusCode, 400, `${url}: ${response.body}`);
      assert.equal(response.json<{ type: string }>().type, 'urn:duplex:problem:validation-failed');
    }
  });

  it('text Postgres cannot store is refused with 400 wherever it is, and nothing is stored', async () => {
    const agent = registration({ name: 'nul-text' });
    const id = await registerAgent(server.app, agent);
    const before = await snapshot(server.db);
    for (const request of [
      { method: 'DELETE', url: '/v1/tokens/%00' },
      { method: 'POST', url: '/v1/agents', payload: { ...agent, name: 'nul\u0000' } },
      { method: 'POST', url: `/v1/agents/${id}/task-reports`, payload: { reports: [{ task_id: 'tsk_x', attempt: 1, fencing_token: 1, state: 'running', result: { note: 'a\u0000b' } }] } },
      { method: 'POST', url: `/v1/agents/${id}/task-reports`, payload: { reports: [{ task_id: 'tsk_x', attempt: 1, fencing_token: 1, state: 'failed', error: { type: 'x', title: '\ud800', status: 500 } }] } },
    ] as const) {
      const response = await server.app.inject(request as InjectOptions);
      assert.equal(response.statusCode, 400, `${request.method} ${request.url}: ${response.body}`);
      assert.equal(response.json<{ type: string }>().type, 'urn:duplex:problem:validation-failed');
    }
    assert.equal(await snapshot(server.db), before);
  });
});
