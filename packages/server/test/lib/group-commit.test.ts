import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GroupCommitQueue, type GroupCommitOptions } from '../../src/lib/group-commit.ts';
import { renewedFor } from '../../src/repositories/agent-leases.ts';

/** A queue whose commits wait until released, recording what each commit held. */
function heldQueue(options: GroupCommitOptions<string> = { maxBatch: 10, keyOf: (item) => item }) {
  const commits: string[][] = [];
  const releases: ((fail?: Error) => void)[] = [];
  const queue = new GroupCommitQueue<string, string>(
    (items) =>
      new Promise((resolve, reject) => {
        commits.push(items);
        releases.push((fail) => (fail ? reject(fail) : resolve(items.map((item) => `done ${item}`))));
      }),
    options,
  );
  const release = async (fail?: Error) => {
    releases.shift()!(fail);
    await new Promise((resolve) => setImmediate(resolve));
  };
  return { queue, commits, release };
}

describe('GroupCommitQueue', () => {
  it('commits a lone item at once, and those that arrive meanwhile together in the next commit', async () => {
    const { queue, commits, release } = heldQueue();
    const first = queue.add('a');
    assert.deepEqual(commits, [['a']]);
    const later = ['b', 'c', 'd'].map((item) => queue.add(item));
    assert.equal(commits.length, 1, 'nothing else commits while a commit is under way');
    await release();
    assert.equal(await first, 'done a');
    assert.deepEqual(commits, [['a'], ['b', 'c', 'd']]);
    await release();
    assert.deepEqual(await Promise.all(later), ['done b', 'done c', 'done d']);
  });

  it('never puts one key twice in a commit, and keeps arrival order otherwise', async () => {
    const { queue, commits, release } = heldQueue();
    const answers = ['x', 'k', 'k', 'm', 'k'].map((item) => queue.add(item));
    for (let round = 0; round < 4; round += 1) await release();
    await Promise.all(answers);
    assert.deepEqual(commits, [['x'], ['k', 'm'], ['k'], ['k']]);
  });

  it('without keys, lets equal items share a commit', async () => {
    const { queue, commits, release } = heldQueue({ maxBatch: 10 });
    const answers = ['x', 'k', 'k', 'm'].map((item) => queue.add(item));
    for (let round = 0; round < 2; round += 1) await release();
    await Promise.all(answers);
    assert.deepEqual(commits, [['x'], ['k', 'k', 'm']]);
  });

  it('commits at most maxBatch at a time', async () => {
    const { queue, commits, release } = heldQueue({ maxBatch: 2 });
    const answers = ['a', 'b', 'c', 'd', 'e'].map((item) => queue.add(item));
    for (let round = 0; round < 3; round += 1) await release();
    await Promise.all(answers);
    assert.deepEqual(commits, [['a'], ['b', 'c'], ['d', 'e']]);
  });

  it('runs up to maxInFlight commits at once, each taking what waited when it started', async () => {
    const { queue, commits, release } = heldQueue({ maxBatch: 10, maxInFlight: 2 });
    const answers = ['a', 'b', 'c', 'd', 'e'].map((item) => queue.add(item));
    assert.deepEqual(commits, [['a'], ['b']], 'two commits start at once, one item each');
    await release();
    assert.deepEqual(commits, [['a'], ['b'], ['c', 'd', 'e']]);
    await release();
    await release();
    assert.deepEqual(await Promise.all(answers), ['done a', 'done b', 'done c', 'done d', 'done e']);
  });

  it('with keys and several commits in flight, starts a key only once its commit under way has ended', async () => {
    const { queue, commits, release } = heldQueue({ maxBatch: 10, keyOf: (item) => item, maxInFlight: 3 });
    const answers = ['k', 'k', 'm', 'k'].map((item) => queue.add(item));
    assert.deepEqual(commits, [['k'], ['m']], 'the second k waits for the first; m does not wait for either');
    await release();
    assert.deepEqual(commits, [['k'], ['m'], ['k']], 'the first k ended: the second starts, the third waits for it');
    await release();
    assert.deepEqual(commits, [['k'], ['m'], ['k']], 'm ended: no k may start yet');
    await release();
    assert.deepEqual(commits, [['k'], ['m'], ['k'], ['k']]);
    await release();
    assert.deepEqual(await Promise.all(answers), ['done k', 'done k', 'done m', 'done k']);
  });

  it('with gatherMs, waits that long before a commit of less than a full batch, and starts a full one at once', async () => {
    const { queue, commits, release } = heldQueue({ maxBatch: 3, maxInFlight: 2, gatherMs: 30 });
    const first = ['a', 'b'].map((item) => queue.add(item));
    assert.deepEqual(commits, [], 'two of three wait for more');
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.deepEqual(commits, [['a', 'b']], 'the wait ended with what had come');
    const full = ['c', 'd', 'e'].map((item) => queue.add(item));
    assert.deepEqual(commits, [['a', 'b'], ['c', 'd', 'e']], 'a full batch starts without waiting');
    await release();
    await release();
    assert.deepEqual(await Promise.all([...first, ...full]), ['done a', 'done b', 'done c', 'done d', 'done e']);
  });

  it('fails only the items of a failed commit, goes on with the next, and commits at once again when idle', async () => {
    const { queue, commits, release } = heldQueue();
    const outcomes = Promise.allSettled(['a', 'b', 'c'].map((item) => queue.add(item)));
    await release();
    await release(new Error('the database went away'));
    const [first, ...rest] = await outcomes;
    assert.deepEqual(first, { status: 'fulfilled', value: 'done a' });
    for (const outcome of rest) assert.equal(outcome.status === 'rejected' && (outcome.reason as Error).message, 'the database went away');
    const after = queue.add('d');
    assert.deepEqual(commits, [['a'], ['b', 'c'], ['d']]);
    await release();
    assert.equal(await after, 'done d');
  });
});

describe('renewedFor', () => {
  it('answers each renewal in order, undefined for an agent not renewed or renewed in another incarnation', () => {
    const renewed = new Map([
      ['a', { incarnation: 1, renewed: 'lease of a' }],
      ['b', { incarnation: 1, renewed: 'lease of b' }],
    ]);
    const renewals = [
      { agentId: 'b', incarnation: 1 },
      { agentId: 'gone', incarnation: 1 },
      { agentId: 'a', incarnation: 2 },
      { agentId: 'a', incarnation: 1 },
    ];
    assert.deepEqual(renewedFor(renewals, renewed), ['lease of b', undefined, undefined, 'lease of a']);
  });
});
