import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { loadResolvedContract } from '@duplex/contracts';
import { defaultLogger, problemDocument, sleep, type ProblemCode } from '@duplex/shared';
import { waitFor } from '@duplex/testkit';
import type { InjectOptions } from 'fastify';
import fc from 'fast-check';
import { contractOperations, requestsFor, type ContractOperation, type FuzzRequest, type KnownValues } from '@duplex/testkit';
import { GiB, MiB, acceptedTask, insertVolume, setUpStorageSystem, startFakeAgent, startServer, stopServer, taskRow, waitForState, type FakeAgent, type TestServer } from './helpers.ts';

/**
 * Random and mutated requests to every operation of the server's contract: none is answered
 * with a 5xx, every refusal is a problem document, a refused request changes nothing in
 * Postgres, and the server keeps answering. A fixed seed keeps runs repeatable; FUZZ_SEED and
 * FUZZ_RUNS change it and the number of requests per operation.
 */
const seed = Number(process.env.FUZZ_SEED ?? 20261203);
const numRuns = Number(process.env.FUZZ_RUNS ?? 40);
const operations = contractOperations(loadResolvedContract('server'));
console.log(`fuzz: seed ${seed}, ${numRuns} requests for each of ${operations.length} operations (set FUZZ_SEED and FUZZ_RUNS to change)`);

/** Every table a request could write (the servers table is left out: the lease keeper writes it all the time). */
const watchedTables = ['tasks', 'task_history', 'events', 'api_tokens', 'agents', 'agent_identities', 'devices', 'volumes', 'inventory_versions', 'server_inventories', 'clusters', 'storage_systems'];

/** A request must be answered within this; a longer wait is a hang. */
const answerDeadlineMs = 10_000;

interface Answer {
  statusCode: number;
  headers: OutgoingHttpHeaders;
  body: string;
}

/**
 * A cluster-manager that refuses every change with the problem a real one could give, so that
 * device administration, rescans and failbacks run through to it without changing anything.
 */
interface FakeClusterManager {
  url: string;
  /** Requests that are not of the cluster-manager's API, as `METHOD path`. */
  unexpected: string[];
  close(): Promise<void>;
}

async function startFakeClusterManager(): Promise<FakeClusterManager> {
  const unexpected: string[] = [];
  const refusals: [RegExp, ProblemCode][] = [
    [/^POST \/v1\/failback$/, 'cluster-not-recovering'],
    [/^POST \/v1\/devices$/, 'device-exists'],
    [/^POST \/v1\/devices\/[a-z0-9][a-z0-9_-]{0,62}:set-state$/, 'device-retired'],
    [/^DELETE \/v1\/devices\/[a-z0-9][a-z0-9_-]{0,62}$/, 'device-in-service'],
    [/^POST \/v1\/inventory:refresh$/, 'cluster-not-found'],
  ];
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    request.resume();
    request.on('end', () => {
      const call = `${request.method} ${request.url}`;
      const code = refusals.find(([pattern]) => pattern.test(call))?.[1];
      if (!code) unexpected.push(call);
      const problem = problemDocument(code ?? 'route-not-found', `refused by the test's cluster-manager: ${call}`);
      response.writeHead(problem.status, { 'content-type': 'application/problem+json' }).end(JSON.stringify(problem));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    unexpected,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe(`fuzzing every operation of the server contract (seed ${seed}, ${numRuns} runs each)`, () => {
  let server: TestServer;
  let agent: FakeAgent;
  let clusterManager: FakeClusterManager;
  let known: KnownValues;
  let snapshotSql = '';
  // The server's error lines (with their stacks), to name the cause of a 5xx.
  const errorLines: string[] = [];

  before(async () => {
    const stream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        errorLines.push(chunk.toString('utf8'));
        if (errorLines.length > 200) errorLines.shift();
        done();
      },
    });
    agent = await startFakeAgent();
    clusterManager = await startFakeClusterManager();
    // Refused tokens are part of the fuzzing: the failure limit must not shut the fuzzer out. The long
    // server lease keeps /readyz at 200 on a busy machine.
    server = await startServer({ AUTH_FAILURE_LIMIT: '100000', SERVER_LEASE_TTL_MS: '600000' }, { ...(defaultLogger('server-A') as object), level: 'error', stream });
    const { app, db } = server;
    const { c0, c1 } = await setUpStorageSystem(app, agent.url);
    await insertVolume(db, 'd0', 'vol1', MiB);
    const dispatched = (await acceptedTask(app, { kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' })).id;
    await waitForState(db, dispatched, 'dispatched');
    await waitFor('the dispatch to reach the agent', async () => (agent.received.length > 0 ? true : undefined));
    // From here on tasks stay where requests put them: a dispatch round in the background would
    // change rows between a refused request's two snapshots. The app still closes its dispatcher.
    app.duplex.dispatcher.kick = () => {};
    await sleep(200);
    const queued = (await acceptedTask(app, { kind: 'volume.create', storage_system_id: 'ss1', device: 'd4', params: { name: 'v-queued', size_bytes: MiB } })).id;
    await sleep(200);
    assert.equal((await taskRow(db, queued))?.state, 'queued');
    const fencingToken = (await taskRow(db, dispatched))?.fencing_token ?? 1;

    await db('storage_systems').insert({ id: 'ss1' }).onConflict('id').ignore();
    await db('clusters')
      .insert(['c0', 'c1'].map((id) => ({ storage_system_id: 'ss1', id, manager_url: clusterManager.url })))
      .onConflict(['storage_system_id', 'id'])
      .merge(['manager_url']);

    const token = async (name: string, role: string) => {
      const response = await app.inject({ method: 'POST', url: '/v1/tokens', payload: { name, role } });
      assert.equal(response.statusCode, 201, response.body);
      return response.json<{ id: string; secret: string }>();
    };
    const viewer = await token('fuzz viewer', 'viewer');
    // Revoking this one is fine; the admin token's id is never offered.
    const spare = await token('fuzz spare', 'operator');
    const eventIds = (await db('events').orderBy('id').limit(3).pluck('id')).map(String);

    const devices = ['d0', 'd1', 'd2', 'd4'];
    known = {
      // c0's agent and the task it runs come twice: an agent's report gets past the checks only with both.
      byCollection: { agents: [c0, c0, c1], tasks: [dispatched, dispatched, queued], tokens: [spare.id], 'storage-systems': ['ss1'], clusters: ['c0', 'c1'], devices },
      byName: {
        storage_system_id: ['ss1'],
        cluster_id: ['c0', 'c1'],
        home_cluster: ['c0', 'c1'],
        owner_cluster: ['c0', 'c1'],
        device: devices,
        target_device: devices,
        id: devices,
        // Not the names of c0's and c1's agents: registering those again (a new incarnation) would
        // leave the other operations' known incarnation and credential behind.
        name: ['vol1', 'v-new', 'fuzz-agent'],
        target_name: ['vol1', 'v-copy'],
        server_id: ['A'],
        task_id: [dispatched, dispatched, queued],
        url: [agent.url],
        pid: [4242, 4243],
        incarnation: [1],
        attempt: [1],
        fencing_token: [fencingToken],
        version: [1, 2],
        epoch: [1],
        size_bytes: [1, MiB],
        capacity_bytes: [GiB],
        started_at: ['2026-11-25T10:00:00Z'],
        'idempotency-key': ['fuzz-key-1', 'fuzz-key-2'],
        'last-event-id': eventIds,
        after: eventIds,
        type: [['task.state_changed'], ['agent.lost,task.state_changed'], ['device.changed', 'inventory.changed']],
      },
      viewerToken: viewer.secret,
    };

    const existing: string[] = [];
    for (const table of watchedTables) if ((await db.raw<{ rows: { found: string | null }[] }>(`select to_regclass(?) as found`, [table])).rows[0]?.found) existing.push(table);
    snapshotSql = existing
      .map((table) => `select '${table}' as name, count(*)::int as rows, md5(coalesce(string_agg(t::text, E'\\n' order by t::text), '')) as hash from ${table} t`)
      .join(' union all ');
  });

  after(async () => {
    await stopServer(server);
    await agent?.close();
    await clusterManager?.close();
  });

  /** Row counts and a hash of every row, by table. */
  async function snapshot(): Promise<Record<string, string>> {
    const { rows } = await server.db.raw<{ rows: { name: string; rows: number; hash: string }[] }>(snapshotSql);
    return Object.fromEntries(rows.map((row) => [row.name, `${row.rows} rows, ${row.hash}`]));
  }

  async function send(request: FuzzRequest, streaming: boolean): Promise<Answer> {
    const options = { method: request.method, url: request.url, headers: request.headers, payloadAsStream: streaming, ...(request.payload === undefined ? {} : { payload: request.payload }) };
    const response = await server.app.inject(options as InjectOptions);
    const answer = { statusCode: response.statusCode, headers: response.headers };
    if (!streaming) return { ...answer, body: response.body };
    // An open event stream never ends by itself: the client goes away, as a browser would.
    if (response.statusCode === 200) {
      response.raw.res.destroy();
      return { ...answer, body: '' };
    }
    const chunks: Buffer[] = [];
    for await (const chunk of response.stream()) chunks.push(Buffer.from(chunk as Buffer));
    return { ...answer, body: Buffer.concat(chunks).toString('utf8') };
  }

  async function withDeadline<T>(work: Promise<T>, label: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${answerDeadlineMs} ms: ${label}`)), answerDeadlineMs);
    });
    try {
      return await Promise.race([work, deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  function describeRequest(request: FuzzRequest): string {
    const payload = request.payload === undefined ? '' : ` body(${request.payload.length}): ${JSON.stringify(request.payload.toString().slice(0, 300))}`;
    return `${request.method} ${request.url.slice(0, 300)} [${request.mutations.join('; ') || 'as the contract says'}]${payload}`;
  }

  function assertProblemAnswer(answer: Answer, head: boolean, label: string): void {
    assert.match(String(answer.headers['content-type']), /^application\/problem\+json/, `${label}: ${answer.statusCode} is not a problem document`);
    if (head) return;
    const problem = JSON.parse(answer.body) as { type?: unknown; title?: unknown; status?: unknown; request_id?: unknown };
    assert.match(String(problem.type), /^urn:duplex:problem:[a-z-]+$/, `${label}: type`);
    assert.ok(typeof problem.title === 'string' && problem.title.length > 0, `${label}: title`);
    assert.equal(problem.status, answer.statusCode, `${label}: status`);
    // The id that names the request in the logs.
    assert.equal(problem.request_id, answer.headers['x-request-id'], `${label}: request_id`);
  }

  async function exercise(operation: ContractOperation, request: FuzzRequest, statuses: Map<number, number>): Promise<void> {
    const label = describeRequest(request);
    const before = await snapshot();
    const answer = await withDeadline(send(request, operation.operationId === 'streamEvents'), label);
    statuses.set(answer.statusCode, (statuses.get(answer.statusCode) ?? 0) + 1);
    const requestId = String(answer.headers['x-request-id']);
    assert.ok(
      answer.statusCode < 500,
      `${label} → ${answer.statusCode} ${answer.body.slice(0, 500)}\nserver log:\n${errorLines.filter((line) => line.includes(requestId)).join('')}`,
    );
    if (answer.statusCode >= 400) {
      assertProblemAnswer(answer, request.method === 'HEAD', label);
      assert.deepEqual(await snapshot(), before, `${label} was refused with ${answer.statusCode} but changed Postgres`);
    }
    assert.deepEqual(clusterManager.unexpected, [], `${label} reached the cluster-manager outside its API`);
    // Bodies carry `__proto__` and `constructor.prototype` keys: none may reach the prototypes.
    assert.equal(Object.hasOwn(Object.prototype, 'polluted'), false, `${label} polluted Object.prototype`);
    const health = await server.app.inject({ method: 'GET', url: '/healthz' });
    assert.equal(health.statusCode, 200, `after ${label}: /healthz answered ${health.statusCode}`);
  }

  // The contract allows agent names up to 128 characters (ids up to 191): such an agent registers
  // and heartbeats (the router takes path parameters up to 512 characters).
  it(
    'an agent whose name is as long as the contract allows can heartbeat',
    async () => {
      const registered = await server.app.inject({
        method: 'POST',
        url: '/v1/agents',
        payload: { name: 'n'.repeat(120), server_id: 'A', storage_system_id: 'ss1', cluster_id: 'c0', url: agent.url, pid: 4244, started_at: '2026-11-25T10:00:00Z' },
      });
      assert.equal(registered.statusCode, 201, registered.body);
      const { id, incarnation } = registered.json<{ id: string; incarnation: number }>();
      const heartbeat = await server.app.inject({ method: 'POST', url: `/v1/agents/${id}/heartbeats`, payload: { incarnation } });
      assert.equal(heartbeat.statusCode, 200, heartbeat.body);
    },
  );

  for (const operation of operations) {
    it(`${operation.operationId} (${operation.method} ${operation.path})`, async (t) => {
      const statuses = new Map<number, number>();
      await fc.assert(
        fc.asyncProperty(requestsFor(operation, known), async (request) => {
          await exercise(operation, request, statuses);
        }),
        { seed, numRuns, includeErrorInReport: true },
      );
      // How far the requests got: a run of only 4xx would say the generators miss the operation.
      t.diagnostic(`answers: ${[...statuses].sort(([a], [b]) => a - b).map(([status, count]) => `${status}×${count}`).join(' ')}`);
      // The database pool and the lease survived the run.
      const ready = await server.app.inject({ method: 'GET', url: '/readyz' });
      assert.equal(ready.statusCode, 200, ready.body);
    });
  }
});
