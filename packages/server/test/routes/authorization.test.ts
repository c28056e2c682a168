import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { loadResolvedContract } from '@duplex/contracts';
import { defaultLogger } from '@duplex/shared';
import { bearer, testAdminToken } from '@duplex/testkit';
import { startServer, stopServer, type TestServer } from './helpers.ts';

type Role = 'viewer' | 'operator' | 'admin';
const rank: Record<Role, number> = { viewer: 1, operator: 2, admin: 3 };
const callers = ['none', 'viewer', 'operator', 'admin'] as const;

interface Operation {
  operationId: string;
  method: string;
  url: string;
  role: Role | undefined;
  caller: string | undefined;
  hasBody: boolean;
}

/** Every operation of the server contract, with path parameters filled in by a placeholder. */
function operations(): Operation[] {
  const document = loadResolvedContract('server');
  const found: Operation[] = [];
  for (const [path, item] of Object.entries(document.paths)) {
    for (const method of ['get', 'put', 'post', 'delete', 'patch'] as const) {
      const operation = item[method];
      if (!operation) continue;
      const role = operation['x-duplex-role'] as Role | undefined;
      const caller = operation['x-duplex-caller'] as string | undefined;
      found.push({ operationId: operation.operationId, method: method.toUpperCase(), url: path.replace(/\{[^}]+\}/g, 'x1'), role, caller, hasBody: operation.requestBody !== undefined });
    }
  }
  return found;
}

/** The rows an unauthorized call must leave as they were. */
async function snapshot(server: TestServer): Promise<string> {
  const tables = ['tasks', 'task_history', 'api_tokens', 'agents', 'events', 'devices', 'inventory_versions'];
  const counts = await Promise.all(tables.map(async (table) => `${table}=${JSON.stringify(await server.db(table).count('* as n'))}`));
  return counts.join(' ');
}

describe('authorization: every operation, against no token and each role', () => {
  let server: TestServer;
  const tokens: Partial<Record<Role, string>> = {};

  before(async () => {
    // The matrix fails authentication on purpose, more often than an address may by default.
    server = await startServer({ AUTH_FAILURE_LIMIT: '100000' });
    for (const role of ['viewer', 'operator', 'admin'] as const) {
      const response = await server.app.inject({ method: 'POST', url: '/v1/tokens', payload: { name: `matrix ${role}`, role } });
      assert.equal(response.statusCode, 201, response.body);
      tokens[role] = response.json<{ secret: string }>().secret;
    }
  });

  after(async () => {
    await stopServer(server);
  });

  it('names a role on every operation but the agents’ protocol (agents’ own credentials) and health, readiness, metrics and the contract (open)', () => {
    const byCaller = (caller: string) =>
      operations()
        .filter((operation) => operation.caller === caller)
        .map((operation) => operation.operationId)
        .sort();
    assert.deepEqual(byCaller('agent'), ['heartbeatAgent', 'reportInventory', 'reportTaskStates']);
    assert.deepEqual(byCaller('joining-agent'), ['registerAgent']);
    const open = operations().filter((operation) => !operation.role && !operation.caller).map((operation) => operation.operationId).sort();
    assert.deepEqual(open, ['getHealth', 'getMetrics', 'getOpenApiDocument', 'getReadiness']);
  });

  for (const operation of operations().filter((candidate) => candidate.role)) {
    it(`${operation.operationId} (${operation.role}): refused below its role and changing nothing, let through from it`, async () => {
      for (const caller of callers) {
        const before = await snapshot(server);
        const allowed = caller !== 'none' && rank[caller] >= rank[operation.role!];
        // The event stream never ends on its own: where it would open, HEAD answers its headers only.
        const method = operation.operationId === 'streamEvents' && allowed ? 'HEAD' : operation.method;
        const response = await server.app.inject({
          method: method as 'GET',
          url: operation.url,
          headers: { ...(caller === 'none' ? { authorization: undefined } : bearer(tokens[caller]!)), 'idempotency-key': `matrix-${operation.operationId}-${caller}` },
          ...(operation.hasBody ? { payload: {} } : {}),
        });
        const label = `${operation.method} ${operation.url} as ${caller}`;
        if (allowed) {
          assert.ok(![401, 403].includes(response.statusCode), `${label}: ${response.statusCode} ${response.body}`);
          continue;
        }
        assert.equal(response.statusCode, caller === 'none' ? 401 : 403, `${label}: ${response.body}`);
        assert.equal(response.json<{ type: string }>().type, `urn:duplex:problem:${caller === 'none' ? 'unauthenticated' : 'forbidden'}`);
        assert.equal(await snapshot(server), before, `${label} changed nothing`);
      }
    });
  }

  it('lets the open operations through without a token', async () => {
    for (const operation of operations().filter((candidate) => !candidate.role && !candidate.caller && candidate.method === 'GET')) {
      const response = await server.app.inject({ method: 'GET', url: operation.url, headers: { authorization: undefined } });
      assert.ok(![401, 403].includes(response.statusCode), `${operation.operationId}: ${response.statusCode}`);
    }
    // Swagger UI offers Authorize from the document's security scheme.
    const document = (await server.app.inject({ method: 'GET', url: '/docs/json', headers: { authorization: undefined } })).json<{ components: { securitySchemes: Record<string, { type: string; scheme: string }> } }>();
    assert.deepEqual(
      { type: document.components.securitySchemes.bearerAuth?.type, scheme: document.components.securitySchemes.bearerAuth?.scheme },
      { type: 'http', scheme: 'bearer' },
    );
  });

  it('serves Swagger UI with every contract in its list of definitions', async () => {
    const initializer = await server.app.inject({ method: 'GET', url: '/docs/static/swagger-initializer.js', headers: { authorization: undefined } });
    assert.equal(initializer.statusCode, 200);
    for (const url of ['/docs/json', '/docs/contracts/agent.json', '/docs/contracts/cluster-manager.json', '/docs/contracts/driver.json']) {
      assert.ok(initializer.body.includes(`"${url}"`), `the page lists ${url}`);
    }
    for (const [name, title] of [['agent', 'duplex agent API'], ['cluster-manager', 'duplex cluster-manager API'], ['driver', 'duplex driver API']]) {
      const response = await server.app.inject({ method: 'GET', url: `/docs/contracts/${name}.json`, headers: { authorization: undefined } });
      assert.equal(response.statusCode, 200, name);
      assert.equal(response.json<{ info: { title: string } }>().info.title, title);
    }
  });

  it('refuses a revoked token and an expired one', async () => {
    const made = await server.app.inject({ method: 'POST', url: '/v1/tokens', payload: { name: 'short-lived', role: 'viewer', expires_in_s: 60 } });
    const { id, secret } = made.json<{ id: string; secret: string }>();
    assert.equal((await server.app.inject({ method: 'GET', url: '/v1/tasks', headers: bearer(secret) })).statusCode, 200);
    await server.db('api_tokens').where({ id }).update({ expires_at: new Date(Date.now() - 1000) });
    server.app.duplex.authenticator.forget();
    assert.equal((await server.app.inject({ method: 'GET', url: '/v1/tasks', headers: bearer(secret) })).statusCode, 401);
    assert.equal((await server.app.inject({ method: 'DELETE', url: `/v1/tokens/${id}` })).statusCode, 200);
    const row = await server.db('api_tokens').where({ id }).first();
    assert.ok(row.revoked_at, 'revoked in Postgres');
    assert.notEqual(row.secret_sha256, secret, 'only a hash is stored');
    assert.equal(row.secret_sha256.length, 64);
  });
});

describe('secrets in the logs', () => {
  it('never writes a token, given or made, into the log, even at debug level', async () => {
    const lines: string[] = [];
    const stream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString('utf8'));
        done();
      },
    });
    const server = await startServer({}, { ...(defaultLogger('server-A') as object), level: 'debug', stream });
    try {
      const made = await server.app.inject({ method: 'POST', url: '/v1/tokens', payload: { name: 'logged', role: 'operator' } });
      const { secret } = made.json<{ secret: string }>();
      await server.app.inject({ method: 'GET', url: '/v1/tasks', headers: bearer(secret) });
      await server.app.inject({ method: 'GET', url: '/v1/tasks', headers: { authorization: `Bearer ${secret}x` } });
      await server.app.inject({ method: 'POST', url: '/v1/tokens', headers: bearer(secret), payload: { name: 'refused', role: 'admin' } });
      // What a careless log line of the headers would write, through the same logger.
      server.app.log.info({ headers: { authorization: `Bearer ${secret}` } }, 'headers');
      const log = lines.join('');
      assert.ok(lines.length > 5, 'the requests were logged');
      assert.match(log, /API token created/);
      for (const token of [secret, testAdminToken]) assert.equal(log.includes(token), false, 'a secret is in the log');
      assert.match(log, /\[redacted\]/);
    } finally {
      await stopServer(server);
    }
  });
});

describe('failed authentications', () => {
  it('refuses an address that failed too often with 429 and Retry-After, without looking at its token, until the window ends', async () => {
    const server = await startServer({ AUTH_FAILURE_LIMIT: '3', AUTH_FAILURE_WINDOW_MS: '1500' });
    try {
      const guess = (token: string) => server.app.inject({ method: 'GET', url: '/v1/tasks', headers: bearer(token), remoteAddress: '10.0.0.7' });
      for (let attempt = 0; attempt < 3; attempt += 1) assert.equal((await guess(`dpx_guess-${attempt}`)).statusCode, 401);
      const blocked = await guess(testAdminToken);
      assert.equal(blocked.statusCode, 429, 'even the right token waits');
      assert.equal(blocked.json<{ type: string }>().type, 'urn:duplex:problem:too-many-failures');
      assert.ok(Number(blocked.headers['retry-after']) >= 1);
      // Another address is not held back, and a role too low is no failure.
      const other = await server.app.inject({ method: 'GET', url: '/v1/tasks', remoteAddress: '10.0.0.8' });
      assert.equal(other.statusCode, 200);
      await new Promise((resolve) => setTimeout(resolve, 1_600));
      assert.equal((await guess(testAdminToken)).statusCode, 200, 'the window ended');
    } finally {
      await stopServer(server);
    }
  });
});
