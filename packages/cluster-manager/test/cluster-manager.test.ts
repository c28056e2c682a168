import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { buildApp as buildDriver, createBackend } from '@duplex/driver';
import { get } from 'node:http';
import { bearer, createTestDatabase, freePort, injectWithToken, processExists, testClusterToken, testJoinToken, testServiceToken, waitFor, type TestDatabase } from '@duplex/testkit';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/app.ts';
import { loadClusterManagerConfig } from '../src/config.ts';

interface IdentityRow {
  server_id: string;
  name: string;
  pid: number | null;
  state: string;
  restarts: number;
  started_at: Date;
}

/** The agent processes this test process started (through its cluster-manager) that are still running. */
async function agentPids(): Promise<number[]> {
  const children: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    // The parent's pid is the second field after the command's closing parenthesis.
    const [, parent] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const command = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (Number(parent) === process.pid && /agent/.test(command)) children.push(Number(entry));
  }
  return children;
}

/** Sockets of this machine in TIME_WAIT (closed, at 127.0.0.1) whose far end is `port`: one per connection closed by its near end. */
async function closedConnectionsTo(port: number): Promise<number> {
  const lines = (await readFile('/proc/net/tcp', 'utf8')).trim().split('\n').slice(1);
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  return lines.filter((line) => {
    const [, , remote, state] = line.trim().split(/\s+/);
    return state === '06' && remote?.endsWith(`:${hexPort}`);
  }).length;
}

describe('cluster-manager with a real driver and real agent processes', () => {
  let tdb: TestDatabase;
  let driver: FastifyInstance;
  let manager: FastifyInstance;

  /** Secrets in the test process's own environment, as a launcher might leave them: the agents must not inherit them (nor DATABASE_URL). */
  const inherited = { SERVICE_TOKEN: testServiceToken, ADMIN_TOKEN: 'dpx_an-admin-token-the-agents-must-not-see' };
  const saved: Record<string, string | undefined> = {};

  before(async () => {
    for (const [name, value] of Object.entries(inherited)) {
      saved[name] = process.env[name];
      process.env[name] = value;
    }
    tdb = await createTestDatabase();
    driver = await buildDriver({
      backend: createBackend({
        kind: 'memory',
        devices: [
          { id: 'd0', home_cluster: 'c0', capacity_bytes: 1000 },
          { id: 'd1', home_cluster: 'c0', capacity_bytes: 2000 },
          { id: 'd4', home_cluster: 'c1', capacity_bytes: 4000 },
        ],
      }),
      clusterToken: testClusterToken('c0'),
      logger: false,
    });
    const driverUrl = await driver.listen({ host: '127.0.0.1', port: 0 });
    // Only server A is configured for this cluster; nothing listens there, so the agent keeps retrying.
    const config = loadClusterManagerConfig({
      DATABASE_URL: tdb.url,
      STORAGE_SYSTEM_ID: 'ss1',
      CLUSTER_ID: 'c0',
      CM_PORT: String(await freePort()),
      DRIVER_URL: driverUrl,
      CM_SERVERS: `A=http://127.0.0.1:${await freePort()}`,
      JOIN_TOKEN: testJoinToken,
      CLUSTER_TOKEN: testClusterToken('c0'),
      SERVICE_TOKEN: testServiceToken,
      // The caller matrix below fails authentication on purpose, more often than the default limit allows.
      AUTH_FAILURE_LIMIT: '1000',
      AGENT_RESTART_BASE_MS: '20',
    });
    manager = injectWithToken(await buildApp({ config, db: tdb.db, logger: false }), testServiceToken);
    await manager.listen({ host: config.CM_HOST, port: config.CM_PORT });
    await manager.clusterManager.start();
  });

  after(async () => {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
    await manager?.close();
    await driver?.close();
    await tdb?.drop();
  });

  it('stores the discovered configuration and state of its own devices as version 1', async () => {
    const versions = await tdb.db('inventory_versions').where({ cluster_id: 'c0' });
    assert.equal(versions.length, 1);
    assert.equal(versions[0].version, 1);
    assert.equal(versions[0].cause, 'launch');
    const devices = await tdb.db('devices').orderBy('id');
    assert.deepEqual(
      devices.map((row: { id: string; owner_cluster: string; capacity_bytes: number; state: string }) => [row.id, row.owner_cluster, row.capacity_bytes, row.state]),
      [
        ['d0', 'c0', 1000, 'available'],
        ['d1', 'c0', 2000, 'available'],
      ],
    );
    const response = await manager.inject({ method: 'GET', url: '/v1/inventory' });
    assert.equal(response.statusCode, 200);
    const inventory = response.json();
    assert.equal(inventory.version, 1);
    assert.equal(inventory.devices.length, 2);
    const ready = await manager.inject({ method: 'GET', url: '/readyz' });
    assert.equal(ready.statusCode, 200);
  });

  it('does not store a new version when nothing changed', async () => {
    const inventory = await manager.clusterManager.refreshInventory('rescan');
    assert.equal(inventory.version, 1);
    const rows = await tdb.db('inventory_versions').select('version');
    assert.equal(rows.length, 1);
  });

  it('launches exactly one agent, for the configured server, and stores its identity', async () => {
    const identity = await waitFor('the agent identity', async () => {
      const rows: IdentityRow[] = await tdb.db('agent_identities');
      return rows.length === 1 && rows[0]?.pid ? rows[0] : undefined;
    });
    assert.equal(identity.server_id, 'A');
    assert.equal(identity.name, 'ss1-c0-A');
    assert.equal(identity.state, 'running');
    assert.ok(identity.started_at instanceof Date);
    assert.ok(processExists(identity.pid!), 'the agent process runs');
    const listed = (await manager.inject({ method: 'GET', url: '/v1/agents' })).json();
    assert.deepEqual(
      listed.items.map((item: { server_id: string; pid: number }) => [item.server_id, item.pid]),
      [['A', identity.pid]],
    );
  });

  it('loads no spare agent while its agent is not registered with its server', async () => {
    // Nothing listens at server A, so the agent never becomes ready; a spare loaded now would
    // only take CPU from the agents' start.
    const [identity] = await tdb.db<IdentityRow>('agent_identities');
    await sleep(2_000);
    assert.deepEqual(await agentPids(), [identity!.pid]);
  });

  it("gives its agents the cluster's token and the join token, and none of the control plane's secrets", async () => {
    const [identity] = await tdb.db<IdentityRow>('agent_identities');
    const environ = (await readFile(`/proc/${identity!.pid}/environ`, 'utf8')).split('\0');
    const value = (name: string) => environ.find((entry) => entry.startsWith(`${name}=`))?.slice(name.length + 1);
    assert.equal(value('CLUSTER_TOKEN'), testClusterToken('c0'));
    assert.equal(value('JOIN_TOKEN'), testJoinToken);
    for (const name of [...Object.keys(inherited), 'DATABASE_URL']) assert.equal(value(name), undefined, `${name} reached the agent`);
  });

  it("takes the agents' reads with the cluster's token, and everything with the control plane's, and nothing else", async () => {
    const operations = [
      ['GET', '/v1/inventory', ['cluster', 'service']],
      ['POST', '/v1/inventory:refresh', ['service']],
      ['POST', '/v1/failback', ['service']],
      ['POST', '/v1/devices', ['service']],
      ['POST', '/v1/devices/d0:set-state', ['service']],
      ['DELETE', '/v1/devices/d0', ['service']],
      ['GET', '/v1/agents', ['service']],
    ] as const;
    const tokens = { cluster: testClusterToken('c0'), service: testServiceToken, 'other cluster': testClusterToken('c1'), none: undefined };
    const versions = await tdb.db('inventory_versions').count<{ count: string }[]>('* as count');
    for (const [method, url, allowed] of operations) {
      for (const [who, token] of Object.entries(tokens)) {
        const headers = token === undefined ? { authorization: undefined } : bearer(token);
        // No body: an allowed caller gets past authentication to the body's validation (400), a refused one does not (401).
        const response = await manager.inject({ method, url, headers });
        const refused = !(allowed as readonly string[]).includes(who);
        if (refused) {
          assert.equal(response.statusCode, 401, `${who} on ${method} ${url}`);
          assert.equal(response.json().type, 'urn:duplex:problem:unauthenticated');
        } else assert.notEqual(response.statusCode, 401, `${who} on ${method} ${url}`);
      }
    }
    assert.deepEqual(await tdb.db('inventory_versions').count<{ count: string }[]>('* as count'), versions, 'no refused call stored anything');
  });

  it('restarts an agent that is killed, with a new pid and a restart count', async () => {
    const [before] = await tdb.db<IdentityRow>('agent_identities');
    process.kill(before!.pid!, 'SIGKILL');
    const after = await waitFor('the restarted agent', async () => {
      const [row] = await tdb.db<IdentityRow>('agent_identities');
      return row && row.pid && row.pid !== before!.pid && row.state === 'running' ? row : undefined;
    });
    assert.equal(after.restarts, 1);
    assert.ok(processExists(after.pid!));
  });

  it("checks its agent's health over one kept connection, not a new one per check", async () => {
    const url = await waitFor('the agent to announce its URL', async () => manager.clusterManager.supervisor.urls()[0]);
    // The agent's count of the health checks it answered, read on a connection the agent closes (not counted below).
    const healthChecks = () =>
      new Promise<number>((resolve, reject) => {
        const request = get(`${url}/metrics`, { agent: false, headers: { ...bearer(testClusterToken('c0')), connection: 'close' } }, (response) => {
          let text = '';
          response.setEncoding('utf8');
          response.on('data', (chunk: string) => (text += chunk));
          response.on('end', () => {
            const line = text.split('\n').find((candidate) => candidate.startsWith('duplex_http_request_duration_seconds_count') && candidate.includes('route="/healthz"'));
            resolve(Number(line?.split(' ').at(-1) ?? 0));
          });
        });
        request.on('error', reject);
      });
    const checksBefore = await healthChecks();
    const closedBefore = await closedConnectionsTo(Number(new URL(url).port));
    // Five checks at the default interval (500 ms).
    await sleep(2_700);
    const closedAfter = await closedConnectionsTo(Number(new URL(url).port));
    const checksAfter = await healthChecks();
    assert.ok(checksAfter - checksBefore >= 4, `the agent answered ${checksAfter - checksBefore} health checks`);
    assert.ok(closedAfter - closedBefore <= 1, `${closedAfter - closedBefore} connections to the agent were closed meanwhile`);
  });

  it('refuses bad input with problem documents and changes nothing', async () => {
    const before = await tdb.db('inventory_versions').select('version');
    for (const [method, url, status] of [
      ['GET', '/v1/inventory?version=abc', 400],
      ['GET', '/v1/agents?limit=5', 400],
      ['POST', '/v1/inventory', 404],
    ] as const) {
      const response = await manager.inject({ method, url, headers: { 'x-request-id': 'cm-bad-1' } });
      assert.equal(response.statusCode, status, `${method} ${url}`);
      assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
      assert.equal(response.json().request_id, 'cm-bad-1');
    }
    assert.deepEqual(await tdb.db('inventory_versions').select('version'), before);
  });

  it('stops its agents when it closes', async () => {
    const [row] = await tdb.db<IdentityRow>('agent_identities');
    await manager.close();
    assert.equal(processExists(row!.pid!), false);
    const [stopped] = await tdb.db<IdentityRow>('agent_identities');
    assert.equal(stopped?.state, 'stopped');
  });
});

describe('a cluster-manager whose driver is slow to start', () => {
  it('keeps its cluster lease while the launch discovery waits for the driver', async () => {
    const tdb = await createTestDatabase();
    const driverPort = await freePort();
    const config = loadClusterManagerConfig({
      DATABASE_URL: tdb.url,
      STORAGE_SYSTEM_ID: 'ss1',
      CLUSTER_ID: 'c0',
      CM_PORT: String(await freePort()),
      DRIVER_URL: `http://127.0.0.1:${driverPort}`,
      CM_SERVERS: `A=http://127.0.0.1:${await freePort()}`,
      JOIN_TOKEN: testJoinToken,
      CLUSTER_TOKEN: testClusterToken('c0'),
      SERVICE_TOKEN: testServiceToken,
      CLUSTER_LEASE_TTL_MS: '300',
    });
    const manager = await buildApp({ config, db: tdb.db, logger: false });
    let driver: FastifyInstance | undefined;
    try {
      const starting = manager.clusterManager.start();
      // Four lease lengths with no driver: the lease must be renewed all along, or the peer would take the devices.
      const samples: boolean[] = [];
      const until = Date.now() + 1_200;
      await waitFor('the launch to take the lease', async () => (await tdb.db('clusters').where({ id: 'c0' }).first())?.lease_expires_at ?? undefined);
      while (Date.now() < until) {
        const { rows } = await tdb.db.raw<{ rows: { held: boolean }[] }>(`select lease_expires_at > now() as held from clusters where id = 'c0'`);
        samples.push(rows[0]!.held);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      driver = await buildDriver({ backend: createBackend({ kind: 'memory', devices: [{ id: 'd0', home_cluster: 'c0', capacity_bytes: 1000 }] }), clusterToken: testClusterToken('c0'), logger: false });
      await driver.listen({ host: '127.0.0.1', port: driverPort });
      await starting;
      assert.ok(samples.length >= 10, `only ${samples.length} samples`);
      assert.deepEqual(samples.filter((held) => !held), [], `the lease lapsed during the launch discovery: ${samples.join(', ')}`);
      const versions = await tdb.db('inventory_versions').where({ cluster_id: 'c0' });
      assert.deepEqual(versions.map((row: { cause: string }) => row.cause), ['launch']);
    } finally {
      await manager.close();
      await driver?.close();
      await tdb.drop();
    }
  });
});
