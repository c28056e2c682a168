import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MiB, assertProblem, historyOf, newKey, startServerHoldingDispatch, stopServer, submitTask, volumeRow, type Task, type TestServer } from './helpers.ts';

// Single submissions that arrive together are committed together; each is still answered on its own.
describe('POST /v1/tasks under concurrent submissions', () => {
  let server: TestServer;

  before(async () => {
    server = await startServerHoldingDispatch();
  });
  after(() => stopServer(server));

  const create = (name: string, deviceId = 'd0') => ({ kind: 'volume.create', storage_system_id: 'ss1', device: deviceId, params: { name, size_bytes: MiB } });

  it('accepts 200 concurrent submissions in fewer commits, each with its own row, history and request id', async () => {
    const responses = await Promise.all(Array.from({ length: 200 }, (_, index) => submitTask(server.app, create(`gc-${index}`, index % 2 ? 'd0' : 'd4'))));
    for (const response of responses) assert.equal(response.statusCode, 202, response.body);
    const tasks = responses.map((response) => response.json<Task>());
    assert.equal(new Set(tasks.map((task) => task.id)).size, 200);
    const rows: { id: string; request_id: string }[] = await server.db('tasks').whereIn('id', tasks.map((task) => task.id)).select('id', 'request_id');
    assert.equal(rows.length, 200);
    const requestIds = new Map(rows.map((row) => [row.id, row.request_id]));
    responses.forEach((response, index) => assert.equal(requestIds.get(tasks[index]!.id), response.headers['x-request-id'], 'each task keeps the id of the request that sent it'));
    for (const task of tasks.slice(0, 5)) assert.deepEqual(await historyOf(server.db, task.id), ['queued']);
    // Rows inserted by one transaction share its id (xmin).
    const { rows: commits } = await server.db.raw<{ rows: { n: number }[] }>('select count(distinct xmin::text)::int as n from tasks where id = any(?)', [tasks.map((task) => task.id)]);
    assert.ok(commits[0]!.n < 200, `200 submissions took ${commits[0]!.n} commits`);
  });

  it('gives one task to concurrent submissions under one key, and refuses the one with another body', async () => {
    const key = newKey();
    const [first, second, third] = await Promise.all([
      submitTask(server.app, create('same-key'), key),
      submitTask(server.app, create('same-key'), key),
      submitTask(server.app, create('other-body'), key),
    ]);
    assert.equal(first!.statusCode, 202);
    assert.equal(second!.statusCode, 202);
    assert.equal(second!.headers['idempotent-replayed'], 'true');
    assert.equal(second!.json<Task>().id, first!.json<Task>().id);
    assertProblem(third!, 422, 'idempotency-key-reused');
    assert.equal(Number((await server.db('tasks').where({ idempotency_key: key }).count({ n: '*' }))[0]!.n), 1);
  });

  it('accepts one of two concurrent creations of the same volume under different keys, and refuses the other', async () => {
    const [a, b] = await Promise.all([submitTask(server.app, create('contested')), submitTask(server.app, create('contested'))]);
    const statuses = [a!.statusCode, b!.statusCode].sort();
    assert.deepEqual(statuses, [202, 409]);
    const winner = (a!.statusCode === 202 ? a! : b!).json<Task>();
    assert.equal((await volumeRow(server.db, 'd0', 'contested'))?.task_id, winner.id);
    assertProblem(a!.statusCode === 409 ? a! : b!, 409, 'volume-exists');
  });
});
