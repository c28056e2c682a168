import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ServerApi } from '@duplex/contracts';
import { MiB, newKey, startServerHoldingDispatch, stopServer, type TestServer } from './helpers.ts';

type BatchResult = ServerApi.components['schemas']['TaskBatchResult'];

// A batch commits in one statement; retries of it sent at the same time must still make each task once.
describe('POST /v1/tasks:batch sent several times at once', () => {
  let server: TestServer;

  before(async () => {
    server = await startServerHoldingDispatch();
  });
  after(() => stopServer(server));

  it('makes each task once, and answers the copies with the same tasks as replays', async () => {
    const key = newKey();
    const tasks = Array.from({ length: 50 }, (_, index) => ({ kind: 'volume.create', storage_system_id: 'ss1', device: index % 2 ? 'd0' : 'd4', params: { name: `race-${index}`, size_bytes: MiB } }));
    const responses = await Promise.all(Array.from({ length: 4 }, () => server.app.inject({ method: 'POST', url: '/v1/tasks:batch', headers: { 'idempotency-key': key }, payload: { tasks } })));
    const bodies = responses.map((response) => {
      assert.equal(response.statusCode, 200, response.body);
      return response.json<BatchResult>();
    });
    // One request made the tasks; the others, whichever step they raced on, replay them.
    assert.deepEqual(bodies.map((body) => [body.accepted, body.replayed, body.refused]).sort(), [[0, 50, 0], [0, 50, 0], [0, 50, 0], [50, 0, 0]]);
    const ids = bodies.map((body) => body.results.map((result) => result.task?.id));
    for (const answer of ids) assert.deepEqual(answer, ids[0]);

    const made = server.db('tasks').select('id').where('idempotency_key', 'like', `${key}/%`);
    const count = async (query: PromiseLike<{ n: string | number }[]>) => Number((await query)[0]!.n);
    assert.equal(await count(server.db('tasks').where('idempotency_key', 'like', `${key}/%`).count({ n: '*' })), 50);
    assert.equal(await count(server.db('task_history').whereIn('task_id', made).count({ n: '*' })), 50);
    assert.equal(await count(server.db('events').whereIn('task_id', made).count({ n: '*' })), 50);
    assert.equal(await count(server.db('volumes').where('name', 'like', 'race-%').count({ n: '*' })), 50);
  });
});
