import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { loadResolvedContract, type ContractName } from '@duplex/contracts';
import { bearer, createTestDatabase, freePort, waitFor, type TestDatabase } from '@duplex/testkit';
import { ContractRecorder } from './support/contract-recorder.ts';
import { operationsOf, samplePath } from './support/operations.ts';
import { agentApp, driverApp, GiB, listen, serverApp, type App, type InjectRequest } from './support/services.ts';

// Every operation that takes a body refuses one it cannot read before its handler runs, and
// the refusal must be one the contract documents: 415 for a body that is not JSON, 413 for a
// body over the 1 MiB limit, 400 for a missing body.

const refusals = [
  { label: 'a text/plain body', status: 415, code: 'unsupported-media-type', request: { headers: { 'content-type': 'text/plain' }, payload: 'run it' } },
  { label: 'a body over the limit', status: 413, code: 'payload-too-large', request: { headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ padding: 'x'.repeat(1_100_000) }) } },
  { label: 'no body', status: 400, code: 'validation-failed', request: { headers: {} } },
] as const satisfies readonly { label: string; status: number; code: string; request: { headers: Record<string, string>; payload?: string } }[];

/**
 * Refusals the services give today that the contracts do not document, and one the server
 * gets wrong. Each runs as a todo test: it is reported, but does not fail the run, until the
 * contract or the service is fixed; then remove it from this list.
 */
const knownGaps = new Map<string, string>();

const contracts = ['server', 'agent', 'driver'] as const satisfies readonly ContractName[];

describe('refusals of unreadable bodies are documented', () => {
  let tdb: TestDatabase;
  const apps = new Map<ContractName, App>();
  const recorders = new Map<ContractName, ContractRecorder>(contracts.map((name) => [name, new ContractRecorder(name)]));
  /** What a dispatch to the agent carries: the credential its server gave it. */
  let dispatchCredential: { authorization: string };

  before(async () => {
    tdb = await createTestDatabase();
    const server = await serverApp(tdb.db, tdb.url);
    apps.set('server', server);
    // The agent registers with the server for real, so that a dispatch can carry its credential.
    const serverPort = await freePort();
    const agent = await agentApp({ SERVER_URL: `http://127.0.0.1:${serverPort}` });
    apps.set('agent', agent);
    apps.set('driver', (await driverApp([{ id: 'd0', home_cluster: 'c0', capacity_bytes: GiB }])).app);
    for (const [name, app] of apps) recorders.get(name)?.observe(app);
    await listen(server, serverPort);
    agent.agent.start(await listen(agent));
    const credential = await waitFor('the agent to register', async () => agent.agent.link?.registration?.credential);
    dispatchCredential = bearer(credential);
    // The agent the contract's example id names, so that its requests get past authentication to the body.
    const registered = await server.inject({ method: 'POST', url: '/v1/agents', payload: { name: 'ss1-c0-A', server_id: 'A', storage_system_id: 'ss1', cluster_id: 'c0', url: 'http://127.0.0.1:9', pid: 1, started_at: '2026-11-25T10:00:00Z' } });
    assert.equal(registered.json<{ id: string }>().id, 'A:ss1:c0:ss1-c0-A', registered.body);
  });
  after(async () => {
    for (const app of apps.values()) await app.close();
    await tdb.drop();
  });

  const cases = new Set<string>();
  it('lists as known gaps only cases that exist', () => {
    assert.deepEqual([...knownGaps.keys()].filter((key) => !cases.has(key)), []);
  });

  for (const name of contracts) {
    for (const operation of operationsOf(loadResolvedContract(name)).filter((candidate) => candidate.operation.requestBody !== undefined)) {
      for (const refusal of refusals) {
        const key = `${name} ${operation.operationId ?? '?'} ${refusal.status}`;
        cases.add(key);
        const todo = knownGaps.get(key) ?? false;
        it(`${name} ${operation.operationId ?? '?'} answers ${refusal.label} with a documented ${refusal.status}`, { todo }, async () => {
          const app = apps.get(name);
          const recorder = recorders.get(name);
          assert.ok(app && recorder && operation.operationId);
          const response = await recorder.call(app, operation.operationId, refusal.status, {
            method: operation.method as InjectRequest['method'],
            url: samplePath(operation),
            ...refusal.request,
            // submitTask needs its header to get as far as the body.
            headers: { 'idempotency-key': 'refusal-test', ...(name === 'agent' && operation.operationId === 'acceptTasks' ? dispatchCredential : {}), ...refusal.request.headers },
          });
          assert.equal(response.json<{ type: string }>().type, `urn:duplex:problem:${refusal.code}`);
        });
      }
    }
  }
});
