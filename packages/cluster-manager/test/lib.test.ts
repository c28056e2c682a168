import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '@duplex/shared';
import { loadClusterManagerConfig, parseServers } from '../src/config.ts';
import { deviceChanges, notableChanges, ownedDevices, sameDevices, type AdminState, type DiscoveredDevice, type StoredDevice } from '../src/lib/inventory.ts';

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

const stored = (id: string, home: string, owner: string, epoch: number, adminState: AdminState = 'in_service', adminReason: string | null = null): StoredDevice => ({
  id,
  home_cluster: home,
  owner_cluster: owner,
  epoch,
  admin_state: adminState,
  admin_reason: adminReason,
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
    const rows = [stored('d0', 'c0', 'c1', 2), stored('d4', 'c1', 'c1', 1)];
    const devices = ownedDevices('c1', 1, [discovered('d0', 'c0'), discovered('d4', 'c1')], rows);
    assert.deepEqual(devices.map((device) => [device.id, device.home_cluster, device.epoch]), [
      ['d0', 'c0', 2],
      ['d4', 'c1', 1],
    ]);
    assert.deepEqual(ownedDevices('c0', 1, [discovered('d0', 'c0')], rows), []);
  });

  it('keeps a stored device the driver no longer finds, as unavailable', () => {
    const devices = ownedDevices('c0', 1, [], [stored('d0', 'c0', 'c0', 1)]);
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

describe('ownedDevices and operators', () => {
  it('shows an offline device as offline with the given reason, whatever the driver finds', () => {
    const [device] = ownedDevices('c0', 1, [discovered('d0', 'c0')], [stored('d0', 'c0', 'c0', 1, 'offline', 'new fan')]);
    assert.equal(device?.state, 'offline');
    assert.equal(device?.reason, 'new fan');
    const [broken] = ownedDevices('c0', 1, [discovered('d0', 'c0', 'unavailable')], [stored('d0', 'c0', 'c0', 1, 'offline', null)]);
    assert.equal(broken?.state, 'offline');
    assert.equal(broken?.reason, 'taken out of service by an operator; also gone');
  });

  it('lists a retired device as retired, even when the driver no longer finds it', () => {
    const [device] = ownedDevices('c0', 1, [], [stored('d0', 'c0', 'c0', 1, 'retired', null)]);
    assert.equal(device?.state, 'retired');
    assert.equal(device?.reason, 'retired by an operator; also the driver no longer finds the device');
  });
});

describe('deviceChanges', () => {
  const [d0] = ownedDevices('c0', 1, [discovered('d0', 'c0')], []);
  const base = d0!;

  it('names what changed about each device', () => {
    const changes = deviceChanges(
      [base, { ...base, id: 'd1' }, { ...base, id: 'd2' }],
      [{ ...base, state: 'unavailable', reason: 'marked FAILED' }, { ...base, id: 'd1', capacity_bytes: 200, used_bytes: 20 }, { ...base, id: 'd3' }],
    );
    assert.deepEqual(
      changes.map((change) => [change.device_id, change.changes, change.state, change.previous_state]),
      [
        ['d0', ['state'], 'unavailable', 'available'],
        ['d1', ['capacity', 'usage'], 'available', 'available'],
        ['d3', ['added'], 'available', null],
        ['d2', ['removed'], null, 'available'],
      ],
    );
    assert.equal(changes[1]?.previous_capacity_bytes, 100);
    assert.equal(changes[1]?.capacity_bytes, 200);
  });

  it('sees ownership moves, and leaves usage alone out of the notable changes', () => {
    const changes = deviceChanges([base, { ...base, id: 'd1' }], [{ ...base, epoch: 2, owner_cluster: 'c1' }, { ...base, id: 'd1', used_bytes: 99 }]);
    assert.deepEqual(changes.map((change) => change.changes), [['ownership'], ['usage']]);
    assert.deepEqual(notableChanges(changes).map((change) => change.device_id), ['d0']);
    assert.deepEqual(deviceChanges([base], [base]), []);
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
