import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { agentIdOf, newTaskId } from '../../src/lib/ids.ts';

const taskIdPattern = /^[A-Za-z0-9_-]{1,64}$/;

describe('newTaskId', () => {
  it('has the tsk_ prefix and fits the contract pattern', () => {
    const id = newTaskId(Date.UTC(2026, 10, 25));
    assert.match(id, /^tsk_[0-9a-z]{9}[0-9a-f]{16}$/);
    assert.match(id, taskIdPattern);
  });

  it('sorts by creation time, whatever the random part', () => {
    const times = [0, 1, 35, 36, 1_000, Date.UTC(2001, 0, 1), Date.UTC(2026, 10, 25), Date.UTC(2026, 10, 25) + 1, Date.UTC(2100, 0, 1)];
    const ids = times.map((time) => newTaskId(time));
    assert.deepEqual([...ids].sort(), ids);
  });

  it('is unique for the same millisecond', () => {
    const now = Date.now();
    const ids = new Set(Array.from({ length: 1000 }, () => newTaskId(now)));
    assert.equal(ids.size, 1000);
  });

  it('uses the current time by default', () => {
    const before = newTaskId(Date.now() - 1);
    const id = newTaskId();
    const after = newTaskId(Date.now() + 1);
    assert.ok(before.slice(0, 13) <= id.slice(0, 13) && id.slice(0, 13) <= after.slice(0, 13), `${before} ${id} ${after}`);
  });
});

describe('agentIdOf', () => {
  it('joins server, storage system, cluster and name', () => {
    assert.equal(agentIdOf({ server_id: 'A', storage_system_id: 'ss1', cluster_id: 'c0', name: 'ss1-c0-A' }), 'A:ss1:c0:ss1-c0-A');
  });
});
