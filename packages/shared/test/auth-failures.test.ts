import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AuthFailures } from '../src/auth-failures.ts';

describe('AuthFailures', () => {
  it('blocks an address at the limit until its window ends, and counts each address on its own', () => {
    let now = 1_000_000;
    const failures = new AuthFailures(2, 10_000, () => now);
    failures.fail('a');
    assert.equal(failures.blockedForSeconds('a'), 0);
    failures.fail('a');
    assert.equal(failures.blockedForSeconds('a'), 10);
    assert.equal(failures.blockedForSeconds('b'), 0);
    now += 9_100;
    assert.equal(failures.blockedForSeconds('a'), 1);
    now += 900;
    assert.equal(failures.blockedForSeconds('a'), 0, 'a new window');
    failures.fail('a');
    assert.equal(failures.blockedForSeconds('a'), 0, 'the count starts again');
  });
});
