import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeyedLock } from '../src/keyed-lock.ts';

function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

test('work on one device runs one at a time, in arrival order', async () => {
  const queue = new KeyedLock();
  const events: string[] = [];
  const first = gate();
  const a = queue.run(['d0'], async () => {
    events.push('a start');
    await first.promise;
    events.push('a end');
  });
  const b = queue.run(['d0'], async () => {
    events.push('b start');
    events.push('b end');
  });
  await tick();
  assert.deepEqual(events, ['a start']);
  first.open();
  await Promise.all([a, b]);
  assert.deepEqual(events, ['a start', 'a end', 'b start', 'b end']);
  assert.equal(queue.busyDevices, 0);
});

test('work on other devices is not held up', async () => {
  const queue = new KeyedLock();
  const held = gate();
  const events: string[] = [];
  const a = queue.run(['d0'], async () => {
    await held.promise;
    events.push('d0');
  });
  await queue.run(['d1'], async () => {
    events.push('d1');
  });
  assert.deepEqual(events, ['d1']);
  held.open();
  await a;
  assert.deepEqual(events, ['d1', 'd0']);
});

test('work on two devices waits for both and cannot deadlock with the reverse order', async () => {
  const queue = new KeyedLock();
  const held = gate();
  const events: string[] = [];
  const onD1 = queue.run(['d1'], async () => {
    await held.promise;
    events.push('d1 alone');
  });
  const both = queue.run(['d1', 'd0'], async () => {
    events.push('both');
  });
  const reverse = queue.run(['d0', 'd1'], async () => {
    events.push('reverse');
  });
  await tick();
  assert.deepEqual(events, []);
  held.open();
  await Promise.all([onD1, both, reverse]);
  assert.deepEqual(events, ['d1 alone', 'both', 'reverse']);
});

test('a failing piece of work releases its device', async () => {
  const queue = new KeyedLock();
  await assert.rejects(queue.run(['d0'], async () => Promise.reject(new Error('boom'))), /boom/);
  assert.equal(await queue.run(['d0'], async () => 'next'), 'next');
});
