import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '@duplex/shared';
import { loadClusterManagerConfig, parseServers } from '../src/config.ts';
import { ownedDevices, sameDevices, type DiscoveredDevice } from '../src/lib/inventory.ts';

const discovered = (id: string, home: string, state: 'available' | 'unavailable' = 'available'): DiscoveredDevice => ({
  id,
  home_cluster: home,
  capacity_bytes: 100,
  used_bytes: 10,
  volume_count: 1,
  state,
  reason: state === 'available' ? null : 'gone',
  epoch: 0,
});

describe('ownedDevices', () => {
  it('takes the home devices at first launch, with the cluster epoch', () => {
    const devices = ownedDevices('c0', 1, [discovered('d1', 'c0'), discovered('d0', 'c0'), discovered('d4', 'c1')], []);
    assert.deepEqual(devices.map((device) => [device.id, device.owner_cluster, device.epoch]), [
      ['d0', 'c0', 1],
      ['d1', 'c0', 1],
    ]);
  });

  it('follows stored ownership: a device taken over stays with its new owner', () => {
    const stored = [
      { id: 'd0', home_cluster: 'c0', owner_cluster: 'c1', epoch: 2 },
      { id: 'd4', home_cluster: 'c1', owner_cluster: 'c1', epoch: 1 },
    ];
    const devices = ownedDevices('c1', 1, [discovered('d0', 'c0'), discovered('d4', 'c1')], stored);
    assert.deepEqual(devices.map((device) => [device.id, device.home_cluster, device.epoch]), [
      ['d0', 'c0', 2],
      ['d4', 'c1', 1],
    ]);
    assert.deepEqual(ownedDevices('c0', 1, [discovered('d0', 'c0')], stored), []);
  });

  it('keeps a stored device the driver no longer finds, as unavailable', () => {
    const devices = ownedDevices('c0', 1, [], [{ id: 'd0', home_cluster: 'c0', owner_cluster: 'c0', epoch: 1 }]);
    assert.equal(devices.length, 1);
    assert.equal(devices[0]?.state, 'unavailable');
    assert.match(devices[0]?.reason ?? '', /no longer finds/);
  });

  it('reports discovery state and reason', () => {
    const [device] = ownedDevices('c0', 1, [discovered('d0', 'c0', 'unavailable')], []);
    assert.equal(device?.state, 'unavailable');
    assert.equal(device?.reason, 'gone');
  });
});

describe('sameDevices', () => {
  it('compares fields, not key order, and sees any change', () => {
    const [device] = ownedDevices('c0', 1, [discovered('d0', 'c0')], []);
    const reordered = JSON.parse(JSON.stringify(Object.fromEntries(Object.entries(device!).reverse())));
    assert.equal(sameDevices([device!], [reordered]), true);
    assert.equal(sameDevices([device!], [{ ...device!, used_bytes: 11 }]), false);
    assert.equal(sameDevices([device!], []), false);
  });
});

describe('configuration', () => {
  it('parses the configured servers', () => {
    assert.deepEqual(parseServers('A=http://h:1,B=http://h:2'), [
      { id: 'A', url: 'http://h:1' },
      { id: 'B', url: 'http://h:2' },
    ]);
  });

  it('refuses a server named twice, a malformed list, and a missing database', () => {
    assert.throws(() => parseServers('A=http://h:1,A=http://h:2'), ConfigError);
    assert.throws(() => loadClusterManagerConfig({ DATABASE_URL: 'postgres://x', CM_SERVERS: 'A:http://h' }), /CM_SERVERS/);
    assert.throws(() => loadClusterManagerConfig({}), /DATABASE_URL/);
  });
});
