import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InventoryView, type ClusterView, type ReportedDevice } from '../../src/lib/inventory-view.ts';

const GiB = 1024 ** 3;

function device(id: string, owner: string, overrides: Partial<ReportedDevice> = {}): ReportedDevice {
  return { id, home_cluster: owner, owner_cluster: owner, capacity_bytes: GiB, used_bytes: 0, volume_count: 0, state: 'available', reason: null, epoch: 1, ...overrides };
}

function clusterView(cluster: string, version: number, devices: ReportedDevice[], storageSystem = 'ss1'): ClusterView {
  return {
    storage_system_id: storageSystem,
    cluster_id: cluster,
    version,
    cluster_state: 'online',
    epoch: 1,
    recorded_at: '2026-11-25T10:00:00.000Z',
    devices,
    reported_by: `A:${storageSystem}:${cluster}:agent`,
    reported_at: '2026-11-25T10:00:01.000Z',
  };
}

describe('InventoryView.apply', () => {
  it('takes a newer version and ignores the same or an older one', () => {
    const view = new InventoryView();
    assert.equal(view.apply(clusterView('c0', 2, [device('d0', 'c0')])), true);
    assert.equal(view.apply(clusterView('c0', 1, [device('d9', 'c0')])), false);
    assert.equal(view.apply(clusterView('c0', 2, [device('d8', 'c0')])), false);
    assert.deepEqual(view.cluster('ss1', 'c0')?.devices.map((d) => d.id), ['d0']);
    assert.equal(view.apply(clusterView('c0', 3, [device('d1', 'c0')])), true);
    assert.equal(view.cluster('ss1', 'c0')?.version, 3);
    assert.deepEqual(view.cluster('ss1', 'c0')?.devices.map((d) => d.id), ['d1']);
  });

  it('keeps each cluster of each storage system apart', () => {
    const view = new InventoryView();
    view.apply(clusterView('c0', 5, [device('d0', 'c0')]));
    assert.equal(view.apply(clusterView('c1', 1, [device('d1', 'c1')])), true);
    assert.equal(view.apply(clusterView('c0', 1, [device('x0', 'c0')], 'ss2')), true);
    assert.deepEqual(view.storageSystemIds(), ['ss1', 'ss2']);
    assert.deepEqual(view.clustersOf('ss1').map((c) => c.cluster_id).sort(), ['c0', 'c1']);
    assert.deepEqual(view.clustersOf('ss2').map((c) => c.cluster_id), ['c0']);
    assert.deepEqual(view.clustersOf('ss3'), []);
    assert.equal(view.cluster('ss2', 'c1'), undefined);
  });
});

describe('InventoryView.locate', () => {
  it('finds a device in the cluster that owns it', () => {
    const view = new InventoryView();
    view.apply(clusterView('c0', 1, [device('d0', 'c0'), device('d1', 'c1')]));
    view.apply(clusterView('c1', 1, [device('d1', 'c1')]));
    assert.equal(view.locate('ss1', 'd0')?.cluster.cluster_id, 'c0');
    assert.equal(view.locate('ss1', 'd1')?.cluster.cluster_id, 'c1');
    assert.equal(view.locate('ss1', 'd7'), undefined);
    assert.equal(view.locate('ss2', 'd0'), undefined);
  });

  it('does not locate a device reported only by a cluster that does not own it', () => {
    const view = new InventoryView();
    view.apply(clusterView('c0', 1, [device('d1', 'c1', { home_cluster: 'c1' })]));
    assert.equal(view.locate('ss1', 'd1'), undefined);
  });

  it('picks the higher epoch when two clusters claim a device, in either report order', () => {
    const stale = clusterView('c0', 1, [device('d0', 'c0', { epoch: 1 })]);
    const takeover = clusterView('c1', 1, [device('d0', 'c1', { home_cluster: 'c0', epoch: 2 })]);
    for (const order of [[stale, takeover], [takeover, stale]]) {
      const view = new InventoryView();
      for (const report of order) view.apply(report);
      const location = view.locate('ss1', 'd0');
      assert.equal(location?.cluster.cluster_id, 'c1');
      assert.equal(location?.device.epoch, 2);
      assert.equal(location?.device.home_cluster, 'c0');
    }
  });

  it('follows failback: a newer report with a higher epoch wins the device back', () => {
    const view = new InventoryView();
    view.apply(clusterView('c0', 1, [device('d0', 'c0', { epoch: 1 })]));
    view.apply(clusterView('c1', 1, [device('d0', 'c1', { home_cluster: 'c0', epoch: 2 })]));
    view.apply(clusterView('c0', 2, [device('d0', 'c0', { epoch: 3 })]));
    assert.equal(view.locate('ss1', 'd0')?.cluster.cluster_id, 'c0');
    assert.equal(view.locate('ss1', 'd0')?.device.epoch, 3);
  });
});

describe('InventoryView.devicesOf', () => {
  it('lists each device once, at its owner with the highest epoch', () => {
    const view = new InventoryView();
    view.apply(clusterView('c0', 1, [device('d0', 'c0'), device('d1', 'c0', { state: 'unavailable', reason: 'pulled' })]));
    view.apply(clusterView('c1', 1, [device('d1', 'c1', { home_cluster: 'c0', epoch: 2 }), device('d2', 'c1')]));
    view.apply(clusterView('c0', 1, [device('x', 'c0')], 'ss2'));
    const devices = view.devicesOf('ss1').map(({ device: d, cluster }) => `${d.id}@${cluster.cluster_id}:${d.epoch}:${d.state}`).sort();
    assert.deepEqual(devices, ['d0@c0:1:available', 'd1@c1:2:available', 'd2@c1:1:available']);
    assert.deepEqual(view.devicesOf('ss2').map(({ device: d }) => d.id), ['x']);
    assert.deepEqual(view.devicesOf('nope'), []);
  });

  it('leaves out a device no reporting cluster owns', () => {
    const view = new InventoryView();
    view.apply(clusterView('c0', 1, [device('d0', 'c0'), device('d5', 'c1')]));
    assert.deepEqual(view.devicesOf('ss1').map(({ device: d }) => d.id), ['d0']);
  });
});
