import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { waitFor } from '@duplex/testkit';
import {
  MiB,
  acceptedTask,
  assertProblem,
  closedUrl,
  device,
  historyOf,
  holdDispatch,
  inventoryReport,
  insertVolume,
  postReports,
  reportInventory,
  setUpStorageSystem,
  snapshot,
  startFakeAgent,
  startServer,
  stopServer,
  taskRow,
  volumeRow,
  waitForState,
  type FakeAgent,
  type TaskReport,
  type TaskRequest,
  type TestServer,
  type Topology,
} from './helpers.ts';

interface ReportResults {
  results: { task_id: string; outcome: string }[];
}

// The agents answer at a fake endpoint that takes every dispatch, so tasks move to
// `dispatched` and stay there until this test reports for them as the agent would.
describe('task life through an agent', () => {
  let server: TestServer;
  let agent: FakeAgent;
  let agents: Topology;

  before(async () => {
    agent = await startFakeAgent();
    // Nothing heartbeats here, so the agents' leases must outlive the file.
    server = await startServer({ AGENT_LEASE_TTL_MS: '600000' });
    agents = await setUpStorageSystem(server.app, agent.url);
  });
  after(async () => {
    await stopServer(server);
    await agent.close();
  });

  /** Submits a task and waits until it is dispatched; returns the attempt as the agent got it. */
  async function dispatched(body: TaskRequest) {
    const task = await acceptedTask(server.app, body);
    const row = await waitForState(server.db, task.id, 'dispatched');
    assert.ok(row.fencing_token !== null && row.fencing_token > 0);
    return { id: task.id, attempt: row.attempt, fencing_token: row.fencing_token, agent_id: row.agent_id! };
  }

  /** A batch in which every report is stale is refused as a whole with 409. */
  async function staleReport(agentId: string, reports: TaskReport[]): Promise<void> {
    const response = await postReports(server.app, agentId, reports);
    assertProblem(response, 409, 'stale-fencing-token');
  }

  async function report(agentId: string, reports: TaskReport[]): Promise<ReportResults> {
    const response = await postReports(server.app, agentId, reports);
    assert.equal(response.statusCode, 200, response.body);
    return response.json<ReportResults>();
  }

  it('dispatches to this server’s agent in the owning cluster with a new fencing token', async () => {
    const response = await server.app.inject({
      method: 'POST',
      url: '/v1/tasks',
      headers: { 'idempotency-key': 'life-dispatch', 'x-request-id': 'req-life-1', traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' },
      payload: { kind: 'volume.create', storage_system_id: 'ss1', device: 'd4', params: { name: 'on-c1', size_bytes: MiB } },
    });
    assert.equal(response.statusCode, 202);
    // The task keeps the submit request's span (a child of the caller's) and sends it with the dispatch.
    const submitSpan = String(response.headers.traceparent);
    assert.match(submitSpan, /^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
    const id = response.json().id as string;
    const row = await waitForState(server.db, id, 'dispatched');
    assert.equal(row.attempt, 1);
    assert.equal(row.agent_id, agents.c1);
    assert.equal(row.cluster_id, 'c1');
    const sent = await waitFor('the dispatch to reach the agent', async () => agent.received.find((d) => d.task_id === id));
    assert.deepEqual(sent, {
      task_id: id,
      kind: 'volume.create',
      device: 'd4',
      params: { name: 'on-c1', size_bytes: MiB },
      attempt: 1,
      fencing_token: row.fencing_token,
      epoch: 1,
      request_id: 'req-life-1',
      traceparent: submitSpan,
    });
    assert.equal(row.traceparent, submitSpan);
    assert.deepEqual(await historyOf(server.db, id), ['queued', 'dispatched']);
    const resource = await server.app.inject({ method: 'GET', url: `/v1/tasks/${id}` });
    assert.equal(resource.json().state, 'dispatched');
    assert.equal(resource.json().fencing_token, row.fencing_token);
    assert.equal(resource.json().agent_id, agents.c1);
    assert.ok(resource.json().dispatched_at);
  });

  it('a dispatched task cannot be cancelled', async () => {
    const attempt = await dispatched({ kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' });
    const state = await snapshot(server.db);
    assertProblem(await server.app.inject({ method: 'POST', url: `/v1/tasks/${attempt.id}:cancel` }), 409, 'task-not-cancellable');
    assert.equal(await snapshot(server.db), state);
  });

  it('volume.create: running, then succeeded makes the volume present', async () => {
    const attempt = await dispatched({ kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'made', size_bytes: 2 * MiB } });
    assert.equal((await volumeRow(server.db, 'd0', 'made'))?.state, 'creating');
    const running = await report(attempt.agent_id, [{ task_id: attempt.id, attempt: 1, fencing_token: attempt.fencing_token, state: 'running' }]);
    assert.deepEqual(running, { results: [{ task_id: attempt.id, outcome: 'applied' }] });
    assert.equal((await taskRow(server.db, attempt.id))?.state, 'running');
    const result = { volume: { device: 'd0', name: 'made', size_bytes: 2 * MiB } };
    const done = await report(attempt.agent_id, [{ task_id: attempt.id, attempt: 1, fencing_token: attempt.fencing_token, state: 'succeeded', result }]);
    assert.deepEqual(done, { results: [{ task_id: attempt.id, outcome: 'applied' }] });
    const row = await taskRow(server.db, attempt.id);
    assert.equal(row?.state, 'succeeded');
    assert.deepEqual(row?.result, result);
    assert.ok(row?.finished_at);
    assert.deepEqual(await volumeRow(server.db, 'd0', 'made'), { device: 'd0', name: 'made', size_bytes: 2 * MiB, state: 'present', task_id: attempt.id });
    assert.deepEqual(await historyOf(server.db, attempt.id), ['queued', 'dispatched', 'running', 'succeeded']);
    const events = await server.db('events').where({ task_id: attempt.id }).orderBy('id').select('payload');
    assert.deepEqual(events.map((e: { payload: { state: string } }) => e.payload.state), ['queued', 'dispatched', 'running', 'succeeded']);
    const resource = (await server.app.inject({ method: 'GET', url: `/v1/tasks/${attempt.id}` })).json();
    assert.equal(resource.state, 'succeeded');
    assert.deepEqual(resource.result, result);
  });

  it('a report for a finished task is stale and changes nothing', async () => {
    const attempt = await dispatched({ kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' });
    await report(attempt.agent_id, [{ task_id: attempt.id, attempt: 1, fencing_token: attempt.fencing_token, state: 'succeeded', result: {} }]);
    const state = await snapshot(server.db);
    await staleReport(attempt.agent_id, [{ task_id: attempt.id, attempt: 1, fencing_token: attempt.fencing_token, state: 'failed', error: { type: 'urn:duplex:problem:internal-error', title: 'Internal error', status: 500 } }]);
    assert.equal(await snapshot(server.db), state);
  });

  it('volume.create failed releases the reserved name and keeps the problem', async () => {
    const attempt = await dispatched({ kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'not-made', size_bytes: MiB } });
    const error = { type: 'urn:duplex:problem:insufficient-capacity', title: 'The device does not have the capacity', status: 422, detail: 'full' };
    await report(attempt.agent_id, [{ task_id: attempt.id, attempt: 1, fencing_token: attempt.fencing_token, state: 'failed', error }]);
    const row = await taskRow(server.db, attempt.id);
    assert.equal(row?.state, 'failed');
    assert.deepEqual(row?.error, error);
    assert.equal(await volumeRow(server.db, 'd0', 'not-made'), undefined);
  });

  it('volume.delete succeeded removes the volume from the catalog', async () => {
    await insertVolume(server.db, 'd0', 'doomed');
    const attempt = await dispatched({ kind: 'volume.delete', storage_system_id: 'ss1', device: 'd0', params: { name: 'doomed' } });
    assert.equal((await volumeRow(server.db, 'd0', 'doomed'))?.state, 'deleting');
    await report(attempt.agent_id, [{ task_id: attempt.id, attempt: 1, fencing_token: attempt.fencing_token, state: 'succeeded', result: { deleted: { device: 'd0', name: 'doomed', size_bytes: MiB } } }]);
    assert.equal((await taskRow(server.db, attempt.id))?.state, 'succeeded');
    assert.equal(await volumeRow(server.db, 'd0', 'doomed'), undefined);
  });

  it('volume.delete failed for another reason restores the volume', async () => {
    await insertVolume(server.db, 'd0', 'kept');
    const attempt = await dispatched({ kind: 'volume.delete', storage_system_id: 'ss1', device: 'd0', params: { name: 'kept' } });
    await report(attempt.agent_id, [{ task_id: attempt.id, attempt: 1, fencing_token: attempt.fencing_token, state: 'failed', error: { type: 'urn:duplex:problem:device-unavailable', title: 'The device is unavailable', status: 422 } }]);
    assert.equal((await volumeRow(server.db, 'd0', 'kept'))?.state, 'present');
  });

  it('volume.resize succeeded records the new size', async () => {
    await insertVolume(server.db, 'd0', 'grow', MiB);
    const attempt = await dispatched({ kind: 'volume.resize', storage_system_id: 'ss1', device: 'd0', params: { name: 'grow', size_bytes: 3 * MiB } });
    await report(attempt.agent_id, [{ task_id: attempt.id, attempt: 1, fencing_token: attempt.fencing_token, state: 'succeeded', result: { volume: { device: 'd0', name: 'grow', size_bytes: 3 * MiB } } }]);
    assert.equal((await volumeRow(server.db, 'd0', 'grow'))?.size_bytes, 3 * MiB);
  });

  it('volume.copy to another device succeeded makes the copy present with its size', async () => {
    await insertVolume(server.db, 'd0', 'orig', 5 * MiB);
    const attempt = await dispatched({ kind: 'volume.copy', storage_system_id: 'ss1', device: 'd0', params: { name: 'orig', target_device: 'd4', target_name: 'dup' } });
    assert.equal((await volumeRow(server.db, 'd4', 'dup'))?.state, 'creating');
    const result = { source: { device: 'd0', name: 'orig', size_bytes: 5 * MiB }, volume: { device: 'd4', name: 'dup', size_bytes: 5 * MiB } };
    await report(attempt.agent_id, [{ task_id: attempt.id, attempt: 1, fencing_token: attempt.fencing_token, state: 'succeeded', result }]);
    assert.deepEqual(await volumeRow(server.db, 'd4', 'dup'), { device: 'd4', name: 'dup', size_bytes: 5 * MiB, state: 'present', task_id: attempt.id });
    assert.equal((await volumeRow(server.db, 'd0', 'orig'))?.state, 'present');
  });

  it('device.format succeeded clears the device’s volumes from the catalog', async () => {
    await insertVolume(server.db, 'd2', 'f1');
    await insertVolume(server.db, 'd2', 'f2');
    await insertVolume(server.db, 'd4', 'elsewhere');
    const attempt = await dispatched({ kind: 'device.format', storage_system_id: 'ss1', device: 'd2', params: {} });
    await report(attempt.agent_id, [{ task_id: attempt.id, attempt: 1, fencing_token: attempt.fencing_token, state: 'succeeded', result: { volumes_removed: 2 } }]);
    assert.deepEqual(await server.db('volumes').where({ device: 'd2' }).select('name'), []);
    assert.equal((await volumeRow(server.db, 'd4', 'elsewhere'))?.state, 'present');
  });

  it('device.format spares volumes of tasks submitted after it', async () => {
    await insertVolume(server.db, 'd2', 'before-format');
    const format = await dispatched({ kind: 'device.format', storage_system_id: 'ss1', device: 'd2' });
    const create = await dispatched({ kind: 'volume.create', storage_system_id: 'ss1', device: 'd2', params: { name: 'after-format', size_bytes: 1 } });
    await report(create.agent_id, [{ task_id: create.id, attempt: 1, fencing_token: create.fencing_token, state: 'succeeded', result: { volume: { device: 'd2', name: 'after-format', size_bytes: 1 } } }]);
    await report(format.agent_id, [{ task_id: format.id, attempt: 1, fencing_token: format.fencing_token, state: 'succeeded', result: { volumes_removed: 1 } }]);
    assert.deepEqual(await server.db('volumes').where({ device: 'd2' }).select('name', 'state'), [{ name: 'after-format', state: 'present' }]);
  });

  it('a report with a wrong fencing token is stale and changes nothing', async () => {
    const attempt = await dispatched({ kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'fenced', size_bytes: MiB } });
    const state = await snapshot(server.db);
    await staleReport(attempt.agent_id, [{ task_id: attempt.id, attempt: 1, fencing_token: attempt.fencing_token + 1000, state: 'succeeded', result: {} }]);
    assert.equal(await snapshot(server.db), state);
    assert.equal((await taskRow(server.db, attempt.id))?.state, 'dispatched');
    assert.equal((await volumeRow(server.db, 'd0', 'fenced'))?.state, 'creating');
  });

  it('an attempt the driver refused as fenced goes back to the queue and is dispatched again under a new token', async () => {
    const attempt = await dispatched({ kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'refused-once', size_bytes: MiB } });
    const results = await report(attempt.agent_id, [{ task_id: attempt.id, attempt: attempt.attempt, fencing_token: attempt.fencing_token, state: 'refused' }]);
    assert.deepEqual(results, { results: [{ task_id: attempt.id, outcome: 'applied' }] });
    const again = await waitFor('the attempt to be dispatched again', async () => {
      const row = await taskRow(server.db, attempt.id);
      return row && row.attempt > attempt.attempt && row.state === 'dispatched' ? row : undefined;
    });
    assert.ok(again.fencing_token! > attempt.fencing_token);
    const history: { state: string }[] = await server.db('task_history').where({ task_id: attempt.id }).orderBy('id').select('state');
    assert.deepEqual(history.map((row) => row.state).slice(0, 4), ['queued', 'dispatched', 'queued', 'dispatched']);
    // The old attempt's refusal, sent again, is stale.
    await staleReport(attempt.agent_id, [{ task_id: attempt.id, attempt: attempt.attempt, fencing_token: attempt.fencing_token, state: 'refused' }]);
  });

  it('a batch is judged report by report', async () => {
    const good = await dispatched({ kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' });
    const bad = await dispatched({ kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' });
    const results = await report(good.agent_id, [
      { task_id: good.id, attempt: 1, fencing_token: good.fencing_token, state: 'running' },
      { task_id: bad.id, attempt: 1, fencing_token: bad.fencing_token + 1000, state: 'running' },
    ]);
    assert.deepEqual(
      [...results.results].sort((a, b) => a.task_id.localeCompare(b.task_id)),
      [{ task_id: good.id, outcome: 'applied' }, { task_id: bad.id, outcome: 'stale' }].sort((a, b) => a.task_id.localeCompare(b.task_id)),
    );
    assert.equal((await taskRow(server.db, good.id))?.state, 'running');
    assert.equal((await taskRow(server.db, bad.id))?.state, 'dispatched');
  });

  it('a report on a task never dispatched to the agent is 403, and changes nothing', async () => {
    const state = await snapshot(server.db);
    const response = await postReports(server.app, agents.c0, [{ task_id: 'tsk_never_submitted', attempt: 1, fencing_token: 1, state: 'succeeded' }]);
    assertProblem(response, 403, 'forbidden');
    // Another agent's task, even with its current fencing token, is not this agent's to report on.
    const theirs = await dispatched({ kind: 'device.probe', storage_system_id: 'ss1', device: 'd4' });
    assert.equal(theirs.agent_id, agents.c1);
    const before = await snapshot(server.db);
    const stolen = await postReports(server.app, agents.c0, [{ task_id: theirs.id, attempt: 1, fencing_token: theirs.fencing_token, state: 'succeeded' }]);
    assertProblem(stolen, 403, 'forbidden');
    assert.equal(await snapshot(server.db), before);
    assert.notEqual(state, undefined);
  });

  it('a batch with one report on a task never dispatched to the agent is 403 whole: its own reports change nothing either', async () => {
    const own = await dispatched({ kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' });
    const theirs = await dispatched({ kind: 'device.probe', storage_system_id: 'ss1', device: 'd4' });
    assert.equal(own.agent_id, agents.c0);
    assert.equal(theirs.agent_id, agents.c1);
    const before = await snapshot(server.db);
    for (const state of ['succeeded', 'refused'] as const) {
      const response = await postReports(server.app, agents.c0, [
        { task_id: own.id, attempt: 1, fencing_token: own.fencing_token, state: 'succeeded', result: {} },
        { task_id: theirs.id, attempt: 1, fencing_token: theirs.fencing_token, state },
      ]);
      assertProblem(response, 403, 'forbidden');
      assert.match(response.json<{ detail: string }>().detail, new RegExp(theirs.id));
      assert.equal(await snapshot(server.db), before);
    }
    assert.equal((await taskRow(server.db, own.id))?.state, 'dispatched');
    assert.equal((await taskRow(server.db, theirs.id))?.state, 'dispatched');
  });

  it('reports from an unknown agent are 401: no credential can be its', async () => {
    const attempt = await dispatched({ kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' });
    const state = await snapshot(server.db);
    const response = await postReports(server.app, 'A:ss1:c0:ghost', [{ task_id: attempt.id, attempt: 1, fencing_token: attempt.fencing_token, state: 'succeeded' }]);
    assertProblem(response, 401, 'unauthenticated');
    assert.equal(await snapshot(server.db), state);
  });

  it('a new incarnation of the agent gets the lost attempts again under new tokens', async () => {
    const attempt = await dispatched({ kind: 'device.probe', storage_system_id: 'ss1', device: 'd4' });
    assert.equal(attempt.agent_id, agents.c1);
    const response = await server.app.inject({
      method: 'POST',
      url: '/v1/agents',
      payload: { name: 'ss1-c1-A', server_id: 'A', storage_system_id: 'ss1', cluster_id: 'c1', url: agent.url, pid: 9999, started_at: '2026-11-25T11:00:00Z' },
    });
    assert.equal(response.statusCode, 200);
    assert.equal(response.json().incarnation, 2);
    const again = await waitFor('the second attempt', async () => {
      const row = await taskRow(server.db, attempt.id);
      return row?.state === 'dispatched' && row.attempt === 2 ? row : undefined;
    });
    assert.ok(again.fencing_token! > attempt.fencing_token);
    assert.deepEqual(await historyOf(server.db, attempt.id), ['queued', 'dispatched', 'queued', 'dispatched']);
    await staleReport(agents.c1, [{ task_id: attempt.id, attempt: 1, fencing_token: attempt.fencing_token, state: 'succeeded' }]);
    const current = await report(agents.c1, [{ task_id: attempt.id, attempt: 2, fencing_token: again.fencing_token!, state: 'succeeded' }]);
    assert.deepEqual(current.results, [{ task_id: attempt.id, outcome: 'applied' }]);
  });
});

describe('task dispatch to an unreachable agent', () => {
  let server: TestServer;
  let agents: Topology;

  before(async () => {
    // A long retry keeps the agent skipped after the first failed dispatch, so the task rests in `queued`.
    server = await startServer({ DISPATCH_RETRY_MS: '60000', AGENT_LEASE_TTL_MS: '600000' });
    agents = await setUpStorageSystem(server.app, await closedUrl());
  });
  after(() => stopServer(server));

  it('puts the attempt back in the queue; its token is no longer accepted', async () => {
    const task = await acceptedTask(server.app, { kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' });
    const row = await waitFor('the failed attempt to be requeued', async () => {
      const current = await taskRow(server.db, task.id);
      return current?.state === 'queued' && current.attempt === 1 ? current : undefined;
    });
    assert.equal(row.agent_id, null);
    assert.equal(row.cluster_id, null);
    assert.deepEqual(await historyOf(server.db, task.id), ['queued', 'dispatched', 'queued']);
    const stale = await postReports(server.app, agents.c0, [{ task_id: task.id, attempt: 1, fencing_token: row.fencing_token!, state: 'succeeded' }]);
    assertProblem(stale, 409, 'stale-fencing-token');
    assert.equal((await taskRow(server.db, task.id))?.state, 'queued');
  });
});

describe('queued tasks for a device taken out of service', () => {
  let server: TestServer;
  let agents: Topology;

  before(async () => {
    server = await startServer({ AGENT_LEASE_TTL_MS: '600000' });
    agents = await setUpStorageSystem(server.app, await closedUrl());
    holdDispatch(server.app, agents.c0, agents.c1);
  });
  after(() => stopServer(server));

  it('fail at once with device-unavailable, once, and release what they reserved', async () => {
    const create = await acceptedTask(server.app, { kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'waiting', size_bytes: MiB } });
    await insertVolume(server.db, 'd4', 'source');
    // A copy onto d0 names it as its target: it cannot run either.
    const copy = await acceptedTask(server.app, {
      kind: 'volume.copy',
      storage_system_id: 'ss1',
      device: 'd4',
      params: { name: 'source', target_device: 'd0', target_name: 'copied' },
    });
    const probeOther = await acceptedTask(server.app, { kind: 'device.probe', storage_system_id: 'ss1', device: 'd4' });
    assert.equal((await volumeRow(server.db, 'd0', 'waiting'))?.state, 'creating');

    // The cluster-manager stored d0 offline; the agent of c0 reports the new version.
    await reportInventory(
      server.app,
      agents.c0,
      inventoryReport({
        cluster_id: 'c0',
        version: 2,
        devices: [device('d0', 'c0', { state: 'offline', reason: 'replacing a fan' }), device('d1', 'c0'), device('d2', 'c0', { capacity_bytes: MiB })],
      }),
    );
    server.app.duplex.dispatcher.kick();
    const failed = await waitForState(server.db, create.id, 'failed');
    assert.equal(failed.error?.type, 'urn:duplex:problem:device-unavailable');
    assert.equal(failed.error?.detail, "device 'd0' is offline: replacing a fan");
    assert.deepEqual(await historyOf(server.db, create.id), ['queued', 'failed']);
    assert.equal(await volumeRow(server.db, 'd0', 'waiting'), undefined, 'the reservation is released');
    // Its attempt was never raised: no token was spent on a device that cannot run it.
    assert.equal(failed.attempt, 0);
    // A task on a device still in service stays queued for its agent.
    assert.equal((await taskRow(server.db, probeOther.id))?.state, 'queued');
    const copyFailed = await waitForState(server.db, copy.id, 'failed');
    assert.equal(copyFailed.error?.detail, "device 'd0' is offline: replacing a fan");
    assert.equal(await volumeRow(server.db, 'd0', 'copied'), undefined);

    // Nothing loops: more dispatch rounds change nothing.
    const state = await snapshot(server.db);
    server.app.duplex.dispatcher.kick();
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(await snapshot(server.db), state);
  });
});

// The dispatcher's periodic sweep is a safety net; a refused attempt must not wait for it.
describe('a refused attempt without the sweep', () => {
  let server: TestServer;
  let agent: FakeAgent;

  before(async () => {
    agent = await startFakeAgent();
    // A sweep once a minute: within the wait below, only the report itself can start the round.
    server = await startServer({ AGENT_LEASE_TTL_MS: '600000', DISPATCH_RETRY_MS: '60000' });
    await setUpStorageSystem(server.app, agent.url);
  });
  after(async () => {
    await stopServer(server);
    await agent.close();
  });

  it('is dispatched again as soon as its refusal is reported', async () => {
    const task = await acceptedTask(server.app, { kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'refused-no-sweep', size_bytes: MiB } });
    const first = await waitForState(server.db, task.id, 'dispatched');
    const response = await postReports(server.app, first.agent_id!, [{ task_id: task.id, attempt: first.attempt, fencing_token: first.fencing_token!, state: 'refused' }]);
    assert.equal(response.statusCode, 200, response.body);
    const again = await waitFor(
      'the attempt to be dispatched again',
      async () => {
        const row = await taskRow(server.db, task.id);
        return row && row.attempt > first.attempt && row.state === 'dispatched' ? row : undefined;
      },
      10_000,
    );
    assert.ok(again.fencing_token! > first.fencing_token!);
    assert.equal(agent.received.filter((dispatch) => dispatch.task_id === task.id).length, 2);
  });
});
