import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TopologyHarness } from '@duplex/harness';
import { bearer, testAdminToken, waitFor } from '@duplex/testkit';
import { FailoverClient, runLoad, type LedgerEntry } from './load.ts';

/** CHAOS_SECONDS sets the length of the run (the soak); the default is the short CI run. */
const seconds = Number(process.env.CHAOS_SECONDS ?? 40);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface TaskRow {
  id: string;
  kind: string;
  device: string;
  params: { name?: string; size_bytes?: number };
  state: string;
  error: { type: string } | null;
}

describe(`chaos: ${seconds} s of load while agents, drivers, servers, a cluster and Postgres fail`, { timeout: (seconds + 180) * 1000 }, () => {
  let harness: TopologyHarness;
  let client: FailoverClient;
  let ledger: LedgerEntry[] = [];
  const faults: string[] = [];

  before(async () => {
    harness = await TopologyHarness.start({ ownPostgres: true, devicesPerCluster: 2, capacityBytes: 1024 * 1024 * 1024 });
    client = new FailoverClient([harness.serverUrl('A'), harness.serverUrl('B')]);
  });

  after(async () => {
    await harness?.stop();
  });

  it('keeps accepting and finishing tasks through every fault', async () => {
    const abort = new AbortController();
    const load = runLoad(client, { devices: ['d0', 'd1', 'd2', 'd3'], ratePerSecond: 15, durationMs: seconds * 1000, signal: abort.signal });
    const inject = async (what: string, action: () => Promise<void> | void) => {
      faults.push(what);
      await action();
    };
    // One round of every fault; a longer run repeats the round.
    const rounds = Math.max(1, Math.floor(seconds / 40));
    for (let round = 0; round < rounds; round += 1) {
      await sleep(2_000);
      await inject('SIGKILL agent ss1-c0-A', () => harness.signalAgent('ss1-c0-A', 'SIGKILL').then(() => undefined));
      await sleep(3_000);
      const stopped = await harness.signalAgent('ss1-c1-B', 'SIGSTOP');
      faults.push('SIGSTOP agent ss1-c1-B for 4 s');
      await sleep(4_000);
      try {
        process.kill(stopped, 'SIGCONT');
      } catch {
        // the cluster-manager killed it as hung
      }
      await inject('SIGKILL driver c1, back after 1 s', async () => {
        harness.signal('driver-ss1-c1', 'SIGKILL');
        await sleep(1_000);
        await harness.restart('driver-ss1-c1');
      });
      await sleep(2_000);
      await inject('SIGKILL server B, back after 3 s', async () => {
        harness.signal('server-B', 'SIGKILL');
        await sleep(3_000);
        await harness.restart('server-B');
      });
      await sleep(2_000);
      await inject('cluster c0 lost (manager, agents, driver), back after 4 s, then failback', async () => {
        await harness.killCluster('c0');
        await sleep(4_000);
        await harness.restart('driver-ss1-c0');
        await harness.restart('cluster-manager-ss1-c0');
        await waitFor('c0 to come back as recovering or online', async () => {
          const row: { state: string } | undefined = await harness.db('clusters').where({ id: 'c0' }).first('state');
          return row && row.state !== 'failed' ? row.state : undefined;
        });
        const state: { state: string } | undefined = await harness.db('clusters').where({ id: 'c0' }).first('state');
        if (state?.state === 'recovering') {
          const response = await fetch(`${harness.serverUrl('A')}/v1/storage-systems/ss1/clusters/c0:failback`, { method: 'POST', headers: bearer(testAdminToken) });
          assert.equal(response.status, 200, await response.text());
        }
      });
      await sleep(2_000);
      await inject('Postgres down for 2 s', () => harness.restartPostgres(2_000));
    }
    ledger = await load;
    abort.abort();
    assert.ok(ledger.length > seconds * 5, `only ${ledger.length} tasks were accepted`);
  });

  it('finishes every accepted task, and the devices hold exactly what the succeeded tasks made', async () => {
    const final = (row: TaskRow) => ['succeeded', 'failed', 'cancelled'].includes(row.state);
    const tasks = await waitFor(
      'every task to be final',
      async () => {
        const rows: TaskRow[] = await harness.db('tasks').select('id', 'kind', 'device', 'params', 'state', 'error');
        return rows.every(final) ? rows : undefined;
      },
      90_000,
      250,
    ).catch(async (error: unknown) => {
      const open = await harness.db('tasks').whereNotIn('state', ['succeeded', 'failed', 'cancelled']).select('id', 'state', 'server_id', 'agent_id', 'cluster_id', 'device', 'attempt');
      const agents = await harness.db('agents').select('id', 'incarnation', 'lease_expires_at');
      console.log(`open tasks: ${JSON.stringify(open.slice(0, 20))}\nagents: ${JSON.stringify(agents)}`);
      throw error;
    });
    const byId = new Map(tasks.map((task) => [task.id, task]));
    for (const entry of ledger) assert.ok(byId.has(entry.id), `accepted task ${entry.id} is not stored`);

    const expected = new Map<string, number>();
    for (const task of tasks.filter((row) => row.state === 'succeeded' && row.kind === 'volume.create')) {
      expected.set(`${task.device}/${task.params.name}`, task.params.size_bytes ?? 0);
    }
    for (const task of tasks.filter((row) => row.state === 'succeeded' && row.kind === 'volume.delete')) {
      expected.delete(`${task.device}/${task.params.name}`);
    }
    const onDisk = new Map<string, number>();
    for (const device of readdirSync(harness.deviceRoot)) {
      const volumes = join(harness.deviceRoot, device, 'volumes');
      for (const name of readdirSync(volumes)) onDisk.set(`${device}/${name}`, statSync(join(volumes, name)).size);
    }
    const counts = {
      accepted: tasks.length,
      succeeded: tasks.filter((task) => task.state === 'succeeded').length,
      failed: tasks.filter((task) => task.state === 'failed').length,
      client_retries: client.retries,
      volumes_on_disk: onDisk.size,
      faults: faults.length,
    };
    const failures = tasks.filter((task) => task.state === 'failed').map((task) => `${task.kind} ${task.device}: ${task.error?.type}`);
    console.log(`chaos counts: ${JSON.stringify(counts)}`);
    console.log(`faults: ${faults.join('; ')}`);
    if (failures.length > 0) console.log(`failed tasks: ${failures.join('; ')}`);
    assert.deepEqual([...onDisk].sort(), [...expected].sort(), 'the files on the devices must match the succeeded tasks exactly');
    // A task applied twice would fail on its own effect (the volume exists, or is already gone).
    assert.deepEqual(failures, [], 'no task may fail under these faults');
  });
});
