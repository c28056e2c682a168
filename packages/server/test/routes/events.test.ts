import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { buildApp, loadServerConfig } from '@duplex/server';
import type { Database, Queryable } from '@duplex/shared';
import { bearer, createTestDatabase, EventStreamClient, injectWithToken, parseSse, testAdminToken, testJoinTokens, testServiceToken, waitFor, type TestDatabase } from '@duplex/testkit';
import type { FastifyInstance } from 'fastify';
import { request } from 'undici';
import { comparePositions } from '../../src/lib/event-stream.ts';
import { acceptedTask, assertProblem, device, holdDispatch, inventoryReport, registerAgent, registration, reportInventory, type Schemas } from './helpers.ts';

type Event = Schemas['Event'];
type EventList = Schemas['EventList'];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface EventServer {
  app: FastifyInstance;
  db: Database;
  tdb: TestDatabase;
  url: string;
}

type FeedOptions = NonNullable<Parameters<typeof buildApp>[0]['eventFeed']>;

/** A server 'A' listening on a free port, on a fresh database. */
async function startEventServer(env: Record<string, string> = {}, eventFeed: FeedOptions = {}, tdb?: TestDatabase): Promise<EventServer> {
  const database = tdb ?? (await createTestDatabase());
  const app = injectWithToken(
    await buildApp({
      config: loadServerConfig({ DATABASE_URL: database.url, SERVER_ID: 'A', AGENT_LEASE_TTL_MS: '600000', ADMIN_TOKEN: testAdminToken, JOIN_TOKENS: testJoinTokens, SERVICE_TOKEN: testServiceToken, ...env }),
      db: database.db,
      logger: false,
      eventFeed,
    }),
  );
  await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, db: database.db, tdb: database, url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` };
}

async function stopEventServer(server: EventServer | undefined): Promise<void> {
  if (!server) return;
  await server.app.close();
  await server.tdb.drop();
}

interface NewEvent {
  type: string;
  storage_system_id?: string | null;
  task_id?: string | null;
  payload?: Record<string, unknown>;
}

/** Writes events straight into the outbox, as the services do in their transactions. */
async function insertEvents(db: Queryable, events: NewEvent[]): Promise<string[]> {
  const rows: { id: number }[] = await db('events')
    .insert(events.map((event) => ({ type: event.type, storage_system_id: event.storage_system_id ?? 'ss1', task_id: event.task_id ?? null, payload: JSON.stringify(event.payload ?? {}) })))
    .returning('id');
  return rows.map((row) => String(row.id));
}

const failover = (n: number): NewEvent => ({ type: 'cluster.failover', payload: { failed_cluster: 'c0', survivor: 'c1', epoch: n, devices: ['d0'] } });

/** Every event of the outbox after an id, in the stream's order, as the database has them. */
async function idsInStreamOrder(db: Database, afterId: string): Promise<string[]> {
  const { rows } = await db.raw<{ rows: { id: number }[] }>(`select id from events where (stream_xid, id) > (select stream_xid, id from events where id = ?) order by stream_xid, id`, [afterId]);
  return rows.map((row) => String(row.id));
}

const ids = (client: EventStreamClient): string[] => client.messages.map((message) => message.id ?? '');

async function waitForIds(client: EventStreamClient, expected: string[], timeoutMs = 5_000): Promise<void> {
  await client.waitFor(`events ${expected.join(',')}`, (c) => (c.messages.length >= expected.length ? true : undefined), timeoutMs);
  assert.deepEqual(ids(client), expected);
}

describe('GET /v1/events', () => {
  let server: EventServer;
  const open = (query = '', headers: Record<string, string> = {}) => EventStreamClient.open(`${server.url}/v1/events${query}`, headers);

  before(async () => {
    server = await startEventServer({}, { pageSize: 4 });
  });
  after(() => stopEventServer(server));

  it('streams the events committed after it opened, as Server-Sent Events', async () => {
    const [before] = await insertEvents(server.db, [failover(1)]);
    // The stream starts after the newest settled event; let this one settle first.
    const feed = server.app.duplex.events;
    const beforePosition = (await feed.positionOf(before!))!;
    await waitFor('the earlier event to settle', async () => (comparePositions(await feed.head(), beforePosition) >= 0 ? true : undefined));
    const client = await open();
    try {
      assert.equal(client.status, 200);
      assert.match(String(client.headers['content-type']), /^text\/event-stream/);
      assert.equal(client.headers['cache-control'], 'no-cache');
      await client.waitFor('the retry hint', (c) => c.retry);
      assert.equal(client.retry, 1000);

      const [lost] = await insertEvents(server.db, [{ type: 'agent.lost', payload: { agent_id: 'A:ss1:c0:x', reason: 'lease_expired' } }]);
      await client.waitFor('the event', (c) => (c.messages.length > 0 ? true : undefined));
      assert.equal(client.messages.length, 1);
      const [message] = client.messages;
      assert.equal(message?.id, lost);
      assert.equal(message?.event, 'agent.lost');
      const event = JSON.parse(message!.data) as Event;
      assert.deepEqual(Object.keys(event).sort(), ['created_at', 'data', 'id', 'storage_system_id', 'task_id', 'type']);
      assert.equal(event.id, lost);
      assert.equal(event.type, 'agent.lost');
      assert.equal(event.storage_system_id, 'ss1');
      assert.equal(event.task_id, null);
      assert.deepEqual(event.data, { agent_id: 'A:ss1:c0:x', reason: 'lease_expired' });
      assert.match(event.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.ok(!ids(client).includes(before!), 'an event from before the stream opened is not sent');
    } finally {
      await client.close();
    }
  });

  it('carries the task state changes the server commits', async () => {
    const agentUrl = 'http://127.0.0.1:9';
    const c0 = await registerAgent(server.app, { name: 'ss1-c0-A', url: agentUrl });
    holdDispatch(server.app, c0);
    await reportInventory(server.app, c0, inventoryReport({ devices: [device('d0', 'c0')] }));
    const client = await open('?type=task.state_changed');
    try {
      const task = await acceptedTask(server.app, { kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' });
      const cancel = await server.app.inject({ method: 'POST', url: `/v1/tasks/${task.id}:cancel` });
      assert.equal(cancel.statusCode, 200, cancel.body);
      await client.waitFor('two state changes', (c) => (c.messages.length >= 2 ? true : undefined));
      const events = client.events<Event>();
      assert.deepEqual(events.map((event) => [event.type, event.task_id, event.data.state]), [
        ['task.state_changed', task.id, 'queued'],
        ['task.state_changed', task.id, 'cancelled'],
      ]);
    } finally {
      await client.close();
    }
  });

  it('filters by type (repeated or comma-separated), storage system and task', async () => {
    const byTypes = await open('?type=agent.lost,cluster.failback&type=device.changed');
    const byOneType = await open('?type=cluster.failback');
    const bySystem = await open('?storage_system_id=ss2');
    const byTask = await open('?task_id=tsk_filter_1&type=task.state_changed');
    try {
      const written = await insertEvents(server.db, [
        { type: 'agent.lost' },
        { type: 'cluster.failback', storage_system_id: 'ss2' },
        { type: 'task.state_changed', task_id: 'tsk_filter_1', payload: { state: 'queued' } },
        { type: 'task.state_changed', task_id: 'tsk_filter_2', storage_system_id: 'ss2', payload: { state: 'queued' } },
        { type: 'device.changed', storage_system_id: 'ss2' },
        { type: 'inventory.changed' },
      ]);
      const [lost, failback, task1, task2, deviceChanged] = written;
      // The marker: every stream sees it, so each has seen everything before it.
      const [marker] = await insertEvents(server.db, [{ type: 'cluster.failback', storage_system_id: 'ss2', task_id: 'tsk_filter_1' }]);
      await Promise.all([byTypes, byOneType, bySystem].map((client) => client.waitFor('the marker', (c) => (ids(c).includes(marker!) ? true : undefined))));
      await byTask.waitFor('task 1', (c) => (c.messages.length > 0 ? true : undefined));
      await sleep(100);
      assert.deepEqual(ids(byTypes), [lost, failback, deviceChanged, marker]);
      assert.deepEqual(ids(byOneType), [failback, marker]);
      assert.deepEqual(ids(bySystem), [failback, task2, deviceChanged, marker]);
      assert.deepEqual(ids(byTask), [task1]);
    } finally {
      await Promise.all([byTypes, byOneType, bySystem, byTask].map((client) => client.close()));
    }
  });

  it('refuses unknown types, bad ids and unknown parameters with 400', async () => {
    const unknownType = await server.app.inject({ method: 'GET', url: '/v1/events?type=task.state_changed,task.exploded' });
    const problem = assertProblem(unknownType, 400, 'validation-failed');
    assert.match(problem.detail ?? '', /task\.exploded/);
    assert.deepEqual(problem.errors?.map((error) => error.location), ['querystring/type']);
    assertProblem(await server.app.inject({ method: 'GET', url: '/v1/events?after=abc' }), 400, 'validation-failed');
    assertProblem(await server.app.inject({ method: 'GET', url: '/v1/events', headers: { 'last-event-id': '-1' } }), 400, 'validation-failed');
    assertProblem(await server.app.inject({ method: 'GET', url: '/v1/events?heartbeat_ms=5' }), 400, 'validation-failed');
    assertProblem(await server.app.inject({ method: 'GET', url: '/v1/events?since=1' }), 400, 'validation-failed');
  });

  it('answers 410 for an id the outbox does not hold', async () => {
    const gone = assertProblem(await server.app.inject({ method: 'GET', url: '/v1/events', headers: { 'last-event-id': '999999999' } }), 410, 'event-id-unknown');
    assert.match(gone.detail ?? '', /999999999/);
    assertProblem(await server.app.inject({ method: 'GET', url: '/v1/events?after=9999999999999999999' }), 410, 'event-id-unknown');
  });

  it('resumes after Last-Event-ID or after=, with every later event once and in order', async () => {
    const first = await open();
    const written = await insertEvents(server.db, [failover(1), failover(2), failover(3)]);
    await waitForIds(first, written);
    await first.close();
    // Missed while disconnected, more than one page of them.
    const missed = await insertEvents(server.db, Array.from({ length: 9 }, (_, n) => failover(10 + n)));

    const byHeader = await open('', { 'last-event-id': written[1]! });
    const byQuery = await open(`?after=${written[2]}`);
    // The header is what EventSource sends on reconnection: it wins over a stale URL.
    const both = await open(`?after=${written[0]}`, { 'last-event-id': written[2]! });
    try {
      await waitForIds(byHeader, [written[2]!, ...missed]);
      await waitForIds(byQuery, missed);
      await waitForIds(both, missed);
      const live = await insertEvents(server.db, [failover(30)]);
      for (const client of [byHeader, byQuery, both]) await client.waitFor('the live event', (c) => (ids(c).includes(live[0]!) ? true : undefined));
      assert.deepEqual(ids(byQuery), [...missed, ...live]);
      assert.deepEqual(ids(byHeader), [written[2], ...missed, ...live]);
    } finally {
      await Promise.all([byHeader.close(), byQuery.close(), both.close()]);
    }
  });

  it('joins the live feed after reading a long backlog, while events keep coming, without gap or duplicate', async () => {
    const [start] = await insertEvents(server.db, [failover(0)]);
    await insertEvents(server.db, Array.from({ length: 40 }, (_, n) => failover(n)));
    const writing = (async () => {
      for (let n = 0; n < 30; n += 1) {
        await insertEvents(server.db, [failover(100 + n), failover(200 + n)]);
        await sleep(2);
      }
    })();
    const client = await open('', { 'last-event-id': start! });
    try {
      await writing;
      const expected = await idsInStreamOrder(server.db, start!);
      assert.equal(expected.length, 100);
      await waitForIds(client, expected, 10_000);
    } finally {
      await client.close();
    }
  });

  it('orders by commit safety: an event held in an open transaction is not overtaken', async () => {
    const client = await open();
    const trx = await server.db.transaction();
    try {
      // The open transaction writes an event first: the lower id, not yet committed.
      const [held] = await insertEvents(trx, [{ type: 'cluster.failover', payload: { n: 'held' } }]);
      // Another commits a later event while it is open.
      const [committed] = await insertEvents(server.db, [{ type: 'cluster.failback', payload: { n: 'committed' } }]);
      assert.ok(Number(held) < Number(committed));
      // A reader that trusted ids would send `committed` now, and a client resuming after it
      // would never see `held`. The stream holds it back until the older transaction ends.
      await sleep(400);
      assert.deepEqual(ids(client), []);
      await trx.commit();
      await waitForIds(client, [held!, committed!]);
    } finally {
      if (!trx.isCompleted()) await trx.rollback();
      await client.close();
    }
    // Resuming after the one delivered first gives exactly the other.
    const resumed = await open('', { 'last-event-id': ids(client)[0]! });
    try {
      await waitForIds(resumed, [ids(client)[1]!]);
    } finally {
      await resumed.close();
    }
  });

  it('keeps one task’s changes in commit order, even when an older transaction writes the later one', async () => {
    const client = await open('?task_id=tsk_causal');
    const older = await server.db.transaction();
    let running: string | undefined;
    let succeeded: string | undefined;
    try {
      // The older transaction has its id first (it changed something else), then waits for the
      // task's row while a newer one commits `running`, then writes `succeeded` after it.
      await older.raw('select pg_current_xact_id()');
      [running] = await insertEvents(server.db, [{ type: 'task.state_changed', task_id: 'tsk_causal', payload: { state: 'running' } }]);
      [succeeded] = await insertEvents(older, [{ type: 'task.state_changed', task_id: 'tsk_causal', payload: { state: 'succeeded' } }]);
      await sleep(200);
      assert.deepEqual(ids(client), [], 'nothing is settled while the older transaction is open');
      await older.commit();
      await waitForIds(client, [running!, succeeded!]);
      assert.deepEqual(client.events<Event>().map((event) => event.data.state), ['running', 'succeeded']);
      // By transaction id alone, `succeeded` would have come first.
      const rows: { id: number; tx_id: string }[] = await server.db('events').whereIn('id', [running!, succeeded!]).select('id', server.db.raw('tx_id::text as tx_id'));
      const txOf = (id: string) => BigInt(rows.find((row) => String(row.id) === id)!.tx_id);
      assert.ok(txOf(succeeded!) < txOf(running!));
    } finally {
      if (!older.isCompleted()) await older.rollback();
      await client.close();
    }
    const afterRunning = await open('?task_id=tsk_causal', { 'last-event-id': running! });
    const afterSucceeded = await open('?task_id=tsk_causal', { 'last-event-id': succeeded! });
    try {
      await waitForIds(afterRunning, [succeeded!]);
      const [next] = await insertEvents(server.db, [{ type: 'task.state_changed', task_id: 'tsk_causal', payload: { state: 'queued' } }]);
      await waitForIds(afterSucceeded, [next!]);
    } finally {
      await Promise.all([afterRunning.close(), afterSucceeded.close()]);
    }
  });

  it('sends heartbeat comments at the asked interval', async () => {
    const client = await open('?heartbeat_ms=100');
    try {
      await client.waitFor('three heartbeats', (c) => (c.comments.filter((comment) => comment === 'heartbeat').length >= 3 ? true : undefined), 3_000);
      assert.deepEqual(client.messages, []);
    } finally {
      await client.close();
    }
  });

  it('answers HEAD with the headers only, subscribing nothing', async () => {
    await waitFor('earlier streams to be gone', async () => (server.app.duplex.events.subscriberCount === 0 ? true : undefined), 5_000);
    const response = await server.app.inject({ method: 'HEAD', url: '/v1/events' });
    assert.equal(response.statusCode, 200);
    assert.match(String(response.headers['content-type']), /^text\/event-stream/);
    assert.equal(response.body, '');
    assert.equal(server.app.duplex.events.subscriberCount, 0);
  });

  it('drops a subscriber when its client disconnects', async () => {
    await waitFor('earlier streams to be gone', async () => (server.app.duplex.events.subscriberCount === 0 ? true : undefined), 5_000);
    const client = await open();
    assert.equal(server.app.duplex.events.subscriberCount, 1);
    await client.close();
    await waitFor('the subscriber to be dropped', async () => (server.app.duplex.events.subscriberCount === 0 ? true : undefined), 5_000);
  });
});

describe('GET /v1/events wake-ups', () => {
  let server: EventServer;

  before(async () => {
    // A poll slow enough that a prompt delivery must come from the notification.
    server = await startEventServer({}, { pollIntervalMs: 5_000 });
  });
  after(() => stopEventServer(server));

  const listener = async (): Promise<number | undefined> => {
    const { rows } = await server.db.raw<{ rows: { pid: number }[] }>(
      `select pid from pg_stat_activity where datname = current_database() and application_name = 'duplex-server-A-events'`,
    );
    return rows[0]?.pid;
  };

  it('is woken by the notification of a commit', async () => {
    await waitFor('the listening connection', listener);
    const client = await EventStreamClient.open(`${server.url}/v1/events`);
    try {
      await sleep(100);
      const started = Date.now();
      const written = await insertEvents(server.db, [failover(1)]);
      await waitForIds(client, written, 4_000);
      assert.ok(Date.now() - started < 4_500, 'delivered before the next poll');
    } finally {
      await client.close();
    }
  });

  it('reconnects its listening connection when Postgres drops it', async () => {
    const before = await waitFor('the listening connection', listener);
    await server.db.raw('select pg_terminate_backend(?)', [before]);
    const after = await waitFor('a new listening connection', async () => {
      const pid = await listener();
      return pid !== undefined && pid !== before ? pid : undefined;
    });
    assert.notEqual(after, before);
    const client = await EventStreamClient.open(`${server.url}/v1/events`);
    try {
      await sleep(100);
      const written = await insertEvents(server.db, [failover(2)]);
      await waitForIds(client, written, 4_000);
    } finally {
      await client.close();
    }
  });
});

describe('GET /v1/events without notifications', () => {
  let server: EventServer;

  before(async () => {
    server = await startEventServer({}, { pollIntervalMs: 200 });
  });
  after(() => stopEventServer(server));

  it('still delivers every event, from the poll', async () => {
    await server.db.raw('alter table events disable trigger events_notify');
    const client = await EventStreamClient.open(`${server.url}/v1/events`);
    try {
      const written = await insertEvents(server.db, [failover(1), failover(2)]);
      await waitForIds(client, written, 3_000);
    } finally {
      await client.close();
      await server.db.raw('alter table events enable trigger events_notify');
    }
  });
});

describe('GET /v1/events and slow clients', () => {
  let server: EventServer;

  before(async () => {
    server = await startEventServer({}, { maxBufferedBytes: 256 * 1024, closeGraceMs: 60_000 });
  });
  after(() => stopEventServer(server));

  it('drops a client that does not read, with a final comment, and lets it resume', async () => {
    // Undici stops reading the socket while the body is not consumed: the client is stalled.
    const response = await request(`${server.url}/v1/events`, { headers: bearer(testAdminToken), bodyTimeout: 0 });
    assert.equal(response.statusCode, 200);
    await waitFor('the subscriber', async () => (server.app.duplex.events.subscriberCount === 1 ? true : undefined));
    const padding = 'x'.repeat(64 * 1024);
    const written: string[] = [];
    // More than the socket buffers of both ends and the stream's limit hold.
    for (let batch = 0; batch < 40 && server.app.duplex.events.subscriberCount > 0; batch += 1) {
      written.push(...(await insertEvents(server.db, Array.from({ length: 10 }, (_, n) => ({ type: 'inventory.changed', payload: { n: batch * 10 + n, padding } })))));
      await sleep(20);
    }
    await waitFor('the slow client to be dropped', async () => (server.app.duplex.events.subscriberCount === 0 ? true : undefined), 10_000);

    // Reading now, the client gets what was sent before the drop, then the reason, then the end.
    const parsed = parseSse(await response.body.text());
    const received = parsed.messages.map((message) => message.id ?? '');
    assert.ok(received.length > 0 && received.length < written.length, `received ${received.length} of ${written.length}`);
    assert.deepEqual(received, written.slice(0, received.length));
    assert.match(parsed.comments.at(-1) ?? '', /^closing: the client reads too slowly/);

    const resumed = await EventStreamClient.open(`${server.url}/v1/events`, { 'last-event-id': received.at(-1)! });
    try {
      await resumed.waitFor('the rest', (c) => (c.messages.length >= written.length - received.length ? true : undefined), 10_000);
      assert.deepEqual(ids(resumed), written.slice(received.length));
    } finally {
      await resumed.close();
    }
  });
});

describe('GET /v1/events when the server closes', () => {
  it('ends every stream with a comment, and the server closes promptly', async () => {
    const server = await startEventServer();
    const clients = await Promise.all([EventStreamClient.open(`${server.url}/v1/events`), EventStreamClient.open(`${server.url}/v1/events?type=agent.lost`)]);
    try {
      await waitFor('both subscribers', async () => (server.app.duplex.events.subscriberCount === 2 ? true : undefined));
      const started = Date.now();
      await server.app.close();
      assert.ok(Date.now() - started < 3_000, `closed in ${Date.now() - started} ms`);
      for (const client of clients) {
        await client.ended;
        assert.match(client.comments.at(-1) ?? '', /^closing: the server is shutting down/);
      }
    } finally {
      await Promise.all(clients.map((client) => client.close()));
      await server.tdb.drop();
    }
  });
});

describe('GET /v1/tasks/{id}/events', () => {
  let server: EventServer;

  before(async () => {
    server = await startEventServer();
    const c0 = await registerAgent(server.app, { name: 'ss1-c0-A' });
    holdDispatch(server.app, c0);
    await reportInventory(server.app, c0, inventoryReport({ devices: [device('d0', 'c0')] }));
  });
  after(() => stopEventServer(server));

  it('lists the task’s state changes oldest first, by pages, with the ids the stream uses', async () => {
    const task = await acceptedTask(server.app, { kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' });
    const other = await acceptedTask(server.app, { kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' });
    await server.app.inject({ method: 'POST', url: `/v1/tasks/${task.id}:cancel` });
    // A change is listed once every older transaction (in any database of the cluster) has ended.
    const all = await waitFor('both changes to be settled', async () => {
      const page = (await server.app.inject({ method: 'GET', url: `/v1/tasks/${task.id}/events` })).json<EventList>();
      return page.items.length === 2 ? page : undefined;
    });
    assert.deepEqual(all.items.map((event) => [event.type, event.task_id, event.data.state]), [
      ['task.state_changed', task.id, 'queued'],
      ['task.state_changed', task.id, 'cancelled'],
    ]);
    assert.equal(all.next_cursor, null);
    const stored: { id: number }[] = await server.db('events').where({ task_id: task.id }).orderBy('id').select('id');
    assert.deepEqual(all.items.map((event) => event.id), stored.map((row) => String(row.id)));

    const first = (await server.app.inject({ method: 'GET', url: `/v1/tasks/${task.id}/events?limit=1` })).json<EventList>();
    assert.deepEqual(first.items.map((event) => event.id), [all.items[0]!.id]);
    assert.ok(first.next_cursor);
    const second = (await server.app.inject({ method: 'GET', url: `/v1/tasks/${task.id}/events?limit=1&cursor=${first.next_cursor}` })).json<EventList>();
    assert.deepEqual(second.items.map((event) => event.id), [all.items[1]!.id]);
    assert.equal(second.next_cursor, null);

    // The last id of the history follows the task on the stream from there.
    const client = await EventStreamClient.open(`${server.url}/v1/events?task_id=${other.id}`, { 'last-event-id': all.items[1]!.id });
    try {
      await server.app.inject({ method: 'POST', url: `/v1/tasks/${other.id}:cancel` });
      await client.waitFor('the other task’s cancellation', (c) => (c.messages.length > 0 ? true : undefined));
      assert.deepEqual(client.events<Event>().map((event) => event.data.state), ['cancelled']);
    } finally {
      await client.close();
    }
  });

  it('answers 404 for an unknown task and 400 for a bad cursor', async () => {
    assertProblem(await server.app.inject({ method: 'GET', url: '/v1/tasks/tsk_nothing/events' }), 404, 'task-not-found');
    const task = await acceptedTask(server.app, { kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' });
    assertProblem(await server.app.inject({ method: 'GET', url: `/v1/tasks/${task.id}/events?cursor=bm90LWEtY3Vyc29y` }), 400, 'validation-failed');
    assertProblem(await server.app.inject({ method: 'GET', url: `/v1/tasks/${task.id}/events?limit=0` }), 400, 'validation-failed');
  });
});

interface AgentEvent {
  type: string;
  payload: { agent_id: string; incarnation: number; reason?: string };
}

/** An agent's registered and lost events in stream order, as [type, incarnation, reason]. */
async function agentEventsOf(db: Database, id: string): Promise<[string, number, string | undefined][]> {
  const rows: AgentEvent[] = await db('events').whereIn('type', ['agent.registered', 'agent.lost']).whereRaw(`payload->>'agent_id' = ?`, [id]).orderByRaw('stream_xid, id').select('type', 'payload');
  return rows.map((row) => [row.type, row.payload.incarnation, row.payload.reason]);
}

async function lostAtOf(db: Database, id: string): Promise<Date | null> {
  return ((await db('agents').where({ id }).first('lost_at')) as { lost_at: Date | null }).lost_at;
}

describe('agent.registered and agent.lost', () => {
  let server: EventServer;

  before(async () => {
    server = await startEventServer({ AGENT_LEASE_TTL_MS: '500', FAILOVER_CHECK_INTERVAL_MS: '20' });
  });
  after(() => stopEventServer(server));

  const agentEvents = (id: string) => agentEventsOf(server.db, id);
  const lostAt = (id: string) => lostAtOf(server.db, id);

  it('writes agent.lost once when the lease runs out, and again after the agent came back', async () => {
    const client = await EventStreamClient.open(`${server.url}/v1/events?type=agent.registered,agent.lost`);
    try {
      const id = await registerAgent(server.app, { name: 'lease-runs-out' });
      await waitFor('the lease to run out', async () => ((await lostAt(id)) ? true : undefined), 5_000);
      // Well past the lease, the watcher has looked many times: still one event.
      await sleep(300);
      assert.deepEqual(await agentEvents(id), [
        ['agent.registered', 1, undefined],
        ['agent.lost', 1, 'lease_expired'],
      ]);

      // The same process heartbeats again (it was only hung): it is back, and can be lost again.
      const heartbeat = await server.app.inject({ method: 'POST', url: `/v1/agents/${id}/heartbeats`, payload: { incarnation: 1 } });
      assert.equal(heartbeat.statusCode, 200, heartbeat.body);
      assert.equal(await lostAt(id), null);
      await waitFor('the lease to run out again', async () => ((await lostAt(id)) ? true : undefined), 5_000);
      assert.deepEqual(await agentEvents(id), [
        ['agent.registered', 1, undefined],
        ['agent.lost', 1, 'lease_expired'],
        ['agent.registered', 1, undefined],
        ['agent.lost', 1, 'lease_expired'],
      ]);
      // Registering again after that, as the same process, brings it back once more.
      await registerAgent(server.app, { name: 'lease-runs-out' });
      await client.waitFor('five agent events', (c) => (c.messages.length >= 5 ? true : undefined));
      // (Its short lease may already have run out once more: a sixth event.)
      assert.deepEqual(client.events<Event>().slice(0, 5).map((event) => [event.type, event.data.agent_id, event.data.incarnation]), [
        ['agent.registered', id, 1],
        ['agent.lost', id, 1],
        ['agent.registered', id, 1],
        ['agent.lost', id, 1],
        ['agent.registered', id, 1],
      ]);
    } finally {
      await client.close();
    }
  });
});

describe('agent.lost for a replaced incarnation', () => {
  let server: EventServer;

  before(async () => {
    // A lease long enough that the replacement always comes first.
    server = await startEventServer({ AGENT_LEASE_TTL_MS: '2000', FAILOVER_CHECK_INTERVAL_MS: '20' });
  });
  after(() => stopEventServer(server));
  const agentEvents = (id: string) => agentEventsOf(server.db, id);
  const lostAt = (id: string) => lostAtOf(server.db, id);

  it('writes agent.lost for an incarnation a new process replaced before its lease ran out', async () => {
    const id = await registerAgent(server.app, { name: 'replaced', pid: 100 });
    const response = await server.app.inject({ method: 'POST', url: '/v1/agents', payload: registration({ name: 'replaced', pid: 101 }) });
    assert.equal(response.statusCode, 200, response.body);
    assert.equal(response.json<{ incarnation: number }>().incarnation, 2);
    assert.deepEqual(await agentEvents(id), [
      ['agent.registered', 1, undefined],
      ['agent.lost', 1, 'replaced'],
      ['agent.registered', 2, undefined],
    ]);
    // Incarnation 2's own lease then runs out: lost once more, as itself.
    await waitFor('the lease to run out', async () => ((await lostAt(id)) ? true : undefined), 5_000);
    assert.deepEqual((await agentEvents(id)).at(-1), ['agent.lost', 2, 'lease_expired']);
  });
});
