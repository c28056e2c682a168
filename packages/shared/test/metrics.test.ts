import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parsePrometheusText } from '@duplex/testkit';
import { register } from 'prom-client';
import { Counter, createServiceMetrics, secondsBetween } from '../src/metrics.ts';
import { createServiceApp, mountServiceContract, operationalHandlers } from '../src/service-app.ts';

/** An app serving the agent contract with stub behaviour: enough to exercise the shared parts. */
async function agentContractApp() {
  const app = await createServiceApp({ service: 'metered', contract: 'agent', logger: false });
  const stub = async () => ({});
  mountServiceContract(app, 'agent', {
    ...operationalHandlers('agent', async () => ({ registration: 'ok' })),
    getAgentStatus: stub,
    acceptTasks: stub,
    notifyInventoryChange: stub,
  });
  app.get('/things/:id', async () => ({ ok: true }));
  return app;
}

describe('service metrics', () => {
  it('serves Node default metrics, the event loop lag among them, and each app its own registry', async () => {
    const first = createServiceMetrics();
    const second = createServiceMetrics();
    new Counter({ name: 'duplex_only_in_first_total', help: 'A metric of the first registry.', registers: [first.registry] }).inc(3);
    const exposition = parsePrometheusText(await first.scrape());
    for (const name of ['nodejs_eventloop_lag_seconds', 'nodejs_eventloop_lag_p99_seconds', 'process_cpu_seconds_total', 'nodejs_heap_size_used_bytes']) {
      assert.ok(exposition.families.has(name), name);
    }
    assert.equal(exposition.families.get('duplex_http_request_duration_seconds')?.type, 'histogram');
    assert.equal(exposition.sum('duplex_only_in_first_total'), 3);
    const other = parsePrometheusText(await second.scrape());
    assert.equal(other.families.has('duplex_only_in_first_total'), false);
    assert.ok(other.families.has('nodejs_eventloop_lag_seconds'));
    // Nothing lands in prom-client's global registry.
    assert.equal(await register.metrics(), '\n');
  });

  it('times each request by method, route pattern and status, never by raw URL', async () => {
    const app = await agentContractApp();
    for (const url of ['/healthz', '/healthz', '/healthz?verbose=1', '/things/a1', '/things/b2', '/nowhere/x']) {
      await app.inject({ method: 'GET', url });
    }
    const response = await app.inject({ method: 'GET', url: '/metrics' });
    await app.close();
    assert.equal(response.statusCode, 200);
    assert.equal(response.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
    const exposition = parsePrometheusText(response.body);
    const count = (labels: Record<string, string>) => exposition.sum('duplex_http_request_duration_seconds_count', labels);
    assert.equal(count({ method: 'GET', route: '/healthz', status: '200' }), 2);
    assert.equal(count({ method: 'GET', route: '/healthz', status: '400' }), 1);
    assert.equal(count({ method: 'GET', route: '/things/:id', status: '200' }), 2);
    assert.equal(count({ method: 'GET', route: 'unmatched', status: '404' }), 1);
    const routes = new Set(exposition.samples('duplex_http_request_duration_seconds_count').map((sample) => sample.labels.route));
    assert.ok(![...routes].some((route) => route?.includes('a1') || route?.includes('?')), [...routes].join(', '));
    // Each request lands in a bucket: the +Inf bucket equals the count.
    assert.equal(exposition.sum('duplex_http_request_duration_seconds_bucket', { route: '/healthz', status: '200', le: '+Inf' }), 2);
  });

  it('refuses a query on /metrics as the contract says', async () => {
    const app = await agentContractApp();
    const response = await app.inject({ method: 'GET', url: '/metrics?format=json' });
    await app.close();
    assert.equal(response.statusCode, 400);
  });

  it('measures durations between instants, never negative', () => {
    assert.equal(secondsBetween(new Date(1_000), new Date(3_500)), 2.5);
    assert.equal(secondsBetween(new Date(3_500), new Date(1_000)), 0);
  });
});

describe('the Prometheus text reader', () => {
  it('refuses what Prometheus would refuse', () => {
    assert.throws(() => parsePrometheusText('undeclared 1\n'), /no declared family/);
    assert.throws(() => parsePrometheusText('# TYPE a counter\na{b="1} 1\n'), /not closed/);
    assert.throws(() => parsePrometheusText('# TYPE a counter\na one\n'), /not a number/);
    assert.throws(() => parsePrometheusText('# TYPE a counter\n# TYPE a gauge\n'), /declared twice/);
    assert.throws(() => parsePrometheusText('# TYPE h histogram\nh_bucket 1\n'), /without le/);
  });

  it('reads labels with escapes and special values', () => {
    const exposition = parsePrometheusText('# HELP g A gauge.\n# TYPE g gauge\ng{a="x\\"y",b="1\\\\2"} +Inf\ng{a="z"} -1.5e3 1700000000000\n');
    assert.deepEqual(exposition.samples('g', { a: 'x"y' }), [{ name: 'g', labels: { a: 'x"y', b: '1\\2' }, value: Number.POSITIVE_INFINITY }]);
    assert.equal(exposition.sum('g', { a: 'z' }), -1500);
    assert.equal(exposition.families.get('g')?.help, 'A gauge.');
  });
});
