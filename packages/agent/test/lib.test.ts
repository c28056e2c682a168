import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KeyedSerialQueue } from '../src/lib/device-queues.ts';
import { ReportBuffer } from '../src/lib/report-buffer.ts';

describe('KeyedSerialQueue', () => {
  it('runs jobs of one key in order, one at a time, and keys in parallel', async () => {
    const queue = new KeyedSerialQueue();
    const events: string[] = [];
    const job = (name: string, ms: number) => async () => {
      events.push(`start ${name}`);
      await new Promise((resolve) => setTimeout(resolve, ms));
      events.push(`end ${name}`);
    };
    queue.push('d0', job('a1', 30));
    queue.push('d0', job('a2', 1));
    queue.push('d1', job('b1', 5));
    assert.equal(queue.size, 3);
    await queue.drained();
    assert.equal(queue.size, 0);
    assert.ok(events.indexOf('end a1') < events.indexOf('start a2'), 'a2 waits for a1');
    assert.ok(events.indexOf('end b1') < events.indexOf('end a1'), 'd1 does not wait for d0');
  });

  it('keeps going after a job fails', async () => {
    const queue = new KeyedSerialQueue();
    let ran = false;
    queue.push('d0', async () => {
      throw new Error('boom');
    });
    queue.push('d0', async () => {
      ran = true;
    });
    await queue.drained();
    assert.equal(ran, true);
  });
});

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
});
