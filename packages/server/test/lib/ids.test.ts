import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { agentIdOf, newTaskId, taskIdGenerator } from '../../src/lib/ids.ts';

const taskIdPattern = /^[A-Za-z0-9_-]{1,64}$/;

describe('task ids', () => {
  /** A generator reading the given times, one per id. */
  const fromTimes = (times: number[]) => {
    const clock = [...times];
    return taskIdGenerator(() => clock.shift() ?? 0);
  };

  it('have the tsk_ prefix and fit the contract pattern', () => {
    const id = fromTimes([Date.UTC(2026, 10, 25)])();
    assert.match(id, /^tsk_[0-9a-z]{9}[0-9a-z]{4}[0-9a-f]{12}$/);
    assert.match(id, taskIdPattern);
  });

  it('sort by creation time, whatever the random part', () => {
    const times = [0, 1, 35, 36, 1_000, Date.UTC(2001, 0, 1), Date.UTC(2026, 10, 25), Date.UTC(2026, 10, 25) + 1, Date.UTC(2100, 0, 1)];
    const next = fromTimes(times);
    const ids = times.map(() => next());
    assert.deepEqual([...ids].sort(), ids);
  });

  it('sort in the order they were made within one millisecond, and when the clock steps back', () => {
    const now = Date.UTC(2026, 10, 25);
    const times = [...Array.from({ length: 1000 }, () => now), now - 5_000, now + 1];
    const next = fromTimes(times);
    const ids = times.map(() => next());
    assert.equal(new Set(ids).size, ids.length);
    assert.deepEqual([...ids].sort(), ids);
  });

  it('use the current time by default', () => {
    const before = Date.now().toString(36).padStart(9, '0');
    const id = newTaskId();
    const after = Date.now().toString(36).padStart(9, '0');
    const time = id.slice(4, 13);
    assert.ok(before <= time && time <= after, `${before} ${id} ${after}`);
  });
});

describe('agentIdOf', () => {
  it('joins server, storage system, cluster and name', () => {
    assert.equal(agentIdOf({ server_id: 'A', storage_system_id: 'ss1', cluster_id: 'c0', name: 'ss1-c0-A' }), 'A:ss1:c0:ss1-c0-A');
  });
});
