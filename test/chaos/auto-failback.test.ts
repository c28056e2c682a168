import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { bearer, testAdminToken, waitFor } from '@duplex/testkit';
import { TopologyHarness } from '@duplex/harness';

describe('automatic failback after a configured stable period', { timeout: 120_000 }, () => {
  let harness: TopologyHarness;

  before(async () => {
    harness = await TopologyHarness.start({ devicesPerCluster: 1, env: { FAILBACK_AUTO_AFTER_MS: '1500' } });
  });
  after(() => harness?.stop());

  it('gives a lost cluster\u2019s devices to its peer, then back once it has been up long enough', async () => {
    await harness.killCluster('c0');
    const taken = await waitFor('c1 to take d0 over', async () => {
      const row: { owner_cluster: string; epoch: number } | undefined = await harness.db('devices').where({ id: 'd0' }).first('owner_cluster', 'epoch');
      return row?.owner_cluster === 'c1' ? row : undefined;
    });
    // Both servers show the dead cluster as failed, though its last report said online.
    for (const server of ['A', 'B'] as const) {
      const response = await fetch(`${harness.serverUrl(server)}/v1/storage-systems/ss1/clusters`, { headers: bearer(testAdminToken) });
      assert.equal(response.status, 200);
      const { items } = (await response.json()) as { items: { id: string; state: string }[] };
      assert.deepEqual(items.map((cluster) => `${cluster.id}:${cluster.state}`), ['c0:failed', 'c1:online'], `server ${server}`);
    }
    await harness.restart('driver-ss1-c0');
    await harness.restart('cluster-manager-ss1-c0');
    const back = await waitFor(
      'c0 to fail back by itself',
      async () => {
        const row: { owner_cluster: string; epoch: number } | undefined = await harness.db('devices').where({ id: 'd0' }).first('owner_cluster', 'epoch');
        return row?.owner_cluster === 'c0' ? row : undefined;
      },
      20_000,
      100,
    );
    assert.ok(back.epoch > taken.epoch);
    const cluster: { state: string } = await harness.db('clusters').where({ id: 'c0' }).first('state');
    assert.equal(cluster.state, 'online');
    const events: { type: string }[] = await harness.db('events').whereIn('type', ['cluster.failover', 'cluster.failback']).orderBy('id').select('type');
    assert.deepEqual(events.map((event) => event.type), ['cluster.failover', 'cluster.failback']);
  });
});
