import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkEpoch, checkTask } from '../../src/lib/fencing.ts';

test('an epoch older than the recorded one is stale, a higher one is newer', () => {
  assert.equal(checkEpoch(1, 2), 'stale');
  assert.equal(checkEpoch(2, 2), 'current');
  assert.equal(checkEpoch(3, 2), 'newer');
  assert.equal(checkEpoch(0, 0), 'current');
});

test('a recorded task replays for its token or a newer one and refuses an older one', () => {
  assert.equal(checkTask(5, 4), 'stale');
  assert.equal(checkTask(5, 5), 'replay');
  assert.equal(checkTask(5, 9), 'replay');
});
