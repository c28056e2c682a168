import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TopologyHarness } from '@duplex/harness';
import { createDuplexClient } from '@duplex/client';
import { JsonClient, UpstreamError, type ClientTls } from '@duplex/shared';
import { bearer, makeTestCertificates, testAdminToken, testClusterToken, type TestCertificates } from '@duplex/testkit';

// The whole topology over HTTPS with mutual TLS: every process serves with a certificate made
// for this test, and every call between them (registration, heartbeats, dispatch, driver work,
// broadcasts, peer checks) presents one and verifies the other side's against the test's CA.

describe('the topology over HTTPS with mutual TLS', { timeout: 240_000 }, () => {
  let certs: TestCertificates;
  let harness: TopologyHarness;
  let trusted: ClientTls;

  /** One call with the given TLS (the harness's own, which the test shares, when omitted). */
  const call = async <T>(url: string, method: string, path: string, options: { tls?: ClientTls; headers?: Record<string, string>; body?: unknown } = {}) => {
    const client = new JsonClient(url, { name: 'test', connections: 1, timeoutMs: 10_000, ...(options.tls ? { tls: options.tls } : {}), headers: { ...bearer(testAdminToken), ...options.headers } });
    try {
      return await client.call<T>(method, path, { body: options.body });
    } finally {
      await client.destroy();
    }
  };

  before(async () => {
    certs = await makeTestCertificates();
    trusted = { ca: readFileSync(certs.caFile), cert: readFileSync(certs.certFile), key: readFileSync(certs.keyFile) };
    harness = await TopologyHarness.start({ tls: certs });
  });
  after(async () => {
    await harness?.stop();
    await certs?.remove();
  });

  it('registers all four agents at https URLs', async () => {
    const rows: { url: string }[] = await harness.db('agents').select('url');
    assert.equal(rows.length, 4);
    for (const { url } of rows) assert.match(url, /^https:\/\/127\.0\.0\.1:\d+$/);
  });

  it('runs a task end to end through the duplex client over mutual TLS: bytes on the device', async () => {
    // Server B first, stopped, so the client also fails over (over TLS) to A.
    harness.signal('server-B', 'SIGSTOP');
    try {
      const client = createDuplexClient({ servers: [harness.serverUrl('B'), harness.serverUrl('A')], token: testAdminToken, tls: trusted, timeoutMs: 2_000 });
      const task = await client.submitTask({ kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'over-tls', size_bytes: 1_048_576 } });
      const states: string[] = [];
      const done = await client.waitForTask(task.id, { timeoutMs: 60_000, onState: (current) => states.push(current.state) });
      assert.equal(done.state, 'succeeded');
      assert.equal(done.cluster_id, 'c0');
      assert.equal(states.at(-1), 'succeeded');
    } finally {
      harness.signal('server-B', 'SIGCONT');
    }
    assert.equal(statSync(join(harness.deviceRoot, 'd0', 'volumes', 'over-tls')).size, 1_048_576);
  });

  it('refuses, during the handshake, a caller without a certificate or with one from another authority', async () => {
    const strangers: [string, ClientTls][] = [
      ['no certificate', { ca: trusted.ca }],
      ["another authority's certificate", { ca: trusted.ca, cert: readFileSync(certs.otherCertFile), key: readFileSync(certs.otherKeyFile) }],
    ];
    const c0 = harness.topology.storage_systems[0]!.clusters.find((cluster) => cluster.id === 'c0')!;
    for (const [who, tls] of strangers) {
      for (const url of [harness.serverUrl('A'), c0.manager_url, c0.driver_url]) {
        await assert.rejects(call(url, 'GET', '/healthz', { tls }), UpstreamError, `${who} at ${url}`);
      }
    }
    assert.equal((await call(harness.serverUrl('A'), 'GET', '/healthz', { tls: trusted })).status, 200);
  });

  it("refuses, past TLS, another cluster's token at a cluster's driver", async () => {
    const c0 = harness.topology.storage_systems[0]!.clusters.find((cluster) => cluster.id === 'c0')!;
    const asC1 = await call(c0.driver_url, 'GET', '/v1/devices', { tls: trusted, headers: bearer(testClusterToken('c1')) });
    assert.equal(asC1.status, 401);
    const asC0 = await call(c0.driver_url, 'GET', '/v1/devices', { tls: trusted, headers: bearer(testClusterToken('c0')) });
    assert.equal(asC0.status, 200);
  });
});
