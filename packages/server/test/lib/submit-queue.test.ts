import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SubmitQueue } from '../../src/lib/submit-queue.ts';

interface Item {
  idempotencyKey: string;
}

/** A queue whose commits wait until released, recording what each commit held. */
function heldQueue(maxBatch = 10) {
  const commits: string[][] = [];
  const releases: ((fail?: Error) => void)[] = [];
  const queue = new SubmitQueue<Item, string>(
    (items) =>
      new Promise((resolve, reject) => {
        commits.push(items.map((item) => item.idempotencyKey));
        releases.push((fail) => (fail ? reject(fail) : resolve(items.map((item) => `done ${item.idempotencyKey}`))));
      }),
    maxBatch,
  );
  const release = async (fail?: Error) => {
    releases.shift()!(fail);
    await new Promise((resolve) => setImmediate(resolve));
  };
  return { queue, commits, release };
}

describe('SubmitQueue', () => {
  it('commits a lone submission at once, and those that arrive meanwhile together in the next commit', async () => {
    const { queue, commits, release } = heldQueue();
    const first = queue.submit({ idempotencyKey: 'a' });
    assert.deepEqual(commits, [['a']]);
    const later = ['b', 'c', 'd'].map((key) => queue.submit({ idempotencyKey: key }));
    assert.equal(commits.length, 1, 'nothing else commits while a commit is under way');
    await release();
    assert.equal(await first, 'done a');
    assert.deepEqual(commits, [['a'], ['b', 'c', 'd']]);
    await release();
    assert.deepEqual(await Promise.all(later), ['done b', 'done c', 'done d']);
  });

  it('never puts one idempotency key twice in a commit, and keeps arrival order otherwise', async () => {
    const { queue, commits, release } = heldQueue();
    const answers = ['x', 'k', 'k', 'm', 'k'].map((key) => queue.submit({ idempotencyKey: key }));
    for (let round = 0; round < 4; round += 1) await release();
    await Promise.all(answers);
    assert.deepEqual(commits, [['x'], ['k', 'm'], ['k'], ['k']]);
  });

  it('commits at most maxBatch at a time', async () => {
    const { queue, commits, release } = heldQueue(2);
    const answers = ['a', 'b', 'c', 'd', 'e'].map((key) => queue.submit({ idempotencyKey: key }));
    for (let round = 0; round < 3; round += 1) await release();
    await Promise.all(answers);
    assert.deepEqual(commits, [['a'], ['b', 'c'], ['d', 'e']]);
  });

  it('fails only the submissions of a failed commit, and goes on with the next', async () => {
    const { queue, commits, release } = heldQueue();
    const outcomes = Promise.allSettled(['a', 'b', 'c'].map((key) => queue.submit({ idempotencyKey: key })));
    await release();
    await release(new Error('the database went away'));
    const [first, ...rest] = await outcomes;
    assert.deepEqual(first, { status: 'fulfilled', value: 'done a' });
    for (const outcome of rest) assert.equal(outcome.status === 'rejected' && (outcome.reason as Error).message, 'the database went away');
    const after = queue.submit({ idempotencyKey: 'd' });
    assert.deepEqual(commits, [['a'], ['b', 'c'], ['d']]);
    await release();
    assert.equal(await after, 'done d');
  });
});
