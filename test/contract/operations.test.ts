import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { contractNames, loadContract, loadResolvedContract, type ContractName, type JsonSchema } from '@duplex/contracts';
import { contractRoutes, toRouterPath } from '@duplex/shared';
import { createTestDatabase, type TestDatabase } from '@duplex/testkit';
import { operationsOf, samplePath } from './support/operations.ts';
import { createSchemaValidator, describeErrors } from './support/schemas.ts';
import { servedRoutes } from './support/served-routes.ts';
import { agentApp, clusterManagerApp, driverApp, GiB, serverApp, type App } from './support/services.ts';

interface MediaTypeObject {
  schema?: JsonSchema;
  example?: unknown;
  examples?: Record<string, { value?: unknown }>;
}

const ajv = createSchemaValidator({ utcOnly: false });
const routeKey = (route: { method: string; url: string }): string => `${route.method} ${route.url}`;

for (const name of contractNames) {
  describe(`the ${name} contract`, () => {
    const raw = loadContract(name);
    const operations = operationsOf(raw);
    const resolved = operationsOf(loadResolvedContract(name));

    it('has operations', () => {
      assert.ok(operations.length > 0);
    });

    it('gives every operation an operationId, unique in the document', () => {
      const missing = operations.filter((operation) => operation.operationId === undefined || operation.operationId.trim() === '');
      assert.deepEqual(missing.map((operation) => `${operation.method} ${operation.path}`), []);
      const ids = operations.map((operation) => operation.operationId);
      const repeated = ids.filter((id, index) => ids.indexOf(id) !== index);
      assert.deepEqual(repeated, []);
    });

    it('gives every operation a summary', () => {
      const without = operations.filter((operation) => typeof operation.operation.summary !== 'string' || operation.operation.summary.trim() === '');
      assert.deepEqual(without.map((operation) => operation.operationId), []);
    });

    it('gives every operation at least one 2xx response', () => {
      const without = operations.filter((operation) => !Object.keys(operation.operation.responses).some((status) => /^2(\d\d|XX)$/.test(status)));
      assert.deepEqual(without.map((operation) => operation.operationId), []);
    });

    it('gives every request body and every response body a schema', () => {
      const missing: string[] = [];
      for (const { operationId, operation } of resolved) {
        const body = operation.requestBody;
        if (body !== undefined) {
          const media = Object.entries(body.content ?? {});
          if (media.length === 0) missing.push(`${operationId} request body has no media type`);
          for (const [mediaType, object] of media) if (!isSchema(object.schema)) missing.push(`${operationId} request ${mediaType}`);
        }
        for (const [status, response] of Object.entries(operation.responses)) {
          for (const [mediaType, object] of Object.entries(response.content ?? {})) {
            if (!isSchema(object.schema)) missing.push(`${operationId} ${status} ${mediaType}`);
          }
        }
      }
      assert.deepEqual(missing, []);
    });

    it('gives every parameter a schema and a description', () => {
      const missing: string[] = [];
      for (const { operationId, operation } of resolved) {
        for (const parameter of operation.parameters ?? []) {
          if (!isSchema(parameter.schema)) missing.push(`${operationId} ${parameter.in} ${parameter.name}: schema`);
          if (typeof parameter.description !== 'string' || parameter.description === '') missing.push(`${operationId} ${parameter.in} ${parameter.name}: description`);
        }
      }
      assert.deepEqual(missing, []);
    });

    it('gives every request body an example', () => {
      const without: string[] = [];
      for (const { operationId, operation } of resolved) {
        for (const [mediaType, object] of Object.entries((operation.requestBody?.content ?? {}) as Record<string, MediaTypeObject>)) {
          if (examplesOf(object).length === 0) without.push(`${operationId} ${mediaType}`);
        }
      }
      assert.deepEqual(without, []);
    });

    it('has examples (request and response) that match their schemas', () => {
      const wrong: string[] = [];
      let checked = 0;
      for (const { operationId, operation } of resolved) {
        const media: [string, MediaTypeObject][] = Object.entries((operation.requestBody?.content ?? {}) as Record<string, MediaTypeObject>).map(
          ([mediaType, object]) => [`${operationId} request ${mediaType}`, object],
        );
        for (const [status, response] of Object.entries(operation.responses)) {
          for (const [mediaType, object] of Object.entries((response.content ?? {}) as Record<string, MediaTypeObject>)) media.push([`${operationId} ${status} ${mediaType}`, object]);
        }
        for (const [where, object] of media) {
          if (!isSchema(object.schema)) continue;
          const validate = ajv.compile(object.schema);
          for (const [label, value] of examplesOf(object)) {
            checked += 1;
            if (!validate(value)) wrong.push(`${where} example ${label}: ${describeErrors(validate.errors)}`);
          }
        }
      }
      assert.deepEqual(wrong, []);
      assert.ok(checked > 0, 'the document has no examples at all');
    });
  });
}

describe('every service serves exactly its contract', () => {
  let tdb: TestDatabase;
  const apps: App[] = [];

  before(async () => {
    tdb = await createTestDatabase();
  });
  after(async () => {
    for (const app of apps) await app.close();
    await tdb.drop();
  });

  const builders: Record<ContractName, () => Promise<App>> = {
    server: () => serverApp(tdb.db, tdb.url),
    agent: () => agentApp(),
    'cluster-manager': () => clusterManagerApp(tdb.db, tdb.url),
    driver: async () => (await driverApp([{ id: 'd0', home_cluster: 'c0', capacity_bytes: GiB }])).app,
  };

  for (const name of contractNames) {
    it(`the ${name}`, async () => {
      const app = await builders[name]();
      apps.push(app);
      const answeredBy = new Map<string, string | undefined>();
      app.addHook('onRequest', async (request) => {
        const { config } = request.routeOptions;
        const operationId = 'operationId' in config ? config.operationId : undefined;
        answeredBy.set(String(request.id), typeof operationId === 'string' ? operationId : undefined);
      });
      await app.ready();

      // Every method of the document, in the router's path form (`{id}:cancel` needs its own).
      const documented = operationsOf(loadContract(name)).map((operation) => ({ method: operation.method, url: toRouterPath(operation.path) }));
      assert.deepEqual(contractRoutes(loadContract(name)).map(routeKey).sort(), documented.map(routeKey).sort(), 'contractRoutes, which mounts the routes, sees every operation');
      const served = servedRoutes(app);
      const servedKeys = new Set(served.map(routeKey));
      const documentedKeys = new Set(documented.map(routeKey));
      assert.deepEqual(documented.map(routeKey).filter((key) => !servedKeys.has(key)), [], 'documented operations that are not served');
      assert.deepEqual(served.map(routeKey).filter((key) => !documentedKeys.has(key)), [], 'served routes that are not documented');
      for (const route of documented) assert.ok(app.hasRoute({ method: route.method as 'GET', url: route.url }), `hasRoute ${routeKey(route)}`);

      // A request to each documented path reaches that operation's handler, and no other.
      for (const operation of operationsOf(loadContract(name))) {
        const url = samplePath(operation);
        const requestId = `probe-${name}-${operation.operationId ?? 'none'}`;
        // An event stream answers until the client leaves: only its start is awaited, then it is left.
        const streamed = Object.entries(operation.operation.responses).some(([status, response]) => status.startsWith('2') && 'text/event-stream' in (response.content ?? {}));
        const response = await app.inject({ method: operation.method as 'GET', url, headers: { 'x-request-id': requestId }, payloadAsStream: streamed });
        const body = streamed ? '' : response.body;
        if (streamed) response.stream().destroy();
        assert.equal(answeredBy.get(requestId), operation.operationId, `${operation.method} ${url} answered ${response.statusCode} ${body}`);
        assert.doesNotMatch(body, /urn:duplex:problem:route-not-found/, `${operation.method} ${url}`);
      }
    });
  }
});

function isSchema(value: unknown): value is JsonSchema {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A media type's examples as [label, value]: `example`, or each entry of `examples`. */
function examplesOf(object: MediaTypeObject): [string, unknown][] {
  const found: [string, unknown][] = [];
  if (object.example !== undefined) found.push(['example', object.example]);
  for (const [label, entry] of Object.entries(object.examples ?? {})) found.push([label, entry.value]);
  return found;
}
