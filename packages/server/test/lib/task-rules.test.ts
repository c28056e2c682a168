import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  canTransition,
  canonicalJson,
  devicesOf,
  openStates,
  requestHash,
  settleCatalogActions,
  submitCatalogEffect,
  terminalStates,
  type SettledTask,
  type TaskRequest,
  type TaskState,
} from '../../src/lib/task-rules.ts';

const allStates: TaskState[] = ['queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled'];

describe('canTransition', () => {
  // Every pair of states, with the ones the state machine allows.
  const allowed = new Set([
    'queued>dispatched',
    'queued>cancelled',
    'dispatched>running',
    'dispatched>succeeded',
    'dispatched>failed',
    'dispatched>queued',
    'running>succeeded',
    'running>failed',
    'running>queued',
  ]);

  for (const from of allStates) {
    for (const to of allStates) {
      const expected = allowed.has(`${from}>${to}`);
      it(`${from} -> ${to} is ${expected ? 'allowed' : 'refused'}`, () => {
        assert.equal(canTransition(from, to), expected);
      });
    }
  }

  it('no terminal state has a way out, and every open state has one', () => {
    assert.deepEqual([...terminalStates].sort(), ['cancelled', 'failed', 'succeeded']);
    assert.deepEqual([...openStates].sort(), ['dispatched', 'queued', 'running']);
    for (const from of terminalStates) assert.deepEqual(allStates.filter((to) => canTransition(from, to)), []);
    for (const from of openStates) assert.ok(allStates.some((to) => canTransition(from, to)), from);
  });
});

describe('canonicalJson and requestHash', () => {
  it('sorts keys at every depth and keeps array order', () => {
    assert.equal(canonicalJson({ b: 1, a: { d: [2, 1], c: null } }), '{"a":{"c":null,"d":[2,1]},"b":1}');
    assert.equal(canonicalJson([{ z: 1, y: 2 }, 'x']), '[{"y":2,"z":1},"x"]');
  });

  it('drops undefined members, as JSON does', () => {
    assert.equal(canonicalJson({ a: 1, b: undefined }), '{"a":1}');
  });

  it('keeps the form stored hashes were made with: keys in code-unit order at every depth, integer-like ones included', () => {
    // request_hash is stored with each task and compared on every replay: a change of form
    // would answer replays of tasks accepted before it with idempotency-key-reused.
    const request = JSON.parse(
      '{"params":{"size_bytes":1024,"name":"vol1","tags":["b","a",{"y":null,"x":[1,2]}],"10":true,"9":"nine","é":"e","Z":0},"device":"d0","storage_system_id":"ss1","kind":"volume.create"}',
    ) as TaskRequest;
    assert.equal(
      canonicalJson(request),
      '{"device":"d0","kind":"volume.create","params":{"10":true,"9":"nine","Z":0,"name":"vol1","size_bytes":1024,"tags":["b","a",{"x":[1,2],"y":null}],"é":"e"},"storage_system_id":"ss1"}',
    );
    assert.equal(requestHash(request), '261cb76dd9b8877e597214807e1687ade5432bd252bec604f44ad8ac764d23d9');
  });

  it('hashes the same request the same way whatever the key order', () => {
    const one: TaskRequest = { kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol1', size_bytes: 1024 } };
    const reordered = JSON.parse('{"params":{"size_bytes":1024,"name":"vol1"},"device":"d0","storage_system_id":"ss1","kind":"volume.create"}') as TaskRequest;
    assert.equal(requestHash(one), requestHash(reordered));
    assert.match(requestHash(one), /^[0-9a-f]{64}$/);
  });

  it('hashes different requests differently', () => {
    const base: TaskRequest = { kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol1', size_bytes: 1024 } };
    const bigger: TaskRequest = { kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'vol1', size_bytes: 1025 } };
    const elsewhere: TaskRequest = { kind: 'volume.create', storage_system_id: 'ss1', device: 'd1', params: { name: 'vol1', size_bytes: 1024 } };
    assert.notEqual(requestHash(base), requestHash(bigger));
    assert.notEqual(requestHash(base), requestHash(elsewhere));
  });
});

describe('submitCatalogEffect', () => {
  it('volume.create reserves the name and must fit the device', () => {
    assert.deepEqual(submitCatalogEffect({ kind: 'volume.create', storage_system_id: 'ss1', device: 'd0', params: { name: 'v', size_bytes: 10 } }), {
      reserve: { device: 'd0', name: 'v', sizeBytes: 10 },
      sizeOnDevice: { device: 'd0', sizeBytes: 10 },
    });
  });

  it('volume.delete needs the volume and marks it deleting', () => {
    assert.deepEqual(submitCatalogEffect({ kind: 'volume.delete', storage_system_id: 'ss1', device: 'd0', params: { name: 'v' } }), {
      mustExist: { device: 'd0', name: 'v' },
      markDeleting: true,
    });
  });

  it('volume.resize needs the volume and must fit the device', () => {
    assert.deepEqual(submitCatalogEffect({ kind: 'volume.resize', storage_system_id: 'ss1', device: 'd0', params: { name: 'v', size_bytes: 99 } }), {
      mustExist: { device: 'd0', name: 'v' },
      sizeOnDevice: { device: 'd0', sizeBytes: 99 },
    });
  });

  it('volume.copy needs the source and reserves the target on the target device', () => {
    assert.deepEqual(
      submitCatalogEffect({ kind: 'volume.copy', storage_system_id: 'ss1', device: 'd0', params: { name: 'v', target_device: 'd4', target_name: 'w' } }),
      { mustExist: { device: 'd0', name: 'v' }, reserve: { device: 'd4', name: 'w', sizeBytes: 0 } },
    );
  });

  it('volume.copy without a target device reserves on the source device', () => {
    assert.deepEqual(submitCatalogEffect({ kind: 'volume.copy', storage_system_id: 'ss1', device: 'd0', params: { name: 'v', target_name: 'w' } }), {
      mustExist: { device: 'd0', name: 'v' },
      reserve: { device: 'd0', name: 'w', sizeBytes: 0 },
    });
  });

  it('device.format and device.probe touch no volume', () => {
    assert.deepEqual(submitCatalogEffect({ kind: 'device.format', storage_system_id: 'ss1', device: 'd0', params: {} }), {});
    assert.deepEqual(submitCatalogEffect({ kind: 'device.probe', storage_system_id: 'ss1', device: 'd0' }), {});
  });
});

describe('devicesOf', () => {
  it('lists the target device, and a copy target on another device', () => {
    assert.deepEqual(devicesOf({ device: 'd0', params: { name: 'v', size_bytes: 1 } }), ['d0']);
    assert.deepEqual(devicesOf({ device: 'd0', params: { name: 'v', target_device: 'd4', target_name: 'w' } }), ['d0', 'd4']);
    assert.deepEqual(devicesOf({ device: 'd0', params: { name: 'v', target_device: 'd0', target_name: 'w' } }), ['d0']);
    assert.deepEqual(devicesOf({ device: 'd2' } as Parameters<typeof devicesOf>[0]), ['d2']);
  });
});

describe('settleCatalogActions', () => {
  const task = (kind: SettledTask['kind'], params: SettledTask['params'] = {}, result: SettledTask['result'] = null): SettledTask => ({
    id: 'tsk_1',
    kind,
    device: 'd0',
    params,
    result,
  });
  const volume = { device: 'd0', name: 'v' };

  describe('volume.create', () => {
    const create = task('volume.create', { name: 'v', size_bytes: 10 });
    it('succeeded confirms the reservation', () => {
      assert.deepEqual(settleCatalogActions(create, 'succeeded'), [{ action: 'confirm-reserved', taskId: 'tsk_1' }]);
    });
    it('failed releases the reservation', () => {
      assert.deepEqual(settleCatalogActions(create, 'failed', 'insufficient-capacity'), [{ action: 'release-reserved', taskId: 'tsk_1' }]);
    });
    it('cancelled releases the reservation', () => {
      assert.deepEqual(settleCatalogActions(create, 'cancelled'), [{ action: 'release-reserved', taskId: 'tsk_1' }]);
    });
  });

  describe('volume.copy', () => {
    const copy = task('volume.copy', { name: 'v', target_name: 'w' }, { volume: { size_bytes: 4096 } });
    it('succeeded confirms the target with the size the copy reported', () => {
      assert.deepEqual(settleCatalogActions(copy, 'succeeded'), [{ action: 'confirm-reserved', taskId: 'tsk_1', sizeBytes: 4096 }]);
    });
    it('succeeded without a reported size confirms 0 bytes', () => {
      assert.deepEqual(settleCatalogActions({ ...copy, result: null }, 'succeeded'), [{ action: 'confirm-reserved', taskId: 'tsk_1', sizeBytes: 0 }]);
    });
    it('failed releases the target', () => {
      assert.deepEqual(settleCatalogActions(copy, 'failed', 'internal-error'), [{ action: 'release-reserved', taskId: 'tsk_1' }]);
    });
    it('failed because the source is gone also forgets the source', () => {
      assert.deepEqual(settleCatalogActions(copy, 'failed', 'volume-not-found'), [
        { action: 'release-reserved', taskId: 'tsk_1' },
        { action: 'remove', volume },
      ]);
    });
    it('cancelled releases the target', () => {
      assert.deepEqual(settleCatalogActions(copy, 'cancelled'), [{ action: 'release-reserved', taskId: 'tsk_1' }]);
    });
  });

  describe('volume.delete', () => {
    const del = task('volume.delete', { name: 'v' });
    it('succeeded removes the volume', () => {
      assert.deepEqual(settleCatalogActions(del, 'succeeded'), [{ action: 'remove', volume }]);
    });
    it('failed because the volume is gone removes it too', () => {
      assert.deepEqual(settleCatalogActions(del, 'failed', 'volume-not-found'), [{ action: 'remove', volume }]);
    });
    it('failed otherwise restores it', () => {
      assert.deepEqual(settleCatalogActions(del, 'failed', 'device-unavailable'), [{ action: 'restore', volume }]);
      assert.deepEqual(settleCatalogActions(del, 'failed'), [{ action: 'restore', volume }]);
    });
    it('cancelled restores it', () => {
      assert.deepEqual(settleCatalogActions(del, 'cancelled'), [{ action: 'restore', volume }]);
    });
  });

  describe('volume.resize', () => {
    const resize = task('volume.resize', { name: 'v', size_bytes: 2048 });
    it('succeeded records the new size', () => {
      assert.deepEqual(settleCatalogActions(resize, 'succeeded'), [{ action: 'resize', volume, sizeBytes: 2048 }]);
    });
    it('failed because the volume is gone removes it', () => {
      assert.deepEqual(settleCatalogActions(resize, 'failed', 'volume-not-found'), [{ action: 'remove', volume }]);
    });
    it('failed otherwise changes nothing', () => {
      assert.deepEqual(settleCatalogActions(resize, 'failed', 'insufficient-capacity'), []);
    });
    it('cancelled changes nothing', () => {
      assert.deepEqual(settleCatalogActions(resize, 'cancelled'), []);
    });
  });

  describe('device.format', () => {
    const format = task('device.format');
    it('succeeded clears the device of the volumes made before the format', () => {
      assert.deepEqual(settleCatalogActions(format, 'succeeded'), [{ action: 'clear-device', device: 'd0', taskId: 'tsk_1' }]);
    });
    it('failed and cancelled change nothing', () => {
      assert.deepEqual(settleCatalogActions(format, 'failed', 'device-unavailable'), []);
      assert.deepEqual(settleCatalogActions(format, 'cancelled'), []);
    });
  });

  describe('device.probe', () => {
    it('changes nothing whatever the outcome', () => {
      const probe = task('device.probe');
      for (const outcome of ['succeeded', 'failed', 'cancelled'] as const) assert.deepEqual(settleCatalogActions(probe, outcome, 'volume-not-found'), [], outcome);
    });
  });
});
