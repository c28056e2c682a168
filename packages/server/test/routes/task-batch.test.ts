import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ServerApi } from '@duplex/contracts';
import {
  MiB,
  assertProblem,
  historyOf,
  insertVolume,
  newKey,
  snapshot,
  startServerHoldingDispatch,
  stopServer,
  taskRow,
  volumeRow,
  type TaskRequest,
  type TestServer,
} from './helpers.ts';

type BatchResult = ServerApi.components['schemas']['TaskBatchResult'];

// Agents are held unreachable, so accepted tasks stay `queued`.
describe('POST /v1/tasks:batch', () => {
  let server: TestServer;

  before(async () => {
    server = await startServerHoldingDispatch();
    for (const name of ['batch-del', 'batch-res']) await insertVolume(server.db, 'd0', name, 4 * MiB);
  });
  after(() => stopServer(server));

  /** `key` null sends no Idempotency-Key. */
  const post = (tasks: unknown[], key: string | null = newKey()) =>
    server.app.inject({ method: 'POST', url: '/v1/tasks:batch', headers: key === null ? {} : { 'idempotency-key': key }, payload: { tasks } });

  const create = (name: string, deviceId = 'd0'): TaskRequest => ({ kind: 'volume.create', storage_system_id: 'ss1', device: deviceId, params: { name, size_bytes: MiB } });

  it('accepts and refuses each task on its own, in one commit', async () => {
    const key = newKey();
    const response = await post(
      [
        create('b1'),
        create('b2', 'd4'),
        create('b1'), // the same name twice in one request: the first wins
        { kind: 'volume.delete', storage_system_id: 'ss1', device: 'd0', params: { name: 'batch-del' } },
        { kind: 'volume.delete', storage_system_id: 'ss1', device: 'd0', params: { name: 'batch-del' } },
        { kind: 'volume.resize', storage_system_id: 'ss1', device: 'd0', params: { name: 'missing', size_bytes: MiB } },
        create('b3', 'd9'),
        create('b4', 'd1'), // d1 is unavailable
        { kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' },
      ],
      key,
    );
    assert.equal(response.statusCode, 200, response.body);
    const body = response.json<BatchResult>();
    assert.deepEqual(
      body.results.map((result) => [result.index, result.status, result.problem?.type.replace('urn:duplex:problem:', '') ?? result.task?.state]),
      [
        [0, 202, 'queued'],
        [1, 202, 'queued'],
        [2, 409, 'volume-exists'],
        [3, 202, 'queued'],
        [4, 404, 'volume-not-found'],
        [5, 404, 'volume-not-found'],
        [6, 404, 'device-not-found'],
        [7, 422, 'device-unavailable'],
        [8, 202, 'queued'],
      ],
    );
    assert.deepEqual([body.accepted, body.replayed, body.refused], [4, 0, 5]);

    // Rows, catalog and history agree with the answer; refused tasks left nothing behind.
    const accepted = body.results.filter((result) => result.task).map((result) => result.task!.id);
    for (const id of accepted) assert.deepEqual(await historyOf(server.db, id), ['queued']);
    const rows: { idempotency_key: string }[] = await server.db('tasks').whereIn('id', accepted).orderBy('idempotency_key').select('idempotency_key');
    assert.deepEqual(rows.map((row) => row.idempotency_key), [`${key}/0`, `${key}/1`, `${key}/3`, `${key}/8`]);
    assert.equal((await volumeRow(server.db, 'd0', 'b1'))?.task_id, body.results[0]!.task!.id);
    assert.equal((await volumeRow(server.db, 'd0', 'batch-del'))?.state, 'deleting');
    assert.equal(await volumeRow(server.db, 'd9', 'b3'), undefined);
    const events: { count: string }[] = await server.db('events').where({ type: 'task.state_changed' }).whereIn('task_id', accepted).count('* as count');
    assert.equal(Number(events[0]?.count), 4);

    // The same request again replays every accepted task and changes nothing.
    const before = await snapshot(server.db);
    const again = (await post([create('b1'), create('b2', 'd4')], key)).json<BatchResult>();
    assert.deepEqual(
      again.results.map((result) => [result.status, result.replayed, result.task?.id]),
      [
        [202, true, body.results[0]!.task!.id],
        [202, true, body.results[1]!.task!.id],
      ],
    );
    assert.deepEqual([again.accepted, again.replayed, again.refused], [0, 2, 0]);
    // Another task at a position already used under this key is refused.
    const other = (await post([create('b9')], key)).json<BatchResult>();
    assert.equal(other.results[0]?.status, 422);
    assert.equal(other.results[0]?.problem?.type, 'urn:duplex:problem:idempotency-key-reused');
    assert.equal(await snapshot(server.db), before);
  });

  it('a task submitted alone can be replayed through the batch under its derived key', async () => {
    const key = newKey();
    const single = await server.app.inject({ method: 'POST', url: '/v1/tasks', headers: { 'idempotency-key': `${key}/0` }, payload: create('solo') });
    assert.equal(single.statusCode, 202);
    const batch = (await post([create('solo')], key)).json<BatchResult>();
    assert.equal(batch.results[0]?.task?.id, single.json<{ id: string }>().id);
    assert.equal((await taskRow(server.db, single.json<{ id: string }>().id))?.state, 'queued');
  });

  it('refuses a malformed request as a whole and changes nothing', async () => {
    const before = await snapshot(server.db);
    assertProblem(await post([create('x1')], null), 400, 'validation-failed');
    assertProblem(await post([]), 400, 'validation-failed');
    assertProblem(await post([create('x2'), { kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'x3' } }]), 400, 'validation-failed');
    assertProblem(await post(Array.from({ length: 1001 }, (_, index) => create(`many${index}`))), 400, 'validation-failed');
    assertProblem(await post([create('x4')], 'k'.repeat(201)), 400, 'validation-failed');
    assert.equal(await snapshot(server.db), before);
  });

  it('commits a thousand tasks in one request', async () => {
    const response = await post(Array.from({ length: 1000 }, (_, index) => create(`bulk-${index}`, index % 2 === 0 ? 'd0' : 'd4')));
    assert.equal(response.statusCode, 200);
    const body = response.json<BatchResult>();
    assert.equal(body.accepted, 1000);
    const count: { count: string }[] = await server.db('tasks').where('idempotency_key', 'like', '%/%').andWhere('state', 'queued').count('* as count');
    assert.ok(Number(count[0]?.count) >= 1000);
    const volumes: { count: string }[] = await server.db('volumes').where('name', 'like', 'bulk-%').count('* as count');
    assert.equal(Number(volumes[0]?.count), 1000);
  });
});
