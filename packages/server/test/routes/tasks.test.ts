import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import {
  MiB,
  acceptedTask,
  assertProblem,
  device,
  historyOf,
  holdDispatch,
  insertVolume,
  inventoryReport,
  newKey,
  registerAgent,
  reportInventory,
  rowCounts,
  setUpStorageSystem,
  snapshot,
  startServer,
  stopServer,
  submitTask,
  taskRow,
  volumeRow,
  type Task,
  type TaskRequest,
  type TestServer,
} from './helpers.ts';

interface TaskPage {
  items: Task[];
  next_cursor: string | null;
}

// Every agent is held unreachable, so accepted tasks stay `queued`: these tests see stable states.
describe('tasks', () => {
  let server: TestServer;

  before(async () => {
    server = await startServer();
    const { c0, c1 } = await setUpStorageSystem(server.app, 'http://127.0.0.1:9');
    const ss2 = await registerAgent(server.app, { name: 'ss2-c0-A', storage_system_id: 'ss2' });
    await reportInventory(server.app, ss2, inventoryReport({ storage_system_id: 'ss2', devices: [device('e0', 'c0'), device('e1', 'c0')] }));
    holdDispatch(server.app, c0, c1, ss2);
    for (const name of ['vol-del', 'vol-res', 'vol-src', 'vol-cancel-del']) await insertVolume(server.db, 'd0', name, 4 * MiB);
  });
  after(() => stopServer(server));

  describe('POST /v1/tasks accepts every kind', () => {
    const cases: { title: string; body: TaskRequest; params: Record<string, unknown>; volume?: { device: string; name: string; state: string; size_bytes: number } }[] = [
      {
        title: 'volume.create reserves the name',
        body: { kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'new1', size_bytes: MiB } },
        params: { name: 'new1', size_bytes: MiB },
        volume: { device: 'd0', name: 'new1', state: 'creating', size_bytes: MiB },
      },
      {
        title: 'volume.delete marks the volume deleting',
        body: { kind: 'volume.delete', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol-del' } },
        params: { name: 'vol-del' },
        volume: { device: 'd0', name: 'vol-del', state: 'deleting', size_bytes: 4 * MiB },
      },
      {
        title: 'volume.resize leaves the catalog until it succeeds',
        body: { kind: 'volume.resize', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol-res', size_bytes: 8 * MiB } },
        params: { name: 'vol-res', size_bytes: 8 * MiB },
      },
      {
        title: 'volume.copy on the same device reserves the target name',
        body: { kind: 'volume.copy', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol-src', target_name: 'copy-here' } },
        params: { name: 'vol-src', target_name: 'copy-here' },
        volume: { device: 'd0', name: 'copy-here', state: 'creating', size_bytes: 0 },
      },
      {
        title: 'volume.copy with target_device reserves the name on the other cluster’s device',
        body: { kind: 'volume.copy', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol-src', target_device: 'd4', target_name: 'copy-there' } },
        params: { name: 'vol-src', target_device: 'd4', target_name: 'copy-there' },
        volume: { device: 'd4', name: 'copy-there', state: 'creating', size_bytes: 0 },
      },
      {
        title: 'device.format with empty params',
        body: { kind: 'device.format', storage_system_id: 'ss1', device: 'd0', params: {} },
        params: {},
      },
      {
        title: 'device.probe without params',
        body: { kind: 'device.probe', storage_system_id: 'ss1', device: 'd4' },
        params: {},
      },
    ];

    for (const { title, body, params, volume } of cases) {
      it(`${body.kind}: ${title}`, async () => {
        const counts = await rowCounts(server.db);
        const response = await submitTask(server.app, body);
        assert.equal(response.statusCode, 202, response.body);
        assert.equal(response.headers['idempotent-replayed'], undefined);
        const task = response.json<Task>();
        assert.match(task.id, /^tsk_[0-9a-z]{25}$/);
        assert.equal(response.headers.location, `/v1/tasks/${task.id}`);
        assert.deepEqual(
          { ...task, id: '', created_at: '', updated_at: '' },
          {
            id: '',
            kind: body.kind,
            storage_system_id: 'ss1',
            device: body.device,
            params,
            state: 'queued',
            attempt: 0,
            fencing_token: null,
            server_id: 'A',
            cluster_id: null,
            agent_id: null,
            result: null,
            error: null,
            created_at: '',
            updated_at: '',
            dispatched_at: null,
            finished_at: null,
          },
        );
        const row = await taskRow(server.db, task.id);
        assert.equal(row?.state, 'queued');
        assert.deepEqual(await historyOf(server.db, task.id), ['queued']);
        const events = await server.db('events').where({ task_id: task.id }).select('type', 'payload');
        assert.deepEqual(events, [{ type: 'task.state_changed', payload: { task_id: task.id, state: 'queued', attempt: 0, agent_id: null, server_id: 'A' } }]);
        const after = await rowCounts(server.db);
        assert.equal(after.tasks, counts.tasks + 1);
        assert.equal(after.volumes, counts.volumes + (volume && volume.state === 'creating' ? 1 : 0));
        if (volume) {
          assert.deepEqual(await volumeRow(server.db, volume.device, volume.name), { ...volume, task_id: task.id });
        }
      });
    }

    it('stores the request id and key that submitted the task', async () => {
      const key = newKey();
      const response = await server.app.inject({
        method: 'POST',
        url: '/v1/tasks',
        headers: { 'idempotency-key': key, 'x-request-id': 'req-from-client-1' },
        payload: { kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' },
      });
      assert.equal(response.statusCode, 202);
      assert.equal(response.headers['x-request-id'], 'req-from-client-1');
      const row = await server.db('tasks').where({ id: response.json().id }).first('request_id', 'idempotency_key');
      assert.equal(row.request_id, 'req-from-client-1');
      assert.equal(row.idempotency_key, key);
    });

    it('accepts a 128-character volume name, the longest the contract allows', async () => {
      const name = `v${'x'.repeat(127)}`;
      const task = await acceptedTask(server.app, { kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name, size_bytes: 1 } });
      assert.equal((await volumeRow(server.db, 'd0', name))?.task_id, task.id);
    });
  });

  describe('Idempotency-Key', () => {
    it('the same key and body answer the original task, marked replayed, without a second row', async () => {
      const key = newKey();
      const body: TaskRequest = { kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'idem1', size_bytes: MiB } };
      const first = await submitTask(server.app, body, key);
      assert.equal(first.statusCode, 202);
      const counts = await rowCounts(server.db);
      const state = await snapshot(server.db);
      const again = await submitTask(server.app, body, key);
      assert.equal(again.statusCode, 202);
      assert.equal(again.headers['idempotent-replayed'], 'true');
      assert.equal(again.headers.location, first.headers.location);
      assert.deepEqual(again.json(), first.json());
      assert.deepEqual(await rowCounts(server.db), counts);
      assert.equal(await snapshot(server.db), state);
      assert.equal(Number((await server.db('tasks').where({ idempotency_key: key }).count<{ count: string }[]>({ count: '*' }))[0]?.count), 1);
    });

    it('the same body with its keys in another order is the same request', async () => {
      const key = newKey();
      const first = await acceptedTask(server.app, { kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'idem2', size_bytes: 10 } }, key);
      const reordered = await server.app.inject({
        method: 'POST',
        url: '/v1/tasks',
        headers: { 'idempotency-key': key, 'content-type': 'application/json' },
        payload: '{"params":{"size_bytes":10,"name":"idem2"},"device":"d0","storage_system_id":"ss1","kind":"volume.create"}',
      });
      assert.equal(reordered.statusCode, 202);
      assert.equal(reordered.headers['idempotent-replayed'], 'true');
      assert.equal(reordered.json().id, first.id);
    });

    it('the same key with another body is 422 idempotency-key-reused and changes nothing', async () => {
      const key = newKey();
      const first = await acceptedTask(server.app, { kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'idem3', size_bytes: 10 } }, key);
      const state = await snapshot(server.db);
      const response = await submitTask(server.app, { kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'idem3', size_bytes: 11 } }, key);
      const problem = assertProblem(response, 422, 'idempotency-key-reused');
      assert.match(problem.detail ?? '', new RegExp(first.id));
      assert.equal(response.headers.location, undefined);
      assert.equal(await snapshot(server.db), state);
    });

    it('a replay answers the task as it is now', async () => {
      const key = newKey();
      const body: TaskRequest = { kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' };
      const first = await acceptedTask(server.app, body, key);
      await server.app.inject({ method: 'POST', url: `/v1/tasks/${first.id}:cancel` });
      const again = await submitTask(server.app, body, key);
      assert.equal(again.statusCode, 202);
      assert.equal(again.json().id, first.id);
      assert.equal(again.json().state, 'cancelled');
    });

    it('a replay is answered with its task even when the inventory would now refuse the request', async () => {
      const agent = await registerAgent(server.app, { name: 'ss3-c0-A', storage_system_id: 'ss3' });
      holdDispatch(server.app, agent);
      await reportInventory(server.app, agent, inventoryReport({ storage_system_id: 'ss3', devices: [device('f0', 'c0')] }));
      const key = newKey();
      const body: TaskRequest = { kind: 'volume.create', storage_system_id: 'ss3', device: 'f0', params: { name: 'kept', size_bytes: MiB } };
      const first = await acceptedTask(server.app, body, key);
      await reportInventory(server.app, agent, inventoryReport({ storage_system_id: 'ss3', version: 2, devices: [device('f0', 'c0', { state: 'unavailable', reason: 'pulled' })] }));
      const again = await submitTask(server.app, body, key);
      assert.equal(again.statusCode, 202, again.body);
      assert.equal(again.headers['idempotent-replayed'], 'true');
      assert.equal(again.json().id, first.id);
      assertProblem(await submitTask(server.app, { ...body, params: { name: 'other', size_bytes: MiB } }, newKey()), 422, 'device-unavailable');
      assert.equal(Number((await server.db('tasks').where({ storage_system_id: 'ss3' }).count<{ count: string }[]>({ count: '*' }))[0]?.count), 1);
    });

    it('a key is forgotten once it expires (24 hours by default), so it can name a new request', async () => {
      const key = newKey();
      const old = await acceptedTask(server.app, { kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' }, key);
      await server.db('tasks').where({ id: old.id }).update({ created_at: server.db.raw(`now() - interval '25 hours'`) });
      const response = await submitTask(server.app, { kind: 'device.probe', storage_system_id: 'ss1', device: 'd4' }, key);
      assert.equal(response.statusCode, 202, response.body);
      assert.notEqual(response.json().id, old.id);
      assert.equal(response.json().device, 'd4');
    });
  });

  describe('GET /v1/tasks/{id}', () => {
    it('answers the task', async () => {
      const submitted = await acceptedTask(server.app, { kind: 'volume.resize', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol-res', size_bytes: 2 * MiB } });
      const response = await server.app.inject({ method: 'GET', url: `/v1/tasks/${submitted.id}` });
      assert.equal(response.statusCode, 200);
      assert.deepEqual(response.json(), submitted);
    });

    it('an unknown task is 404 task-not-found', async () => {
      const problem = assertProblem(await server.app.inject({ method: 'GET', url: '/v1/tasks/tsk_nope' }), 404, 'task-not-found');
      assert.equal(problem.instance, '/v1/tasks/tsk_nope');
    });
  });

  describe('GET /v1/tasks', () => {
    // Storage system ss2 holds only these tasks, newest last.
    const submitted: Task[] = [];
    before(async () => {
      submitted.push(await acceptedTask(server.app, { kind: 'volume.create', storage_system_id: 'ss2', device: 'e0', params: { name: 'l1', size_bytes: 1 } }));
      submitted.push(await acceptedTask(server.app, { kind: 'device.probe', storage_system_id: 'ss2', device: 'e0' }));
      submitted.push(await acceptedTask(server.app, { kind: 'device.probe', storage_system_id: 'ss2', device: 'e1' }));
      submitted.push(await acceptedTask(server.app, { kind: 'device.format', storage_system_id: 'ss2', device: 'e1', params: {} }));
      const cancelled = await server.app.inject({ method: 'POST', url: `/v1/tasks/${submitted[1]!.id}:cancel` });
      assert.equal(cancelled.statusCode, 200);
    });

    const list = async (query: string): Promise<TaskPage> => {
      const response = await server.app.inject({ method: 'GET', url: `/v1/tasks?storage_system_id=ss2${query}` });
      assert.equal(response.statusCode, 200, response.body);
      return response.json<TaskPage>();
    };
    const ids = (page: TaskPage) => page.items.map((task) => task.id);
    const expected = (...indexes: number[]) => indexes.map((index) => submitted[index]!.id);

    it('lists newest first', async () => {
      const page = await list('');
      assert.deepEqual(ids(page), expected(3, 2, 1, 0));
      assert.equal(page.next_cursor, null);
      assert.deepEqual(page.items.map((task) => task.state), ['queued', 'queued', 'cancelled', 'queued']);
    });

    it('filters by state, kind and device', async () => {
      assert.deepEqual(ids(await list('&state=cancelled')), expected(1));
      assert.deepEqual(ids(await list('&state=queued')), expected(3, 2, 0));
      assert.deepEqual(ids(await list('&kind=device.probe')), expected(2, 1));
      assert.deepEqual(ids(await list('&device=e1')), expected(3, 2));
      assert.deepEqual(ids(await list('&device=e1&kind=device.probe&state=queued')), expected(2));
      assert.deepEqual(ids(await list('&state=succeeded')), []);
    });

    it('pages with limit=1 through every task exactly once', async () => {
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page: TaskPage = await list(`&limit=1${cursor ? `&cursor=${cursor}` : ''}`);
        assert.equal(page.items.length, 1);
        seen.push(...ids(page));
        cursor = page.next_cursor;
        pages += 1;
      } while (cursor !== null && pages < 10);
      assert.deepEqual(seen, expected(3, 2, 1, 0));
    });

    it('pages through tasks created in the same millisecond without losing any', async () => {
      // Postgres keeps microseconds; the cursor must not round them away.
      const base = { request_hash: 'x', kind: 'device.probe', storage_system_id: 'pg', device: 'p0', params: '{}', state: 'queued', server_id: 'A' };
      await server.db('tasks').insert([
        { ...base, id: 'tsk_same_ms_1', created_at: '2026-11-25T10:00:00.123100Z' },
        { ...base, id: 'tsk_same_ms_2', created_at: '2026-11-25T10:00:00.123200Z' },
        { ...base, id: 'tsk_same_ms_3', created_at: '2026-11-25T10:00:00.123300Z' },
      ]);
      const seen: string[] = [];
      let cursor: string | null = null;
      for (let pages = 0; pages < 10; pages += 1) {
        const response: LightMyRequestResponse = await server.app.inject({ method: 'GET', url: `/v1/tasks?storage_system_id=pg&limit=1${cursor ? `&cursor=${cursor}` : ''}` });
        assert.equal(response.statusCode, 200, response.body);
        const page: TaskPage = response.json<TaskPage>();
        seen.push(...ids(page));
        cursor = page.next_cursor;
        if (cursor === null) break;
      }
      assert.deepEqual(seen, ['tsk_same_ms_3', 'tsk_same_ms_2', 'tsk_same_ms_1']);
    });
  });

  describe('POST /v1/tasks/{id}:cancel', () => {
    it('cancels a queued create and releases the reserved name', async () => {
      const task = await acceptedTask(server.app, { kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'to-cancel', size_bytes: MiB } });
      assert.equal((await volumeRow(server.db, 'd0', 'to-cancel'))?.state, 'creating');
      const response = await server.app.inject({ method: 'POST', url: `/v1/tasks/${task.id}:cancel` });
      assert.equal(response.statusCode, 200);
      const cancelled = response.json<Task>();
      assert.equal(cancelled.id, task.id);
      assert.equal(cancelled.state, 'cancelled');
      assert.equal(cancelled.attempt, 0);
      assert.ok(cancelled.finished_at && Date.parse(cancelled.finished_at) >= Date.parse(task.created_at));
      assert.equal((await taskRow(server.db, task.id))?.state, 'cancelled');
      assert.equal(await volumeRow(server.db, 'd0', 'to-cancel'), undefined);
      assert.deepEqual(await historyOf(server.db, task.id), ['queued', 'cancelled']);
      const events = await server.db('events').where({ task_id: task.id }).orderBy('id').select('payload');
      assert.deepEqual(events.map((event: { payload: { state: string } }) => event.payload.state), ['queued', 'cancelled']);
      // The name is free again.
      await acceptedTask(server.app, { kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'to-cancel', size_bytes: MiB } });
    });

    it('cancelling a queued delete restores the volume', async () => {
      const task = await acceptedTask(server.app, { kind: 'volume.delete', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol-cancel-del' } });
      assert.equal((await volumeRow(server.db, 'd0', 'vol-cancel-del'))?.state, 'deleting');
      assert.equal((await server.app.inject({ method: 'POST', url: `/v1/tasks/${task.id}:cancel` })).statusCode, 200);
      assert.equal((await volumeRow(server.db, 'd0', 'vol-cancel-del'))?.state, 'present');
    });

    it('cancelling again is 409 task-not-cancellable and changes nothing', async () => {
      const task = await acceptedTask(server.app, { kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' });
      assert.equal((await server.app.inject({ method: 'POST', url: `/v1/tasks/${task.id}:cancel` })).statusCode, 200);
      const state = await snapshot(server.db);
      const problem = assertProblem(await server.app.inject({ method: 'POST', url: `/v1/tasks/${task.id}:cancel` }), 409, 'task-not-cancellable');
      assert.match(problem.detail ?? '', /cancelled/);
      assert.equal(problem.instance, `/v1/tasks/${task.id}:cancel`);
      assert.equal(await snapshot(server.db), state);
    });

    it('an unknown task is 404 task-not-found', async () => {
      const state = await snapshot(server.db);
      assertProblem(await server.app.inject({ method: 'POST', url: '/v1/tasks/tsk_missing:cancel' }), 404, 'task-not-found');
      assert.equal(await snapshot(server.db), state);
    });

    it('cancelling a create and the delete queued behind it leaves no phantom volume', async () => {
      const create = await acceptedTask(server.app, { kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'phantom', size_bytes: MiB } });
      const del = await submitTask(server.app, { kind: 'volume.delete', storage_system_id: 'ss1', device: 'd0', params: { name: 'phantom' } });
      if (del.statusCode === 202) {
        assert.equal((await server.app.inject({ method: 'POST', url: `/v1/tasks/${del.json<Task>().id}:cancel` })).statusCode, 200);
      }
      assert.equal((await server.app.inject({ method: 'POST', url: `/v1/tasks/${create.id}:cancel` })).statusCode, 200);
      // Neither task ran, so the catalog must not list the volume.
      assert.equal(await volumeRow(server.db, 'd0', 'phantom'), undefined);
    });
  });
});
