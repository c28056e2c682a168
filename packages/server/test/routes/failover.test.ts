import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { waitFor } from '@duplex/testkit';
import {
  acceptedTask,
  closedUrl,
  device,
  historyOf,
  inventoryReport,
  MiB,
  registerAgent,
  reportInventory,
  startServer,
  stopServer,
  taskRow,
  type TestServer,
} from './helpers.ts';

const ownerOf = async (server: TestServer, id: string): Promise<{ server_id: string; state: string; agent_id: string | null } | undefined> =>
  server.db('tasks').where({ id }).first('server_id', 'state', 'agent_id');

/** Rows that another server, B, would have written: its lease and its agent in c0. */
async function serverB(server: TestServer, leaseMs: number): Promise<void> {
  await server.db('servers').insert({
    id: 'B',
    url: 'http://127.0.0.1:9',
    instance_id: 'b',
    started_at: new Date(),
    heartbeat_at: new Date(),
    lease_expires_at: new Date(Date.now() + leaseMs),
  });
  await server.db('agents').insert({
    id: 'B:ss1:c0:ss1-c0-B',
    name: 'ss1-c0-B',
    server_id: 'B',
    storage_system_id: 'ss1',
    cluster_id: 'c0',
    url: 'http://127.0.0.1:9',
    pid: 99,
    incarnation: 1,
    started_at: new Date(),
    registered_at: new Date(),
    heartbeat_at: new Date(),
    lease_expires_at: new Date(Date.now() + 600_000),
  });
}

describe('failover seen from one server', () => {
  let server: TestServer;

  before(async () => {
    // Short leases and grace, checked often, so that the test sees each step quickly.
    server = await startServer({ AGENT_LEASE_TTL_MS: '400', AGENT_GRACE_MS: '300', FAILOVER_CHECK_INTERVAL_MS: '50', DISPATCH_RETRY_MS: '50' });
    const agent = await registerAgent(server.app, { url: await closedUrl() });
    await reportInventory(server.app, agent, inventoryReport({ devices: [device('d0', 'c0'), device('d1', 'c0')] }));
    await serverB(server, 600_000);
  });
  after(() => stopServer(server));

  it('hands a cluster\u2019s queued tasks to the other server once its own agent is gone past the grace period', async () => {
    // A's agent never answers and stops heartbeating: its lease runs out, then the grace period.
    const task = await acceptedTask(server.app, { kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'handed', size_bytes: MiB } });
    const handed = await waitFor('the hand-over to B', async () => {
      const row = await ownerOf(server, task.id);
      return row?.server_id === 'B' ? row : undefined;
    });
    assert.equal(handed.state, 'queued');
    assert.ok((await historyOf(server.db, task.id)).includes('queued'));
  });

  it('requeues the attempts held by an agent whose lease ran out', async () => {
    const [row] = await server.db('tasks').insert({
      id: 'tsk_held_by_lost_agent',
      idempotency_key: 'held',
      request_hash: 'x',
      kind: 'device.probe',
      storage_system_id: 'ss1',
      device: 'd1',
      params: '{}',
      state: 'running',
      attempt: 1,
      fencing_token: 900,
      server_id: 'A',
      cluster_id: 'c0',
      agent_id: 'A:ss1:c0:ss1-c0-A',
    }).returning('id');
    assert.ok(row);
    const requeued = await waitFor('the attempt to leave the lost agent', async () => {
      const current = await taskRow(server.db, 'tsk_held_by_lost_agent');
      return current && current.state !== 'running' ? current : undefined;
    });
    assert.equal(requeued.agent_id, null);
  });

  it('adopts the open tasks of a server whose lease ran out', async () => {
    await server.db('servers').insert({ id: 'C', url: 'http://127.0.0.1:9', instance_id: 'c', started_at: new Date(), heartbeat_at: new Date(), lease_expires_at: new Date(Date.now() - 1000) });
    await server.db('tasks').insert({
      id: 'tsk_of_dead_server',
      idempotency_key: 'orphan',
      request_hash: 'x',
      kind: 'device.probe',
      storage_system_id: 'ss1',
      device: 'd1',
      params: '{}',
      state: 'dispatched',
      attempt: 1,
      fencing_token: 901,
      server_id: 'C',
      cluster_id: 'c0',
      agent_id: 'C:ss1:c0:ss1-c0-C',
    });
    const adopted = await waitFor('A to adopt the task', async () => {
      const current = await ownerOf(server, 'tsk_of_dead_server');
      return current && current.server_id !== 'C' ? current : undefined;
    });
    // Only A runs here; having adopted the task, it may at once hand it on to B (A's agent in c0 is gone).
    assert.ok(['A', 'B'].includes(adopted.server_id), adopted.server_id);
    assert.notEqual(adopted.agent_id, 'C:ss1:c0:ss1-c0-C', 'the dead server\u2019s attempt is not kept');
  });
});
