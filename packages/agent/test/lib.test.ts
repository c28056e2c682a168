import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ReportBuffer } from '../src/lib/report-buffer.ts';

describe('ReportBuffer', () => {
  const running = { task_id: 't1', attempt: 1, fencing_token: 5, state: 'running' as const };
  const done = { task_id: 't1', attempt: 1, fencing_token: 5, state: 'succeeded' as const, result: {} };

  it('lets a terminal report replace a running one, never the reverse', () => {
    const buffer = new ReportBuffer();
    buffer.add(running);
    buffer.add(done);
    buffer.add(running);
    assert.deepEqual(buffer.take(10), [done]);
  });

  it('keeps a report that replaced a sent one', () => {
    const buffer = new ReportBuffer();
    buffer.add(running);
    const sent = buffer.take(10);
    buffer.add(done);
    buffer.acknowledge(sent);
    assert.deepEqual(buffer.take(10), [done]);
    buffer.acknowledge([done]);
    assert.equal(buffer.size, 0);
  });

  it('takes at most the limit', () => {
    const buffer = new ReportBuffer();
    for (let i = 0; i < 5; i += 1) buffer.add({ ...done, task_id: `t${i}` });
    assert.equal(buffer.take(3).length, 3);
    assert.equal(buffer.size, 5);
  });

  it('holds a running report until it falls due, unless the task ends first', () => {
    const buffer = new ReportBuffer(100);
    buffer.add(running, 1_000);
    buffer.add({ ...running, task_id: 't2' }, 1_050);
    assert.deepEqual(buffer.take(10, 1_099), []);
    assert.equal(buffer.nextDueAt(), 1_100);
    assert.deepEqual(buffer.take(10, 1_100), [running]);
    buffer.add({ ...done, task_id: 't2' }, 1_120);
    assert.deepEqual(buffer.take(10, 1_120), [running, { ...done, task_id: 't2' }]);
  });
});
