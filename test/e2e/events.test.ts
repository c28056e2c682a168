import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { ServerApi } from '@duplex/contracts';
import { TopologyHarness } from '@duplex/harness';
import { bearer, EventStreamClient, testAdminToken, waitFor } from '@duplex/testkit';
import { request } from 'undici';

// The event stream through real processes: servers, cluster-managers, agents and drivers run as
// the topology harness starts them, and a client follows server A's GET /v1/events over a socket,
// leaves, and comes back with Last-Event-ID.

type Event = ServerApi.components['schemas']['Event'];
type EventList = ServerApi.components['schemas']['EventList'];
type Task = ServerApi.components['schemas']['Task'];
type TaskRequest = ServerApi.components['schemas']['TaskRequest'];

const terminal = new Set(['succeeded', 'failed', 'cancelled']);

async function getJson<T>(url: string): Promise<T> {
  const response = await request(url, { headers: bearer(testAdminToken) });
  const text = await response.body.text();
  assert.equal(response.statusCode, 200, `GET ${url}: ${text}`);
  return JSON.parse(text) as T;
}

async function submit(serverUrl: string, body: TaskRequest): Promise<Task> {
  const response = await request(`${serverUrl}/v1/tasks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': randomUUID(), ...bearer(testAdminToken) },
    body: JSON.stringify(body),
  });
  const text = await response.body.text();
  assert.equal(response.statusCode, 202, text);
  return JSON.parse(text) as Task;
}

/** Each task's state changes as a stream delivered them, in the order they arrived. */
function statesByTask(events: Event[]): Map<string, string[]> {
  const byTask = new Map<string, string[]>();
  for (const event of events) {
    if (event.type !== 'task.state_changed' || !event.task_id) continue;
    byTask.set(event.task_id, [...(byTask.get(event.task_id) ?? []), String(event.data.state)]);
  }
  return byTask;
}

describe('the event stream through real processes', { timeout: 180_000 }, () => {
  let harness: TopologyHarness;

  before(async () => {
    // A hung agent is killed only after 12 missed health checks (6 s), well after its 3 s lease ran out.
    harness = await TopologyHarness.start({ devicesPerCluster: 1, env: { AGENT_HEALTH_FAILURES: '12' } });
  });
  after(() => harness?.stop());

  it('resumes after a disconnect with every task state change exactly once and in order, on any server', async () => {
    const serverA = harness.serverUrl('A');
    const serverB = harness.serverUrl('B');
    const run = randomUUID().slice(0, 8);
    const task = (n: number): TaskRequest => ({ kind: 'volume.create', storage_system_id: 'ss1', device: n % 2 === 0 ? 'd0' : 'd1', params: { name: `ev-${run}-${n}`, size_bytes: 4096 } });

    const first = await EventStreamClient.open(`${serverA}/v1/events?type=task.state_changed`);
    assert.equal(first.status, 200);
    // Submitted through both servers: the stream carries every server's changes.
    const before = await Promise.all(Array.from({ length: 8 }, (_, n) => submit(n % 2 === 0 ? serverA : serverB, task(n))));
    // Leave while those tasks are still moving.
    await first.waitFor('the first changes', (c) => (c.messages.length >= 6 ? true : undefined));
    await first.close();
    const lastSeen = first.messages.at(-1)?.id;
    assert.ok(lastSeen);

    const during = await Promise.all(Array.from({ length: 8 }, (_, n) => submit(n % 2 === 0 ? serverB : serverA, task(100 + n))));
    const tasks = [...before, ...during];

    // Back on server A, and on server B from the same id: the same events must follow.
    const resumedA = await EventStreamClient.open(`${serverA}/v1/events?type=task.state_changed`, { 'last-event-id': lastSeen });
    const resumedB = await EventStreamClient.open(`${serverB}/v1/events?type=task.state_changed&after=${lastSeen}`);
    try {
      assert.equal(resumedA.status, 200);
      assert.equal(resumedB.status, 200);
      for (const id of tasks.map((t) => t.id)) {
        await waitFor(`task ${id} to end`, async () => (terminal.has((await getJson<Task>(`${serverA}/v1/tasks/${id}`)).state) ? true : undefined), 30_000, 100);
      }
      const ended = (client: EventStreamClient) => {
        const states = statesByTask(client.events<Event>());
        return tasks.every((t) => terminal.has(states.get(t.id)?.at(-1) ?? '')) ? true : undefined;
      };
      await resumedA.waitFor('every task to end on the resumed stream', ended, 30_000);
      await resumedB.waitFor('every task to end on server B’s stream', ended, 30_000);

      const delivered = [...first.events<Event>(), ...resumedA.events<Event>()];
      const ids = delivered.map((event) => event.id);
      assert.equal(new Set(ids).size, ids.length, 'no event is delivered twice');
      assert.deepEqual(resumedB.events<Event>(), resumedA.events<Event>(), 'every server streams the same events in the same order');
      assert.ok(
        resumedA.events<Event>().some((event) => before.some((t) => t.id === event.task_id)),
        'the resumed stream carries on with the tasks that were moving when the client left',
      );

      const received = statesByTask(delivered);
      for (const t of tasks) {
        // The task's whole history, as recorded with each change: nothing missing, nothing twice, in order.
        const history = await getJson<EventList>(`${serverB}/v1/tasks/${t.id}/events?limit=500`);
        const rows: { state: string }[] = await harness.db('task_history').where({ task_id: t.id }).orderBy('id').select('state');
        assert.deepEqual(history.items.map((event) => event.data.state), rows.map((row) => row.state));
        assert.deepEqual(received.get(t.id), rows.map((row) => row.state), `task ${t.id}`);
        assert.deepEqual(
          delivered.filter((event) => event.task_id === t.id).map((event) => event.id),
          history.items.map((event) => event.id),
        );
        assert.equal(rows[0]?.state, 'queued');
        assert.equal(rows.at(-1)?.state, 'succeeded');
      }
    } finally {
      await Promise.all([resumedA.close(), resumedB.close()]);
    }
  });

  it('shows an agent killed with SIGKILL as lost, then its replacement as registered', async () => {
    const agentId = 'A:ss1:c0:ss1-c0-A';
    const { incarnation } = await getJson<{ incarnation: number }>(`${harness.serverUrl('A')}/v1/agents/${agentId}`);
    // Server B streams what server A's agents do, too.
    const stream = await EventStreamClient.open(`${harness.serverUrl('B')}/v1/events?type=agent.lost,agent.registered`);
    try {
      await harness.signalAgent('ss1-c0-A', 'SIGKILL');
      const ofAgent = (client: EventStreamClient) => client.events<Event>().filter((event) => event.data.agent_id === agentId);
      await stream.waitFor('agent.lost, then agent.registered', (c) => (ofAgent(c).length >= 2 ? true : undefined), 30_000);
      const [lost, registered] = ofAgent(stream);
      assert.equal(lost?.type, 'agent.lost');
      assert.equal(lost?.data.incarnation, incarnation);
      assert.ok(['replaced', 'lease_expired'].includes(String(lost?.data.reason)), JSON.stringify(lost));
      assert.equal(registered?.type, 'agent.registered');
      assert.equal(registered?.data.incarnation, incarnation + 1);
      assert.equal(registered?.storage_system_id, 'ss1');
      // Once per lost incarnation: a little later there is still only the one.
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.deepEqual(
        ofAgent(stream).map((event) => [event.type, event.data.incarnation]),
        [
          ['agent.lost', incarnation],
          ['agent.registered', incarnation + 1],
        ],
      );
    } finally {
      await stream.close();
    }
  });

  it('shows a hung agent as lost when its lease runs out', async () => {
    const agentId = 'A:ss1:c1:ss1-c1-A';
    const { incarnation } = await getJson<{ incarnation: number }>(`${harness.serverUrl('A')}/v1/agents/${agentId}`);
    const stream = await EventStreamClient.open(`${harness.serverUrl('A')}/v1/events?type=agent.lost,agent.registered&storage_system_id=ss1`);
    const pid = await harness.signalAgent('ss1-c1-A', 'SIGSTOP');
    try {
      const ofAgent = (client: EventStreamClient) => client.events<Event>().filter((event) => event.data.agent_id === agentId);
      // Lost when its lease runs out; later its cluster-manager replaces it, which is not a second loss.
      await stream.waitFor('agent.lost, then agent.registered', (c) => (ofAgent(c).length >= 2 ? true : undefined), 30_000);
      assert.deepEqual(
        ofAgent(stream).slice(0, 2).map((event) => [event.type, event.data.incarnation, event.data.reason]),
        [
          ['agent.lost', incarnation, 'lease_expired'],
          ['agent.registered', incarnation + 1, undefined],
        ],
      );
    } finally {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // its cluster-manager killed it as hung
      }
      await stream.close();
    }
  });
});
