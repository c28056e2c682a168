import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { AgentApi, ServerApi } from '@duplex/contracts';
import { buildApp, loadServerConfig } from '@duplex/server';
import { problemKinds, type Database, type ProblemCode } from '@duplex/shared';
import { createTestDatabase, freePort, injectWithToken, testAdminToken, testJoinTokens, testServiceToken, waitFor, type TestDatabase } from '@duplex/testkit';
import type { FastifyInstance, FastifyServerOptions, LightMyRequestResponse } from 'fastify';

export type Schemas = ServerApi.components['schemas'];
export type Task = Schemas['Task'];
export type Problem = Schemas['Problem'];
export type TaskRequest = Schemas['TaskRequest'];
export type TaskReport = Schemas['TaskReport'];
export type InventoryReport = Schemas['InventoryReport'];
export type ReportedDevice = Schemas['ReportedDevice'];
export type AgentRegistrationRequest = Schemas['AgentRegistrationRequest'];
export type TaskDispatch = AgentApi.components['schemas']['TaskDispatch'];

export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;

export interface TestServer {
  app: FastifyInstance;
  db: Database;
  tdb: TestDatabase;
}

/** A server 'A' on a fresh migrated database, injected requests carrying the admin token; env entries override its configuration. */
export async function startServer(env: Record<string, string> = {}, logger: FastifyServerOptions['logger'] = false): Promise<TestServer> {
  const tdb = await createTestDatabase();
  // Nothing heartbeats in these tests: long agent leases keep dispatched attempts where the test put them.
  const app = injectWithToken(
    await buildApp({ config: loadServerConfig({ DATABASE_URL: tdb.url, SERVER_ID: 'A', AGENT_LEASE_TTL_MS: '600000', ADMIN_TOKEN: testAdminToken, JOIN_TOKENS: testJoinTokens, SERVICE_TOKEN: testServiceToken, ...env }), db: tdb.db, logger }),
  );
  await app.ready();
  return { app, db: tdb.db, tdb };
}

export async function stopServer(server: TestServer | undefined): Promise<void> {
  if (!server) return;
  await server.app.close();
  await server.tdb.drop();
}

/** An agent's HTTP endpoint that takes every dispatch (202) and records it. */
export interface FakeAgent {
  url: string;
  received: TaskDispatch[];
  /** The Authorization header of each dispatch, in order. */
  authorizations: (string | undefined)[];
  close(): Promise<void>;
}

export async function startFakeAgent(): Promise<FakeAgent> {
  const received: TaskDispatch[] = [];
  const authorizations: (string | undefined)[] = [];
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      if (request.method !== 'POST' || request.url !== '/v1/tasks') {
        response.writeHead(404).end();
        return;
      }
      const batch = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { tasks: TaskDispatch[] };
      received.push(...batch.tasks);
      authorizations.push(request.headers.authorization);
      response.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ accepted: batch.tasks.length, duplicates: 0 }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    authorizations,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A URL nothing listens on: dispatches to it fail at once. */
export async function closedUrl(): Promise<string> {
  return `http://127.0.0.1:${await freePort()}`;
}

export function registration(overrides: Partial<AgentRegistrationRequest> = {}): AgentRegistrationRequest {
  return {
    name: 'ss1-c0-A',
    server_id: 'A',
    storage_system_id: 'ss1',
    cluster_id: 'c0',
    url: 'http://127.0.0.1:9',
    pid: 4242,
    started_at: '2026-11-25T10:00:00Z',
    ...overrides,
  };
}

export function device(id: string, owner: string, overrides: Partial<ReportedDevice> = {}): ReportedDevice {
  return { id, home_cluster: owner, owner_cluster: owner, capacity_bytes: GiB, used_bytes: 0, volume_count: 0, state: 'available', reason: null, epoch: 1, ...overrides };
}

export function inventoryReport(overrides: Partial<InventoryReport> = {}): InventoryReport {
  return {
    storage_system_id: 'ss1',
    cluster_id: 'c0',
    version: 1,
    cluster_state: 'online',
    epoch: 1,
    recorded_at: '2026-11-25T10:00:00Z',
    devices: [device('d0', 'c0')],
    ...overrides,
  };
}

export async function registerAgent(app: FastifyInstance, overrides: Partial<AgentRegistrationRequest> = {}): Promise<string> {
  const response = await app.inject({ method: 'POST', url: '/v1/agents', payload: registration(overrides) });
  assert.ok(response.statusCode === 201 || response.statusCode === 200, response.body);
  return response.json<{ id: string }>().id;
}

export async function reportInventory(app: FastifyInstance, agentId: string, report: InventoryReport): Promise<{ accepted: boolean; version: number }> {
  const response = await app.inject({ method: 'PUT', url: `/v1/agents/${agentId}/inventory`, payload: report });
  assert.equal(response.statusCode, 200, response.body);
  return response.json();
}

export interface Topology {
  c0: string;
  c1: string;
}

/**
 * Storage system ss1 as this server's agents report it: c0 owns d0 (1 GiB), d1 (1 GiB,
 * unavailable) and d2 (1 MiB); c1 owns d4 (1 GiB).
 */
export async function setUpStorageSystem(app: FastifyInstance, agentUrl: string): Promise<Topology> {
  const c0 = await registerAgent(app, { name: 'ss1-c0-A', cluster_id: 'c0', url: agentUrl });
  const c1 = await registerAgent(app, { name: 'ss1-c1-A', cluster_id: 'c1', url: agentUrl, pid: 4243 });
  await reportInventory(
    app,
    c0,
    inventoryReport({
      cluster_id: 'c0',
      devices: [device('d0', 'c0'), device('d1', 'c0', { state: 'unavailable', reason: 'pulled' }), device('d2', 'c0', { capacity_bytes: MiB })],
    }),
  );
  await reportInventory(app, c1, inventoryReport({ cluster_id: 'c1', devices: [device('d4', 'c1')] }));
  return { c0, c1 };
}

/**
 * A server with storage system ss1 (setUpStorageSystem) whose agents are held unreachable:
 * the tasks it accepts stay `queued`, so tests see stable states.
 */
export async function startServerHoldingDispatch(): Promise<TestServer> {
  const server = await startServer();
  const { c0, c1 } = await setUpStorageSystem(server.app, 'http://127.0.0.1:9');
  holdDispatch(server.app, c0, c1);
  return server;
}

/** Keeps the dispatcher from routing to these agents, so submitted tasks stay queued. */
export function holdDispatch(app: FastifyInstance, ...agentIds: string[]): void {
  for (const id of agentIds) app.duplex.agents.markUnreachable(id, Number.POSITIVE_INFINITY);
}

let keyCounter = 0;
export const newKey = (): string => `key-${process.pid}-${Date.now()}-${++keyCounter}`;

export async function submitTask(app: FastifyInstance, body: unknown, key: string = newKey()): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/v1/tasks', headers: { 'idempotency-key': key }, payload: body as object });
}

/** Submits a task that must be accepted, and returns it. */
export async function acceptedTask(app: FastifyInstance, body: TaskRequest, key: string = newKey()): Promise<Task> {
  const response = await submitTask(app, body, key);
  assert.equal(response.statusCode, 202, response.body);
  return response.json<Task>();
}

export async function postReports(app: FastifyInstance, agentId: string, reports: TaskReport[]): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: `/v1/agents/${agentId}/task-reports`, payload: { reports } });
}

export interface TaskRowView {
  id: string;
  state: string;
  attempt: number;
  fencing_token: number | null;
  agent_id: string | null;
  cluster_id: string | null;
  result: unknown;
  error: Problem | null;
  finished_at: Date | null;
  traceparent: string | null;
}

export async function taskRow(db: Database, id: string): Promise<TaskRowView | undefined> {
  return db<TaskRowView>('tasks').where({ id }).first();
}

/** Waits for a task to reach a state and returns its row. */
export async function waitForState(db: Database, id: string, state: string, timeoutMs = 5_000): Promise<TaskRowView> {
  return waitFor(`task ${id} to be ${state}`, async () => {
    const row = await taskRow(db, id);
    return row?.state === state ? row : undefined;
  }, timeoutMs, 20);
}

export async function historyOf(db: Database, id: string): Promise<string[]> {
  const rows = await db<{ task_id: string; state: string }>('task_history').where({ task_id: id }).orderBy('id').select('state');
  return rows.map((row) => row.state);
}

export interface VolumeRowView {
  storage_system_id?: string;
  device: string;
  name: string;
  size_bytes: number;
  state: string;
  task_id: string | null;
}

export async function volumeRow(db: Database, deviceId: string, name: string): Promise<VolumeRowView | undefined> {
  return db<VolumeRowView>('volumes').where({ storage_system_id: 'ss1', device: deviceId, name }).first('device', 'name', 'size_bytes', 'state', 'task_id');
}

/** A volume in the catalog, as if a create task had succeeded. */
export async function insertVolume(db: Database, deviceId: string, name: string, sizeBytes = MiB): Promise<void> {
  await db('volumes').insert({ storage_system_id: 'ss1', device: deviceId, name, size_bytes: sizeBytes, state: 'present' });
}

const snapshotTables = ['tasks', 'task_history', 'volumes', 'events', 'agents', 'server_inventories'] as const;

export async function rowCounts(db: Database): Promise<Record<(typeof snapshotTables)[number], number>> {
  const entries = await Promise.all(
    snapshotTables.map(async (table) => [table, Number((await db(table).count<{ count: string }[]>({ count: '*' }))[0]?.count ?? -1)] as const),
  );
  return Object.fromEntries(entries) as Record<(typeof snapshotTables)[number], number>;
}

/** Every row of the tables a request could change, as text, to prove that nothing changed. */
export async function snapshot(db: Database): Promise<string> {
  const parts: string[] = [];
  for (const table of snapshotTables) {
    const rows = await db.raw<{ rows: { row: string }[] }>(`select to_jsonb(t)::text as row from ${table} t order by 1`);
    parts.push(`${table}: ${rows.rows.map((r) => r.row).join('\n')}`);
  }
  return parts.join('\n\n');
}

/** Asserts a problem+json answer of the given kind and returns the document. */
export function assertProblem(response: LightMyRequestResponse, status: number, code: ProblemCode): Problem {
  assert.equal(response.statusCode, status, response.body);
  assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
  const problem = response.json<Problem>();
  assert.equal(problem.type, `urn:duplex:problem:${code}`);
  assert.equal(problem.title, problemKinds[code].title);
  assert.equal(problem.status, status);
  assert.equal(problemKinds[code].status, status);
  assert.match(String(problem.request_id), /^req-[0-9a-f]{16}$/);
  assert.equal(problem.request_id, response.headers['x-request-id']);
  assert.equal(typeof problem.detail, 'string');
  return problem;
}
