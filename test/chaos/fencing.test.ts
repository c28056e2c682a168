import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { bearer, testAdminToken, testClusterToken, waitFor } from '@duplex/testkit';
import { TopologyHarness } from '@duplex/harness';
import { FailoverClient } from './load.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('fencing: a cluster frozen and woken after its peer took over changes nothing', { timeout: 120_000 }, () => {
  let harness: TopologyHarness;
  let client: FailoverClient;

  before(async () => {
    harness = await TopologyHarness.start({ devicesPerCluster: 2, ownPostgres: true });
    client = new FailoverClient([harness.serverUrl('A')]);
  });
  after(() => harness?.stop());

  it('takes over from a frozen cluster, refuses its late work, and lets it back in as recovering', async () => {
    // Freeze c0 entirely, as a partition would: manager, driver and agents stop answering.
    const frozen = await harness.signalCluster('c0', 'SIGSTOP');
    const task = await client.submit({ kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'while-frozen', size_bytes: 8192 } });
    const done = await waitFor(
      'the task to run in c1 after the takeover',
      async () => {
        const current = await client.get(task.id);
        return current?.state === 'succeeded' ? current : undefined;
      },
      30_000,
      100,
    );
    assert.equal(done.cluster_id, 'c1');
    const fence = JSON.parse(readFileSync(join(harness.deviceRoot, 'd0', 'fence.json'), 'utf8')) as { epoch: number };
    assert.ok(fence.epoch >= 2, 'the new owner recorded its epoch on the device');
    const owner: { owner_cluster: string; epoch: number } = await harness.db('devices').where({ id: 'd0' }).first('owner_cluster', 'epoch');
    assert.deepEqual(owner, { owner_cluster: 'c1', epoch: fence.epoch });

    // Wake c0. Whatever it still held is refused by the driver (older epoch) or the server (older token).
    await harness.signalCluster('c0', 'SIGCONT', frozen);
    await waitFor('c0 to see it was taken over', async () => {
      const row: { state: string } | undefined = await harness.db('clusters').where({ id: 'c0' }).first('state');
      return row?.state === 'recovering' ? true : undefined;
    });
    await sleep(1_000);
    assert.ok(existsSync(join(harness.deviceRoot, 'd0', 'volumes', 'while-frozen')));
    const final = await client.get(task.id);
    assert.equal(final?.state, 'succeeded');
    assert.equal(final?.fencing_token, done.fencing_token, 'nothing completed the task again after the wake-up');

    // Failback returns d0 to c0 under a newer epoch, and work runs there again.
    const response = await fetch(`${harness.serverUrl('A')}/v1/storage-systems/ss1/clusters/c0:failback`, { method: 'POST', headers: bearer(testAdminToken) });
    const text = await response.text();
    assert.equal(response.status, 200, text);
    const failback = JSON.parse(text) as { epoch: number; devices: string[] };
    assert.ok(failback.epoch > fence.epoch);
    assert.deepEqual(failback.devices, ['d0', 'd1']);
    const after = await client.submit({ kind: 'volume.delete', storage_system_id: 'ss1', device: 'd0', params: { name: 'while-frozen' } });
    const deleted = await waitFor('the delete to run in c0 again', async () => {
      const current = await client.get(after.id);
      return current?.state === 'succeeded' ? current : undefined;
    });
    assert.equal(deleted.cluster_id, 'c0');
    assert.equal(existsSync(join(harness.deviceRoot, 'd0', 'volumes', 'while-frozen')), false);
  });

  it('fences its agents while the cluster cannot renew its lease, and lifts the fence when it can', async () => {
    const row: { url: string } = await harness.db('agents').where({ id: 'A:ss1:c1:ss1-c1-A' }).first('url');
    // Postgres is away for longer than the cluster lease (1 s): nobody can renew it. (Only the
    // agent's server can dispatch to it, with the agent's credential; the agent's status, read
    // with its cluster's token, says whether it is fenced, which is what refuses dispatches.)
    const fenced = () => fetch(`${row.url}/v1/status`, { headers: bearer(testClusterToken('c1')) }).then(async (response) => ((await response.json()) as { fenced?: boolean }).fenced);
    assert.equal(await fenced(), false);
    const outage = harness.restartPostgres(3_000);
    await waitFor('the agent to be fenced', async () => ((await fenced()) === true ? true : undefined), 3_000, 100);
    await outage;
    await waitFor('the fence to lift once the lease is renewed', async () => ((await fetch(`${row.url}/readyz`)).status === 200 ? true : undefined), 15_000, 200);
    assert.equal(await fenced(), false);
  });
});
