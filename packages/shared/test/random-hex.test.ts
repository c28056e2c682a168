import assert from 'node:assert/strict';
import { test } from 'node:test';
import { randomHex } from '../src/random-hex.ts';

test('randomHex gives hex of the asked length, never the same twice across pool refills', () => {
  const seen = new Set<string>();
  // 3,000 draws of 8 bytes span three refills of the 8 KiB pool.
  for (let draw = 0; draw < 3_000; draw += 1) {
    const value = randomHex(8);
    assert.match(value, /^[0-9a-f]{16}$/);
    seen.add(value);
  }
  assert.equal(seen.size, 3_000);
  assert.match(randomHex(2_000), /^[0-9a-f]{4000}$/);
});
