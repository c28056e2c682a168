import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { steadyLeases, TopologyHarness } from '@duplex/harness';
import { bearer, parsePrometheusText, testAdminToken, waitFor, type PrometheusExposition } from '@duplex/testkit';
import { assertSucceeded, getJson, waitForTask, type AgentList, type Task } from './helpers/api.ts';
import { logTails, readLog, type LogLine } from './helpers/logs.ts';

// The real topology as processes: one task submitted with a traceparent must be logged under
// that trace by the server, the agent and the driver, and every service's /metrics must be
// valid Prometheus text that shows the task and the system's vital signs.

async function scrape(baseUrl: string): Promise<PrometheusExposition> {
  const response = await fetch(`${baseUrl}/metrics`);
  assert.equal(response.status, 200, `${baseUrl}/metrics answered ${response.status}`);
  assert.match(String(response.headers.get('content-type')), /^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(await response.text());
}

/** Scrapes until `check` holds (counters lag the API by the time it takes to record them). */
async function scrapeUntil(what: string, baseUrl: string, check: (metrics: PrometheusExposition) => boolean): Promise<PrometheusExposition> {
  let last: PrometheusExposition | undefined;
  try {
    return await waitFor(
      what,
      async () => {
        last = await scrape(baseUrl);
        return check(last) ? last : undefined;
      },
      10_000,
      100,
    );
  } catch (error) {
    const names = last ? [...last.families.keys()].filter((name) => name.startsWith('duplex_')).join(', ') : '(no scrape)';
    throw new Error(`${(error as Error).message}; duplex metrics seen: ${names}`);
  }
}

function assertEventLoopLag(metrics: PrometheusExposition, service: string): void {
  const lag = metrics.samples('nodejs_eventloop_lag_seconds');
  assert.equal(lag.length, 1, `${service} reports its event loop lag`);
  assert.ok(lag[0]!.value >= 0, `${service} event loop lag ${lag[0]!.value}`);
  assert.ok(metrics.families.has('nodejs_eventloop_lag_p99_seconds'), `${service} reports the lag percentiles`);
}

describe('metrics and tracing across the real processes', { timeout: 180_000 }, () => {
  let harness: TopologyHarness;
  let task: Task;
  const traceId = randomBytes(16).toString('hex');
  const traceparent = `00-${traceId}-${randomBytes(8).toString('hex')}-01`;

  before(async () => {
    harness = await TopologyHarness.start({ devicesPerCluster: 1, backend: 'memory', env: { ...steadyLeases, LOG_LEVEL: 'debug' } });
    // d0 is at home in c0: server A runs it through its agent ss1-c0-A and the c0 driver.
    const response = await fetch(`${harness.serverUrl('A')}/v1/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': `trace-${randomUUID()}`, traceparent, ...bearer(testAdminToken) },
      body: JSON.stringify({ kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' }),
    });
    const body = await response.text();
    assert.equal(response.status, 202, body);
    assert.match(String(response.headers.get('traceparent')), new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`), 'the answer continues the caller trace');
    const accepted = JSON.parse(body) as Task;
    task = await waitForTask(harness.serverUrl('A'), accepted.id);
    assertSucceeded(task);
  });

  after(async () => {
    await harness?.stop();
  });

  it('logs the task under the caller trace in the server, the agent and the driver', async (t) => {
    const logsDir = harness.topology.logs_dir;
    // Agents write to their cluster-manager's log.
    const files = { server: 'server-A.log', agent: 'cluster-manager-ss1-c0.log', driver: 'driver-ss1-c0.log' };
    const traced = (lines: LogLine[]) => lines.filter((line) => line.trace_id === traceId);
    try {
      const found = await waitFor(
        'the task to be logged under its trace by all three',
        async () => {
          const lines = {
            server: await readLog(join(logsDir, files.server)),
            agent: await readLog(join(logsDir, files.agent)),
            driver: await readLog(join(logsDir, files.driver)),
          };
          const applied = traced(lines.server).some((line) => line.msg === 'task report applied' && line.task_id === task.id && line.state === 'succeeded');
          const ran = traced(lines.agent).some((line) => line.msg === 'task ran' && line.task_id === task.id && line.service === 'agent-ss1-c0-A');
          const executed = traced(lines.driver).some((line) => line.msg === 'execution' && line.task_id === task.id);
          return applied && ran && executed ? lines : undefined;
        },
        10_000,
        100,
      );
      // The submit request itself, from its first line to its last.
      const submit = traced(found.server).filter((line) => line.request_id === traced(found.server).find((first) => first.msg === 'incoming request')?.request_id);
      assert.deepEqual(submit.map((line) => line.msg).filter((msg) => msg === 'incoming request' || msg === 'request completed'), ['incoming request', 'request completed']);
      // The driver call was the agent's span: the driver's request logs continue it.
      assert.ok(traced(found.driver).some((line) => line.msg === 'incoming request'), 'the driver request is traced');
      // Every line that names the task, in any of the three, carries its trace.
      for (const [role, lines] of Object.entries(found)) {
        const aboutTask = lines.filter((line) => line.task_id === task.id);
        assert.ok(aboutTask.length > 0, `${role} logs the task`);
        for (const line of aboutTask) assert.equal(line.trace_id, traceId, `${role}: ${line.text}`);
      }
    } catch (error) {
      t.diagnostic(await logTails(logsDir));
      throw error;
    }
  });

  it('serves Prometheus metrics on every service that show the task and the vital signs', async () => {
    const system = harness.topology.storage_systems[0]!;
    const c0 = system.clusters.find((cluster) => cluster.id === 'c0')!;

    // A task can end before the first heartbeat after registration (one a second): wait for one too.
    const server = await scrapeUntil('server A to count the task and a heartbeat', harness.serverUrl('A'), (metrics) =>
      metrics.sum('duplex_tasks', { state: 'succeeded', kind: 'device.probe' }) >= 1 &&
      metrics.sum('duplex_task_end_to_end_latency_seconds_count', { outcome: 'succeeded' }) >= 1 &&
      metrics.sum('duplex_heartbeats_received_total', { outcome: 'renewed' }) > 0,
    );
    assert.equal(server.sum('duplex_tasks', { state: 'queued' }), 0);
    assert.ok(server.sum('duplex_tasks_submitted_total', { kind: 'device.probe' }) >= 1);
    assert.ok(server.sum('duplex_task_dispatch_latency_seconds_count', { attempt: 'first' }) >= 1);
    assert.ok(server.sum('duplex_heartbeats_received_total', { outcome: 'renewed' }) > 0);
    assert.ok(server.sum('duplex_inventory_version', { storage_system_id: 'ss1', cluster_id: 'c0' }) >= 1);
    assert.ok(server.sum('duplex_inventory_version', { storage_system_id: 'ss1', cluster_id: 'c1' }) >= 1);
    assert.ok(server.sum('duplex_http_request_duration_seconds_count', { method: 'POST', route: '/v1/tasks', status: '202' }) >= 1);
    for (const name of ['duplex_agent_lease_expiries_total', 'duplex_server_lease_expiries_total', 'duplex_task_adoptions_total', 'duplex_failovers_total']) {
      assert.ok(server.families.has(name), name);
    }
    assertEventLoopLag(server, 'server A');

    const agents = await getJson<AgentList>(harness.serverUrl('A'), '/v1/agents?cluster_id=c0');
    const agentUrl = agents.items.find((agent) => agent.name === 'ss1-c0-A')?.url;
    assert.ok(agentUrl, 'agent ss1-c0-A is registered with server A');
    const agent = await scrapeUntil('agent ss1-c0-A to count the task and a heartbeat', agentUrl, (metrics) =>
      metrics.sum('duplex_agent_tasks_total', { kind: 'device.probe', outcome: 'succeeded' }) >= 1 &&
      metrics.sum('duplex_agent_heartbeats_sent_total', { outcome: 'renewed' }) > 0,
    );
    assert.ok(agent.sum('duplex_agent_heartbeats_sent_total', { outcome: 'renewed' }) > 0);
    assert.ok(agent.sum('duplex_agent_driver_call_duration_seconds_count', { result: '2xx' }) >= 1);
    assertEventLoopLag(agent, 'agent ss1-c0-A');

    const driver = await scrapeUntil('the c0 driver to count the execution', c0.driver_url, (metrics) =>
      metrics.sum('duplex_driver_executions_total', { kind: 'device.probe', outcome: 'succeeded' }) >= 1,
    );
    assert.ok(driver.sum('duplex_driver_execution_duration_seconds_count', { kind: 'device.probe' }) >= 1);
    assertEventLoopLag(driver, 'driver c0');

    const manager = await scrape(c0.manager_url);
    assert.ok(manager.sum('duplex_inventory_version', { storage_system_id: 'ss1', cluster_id: 'c0' }) >= 1);
    for (const name of ['duplex_inventory_broadcasts_total', 'duplex_cluster_takeovers_total', 'duplex_cluster_failbacks_total', 'duplex_agent_restarts_total', 'duplex_cluster_lease_renew_failures_total']) {
      assert.ok(manager.families.has(name), name);
    }
    assertEventLoopLag(manager, 'cluster-manager c0');
  });
});
