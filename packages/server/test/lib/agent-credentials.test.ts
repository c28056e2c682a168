import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dueForRotation, joinTokenFor, matchesCredential, newAgentCredential, parseJoinTokens } from '../../src/lib/agent-credentials.ts';
import { sameSecret, secretHash } from '@duplex/shared';

describe('agent credentials', () => {
  it('are random, stored as hashes, and match only while unexpired', () => {
    const now = 1_000_000;
    const first = newAgentCredential(60_000, now);
    const second = newAgentCredential(60_000, now);
    assert.match(first.secret, /^dpa_[A-Za-z0-9_-]{43}$/);
    assert.notEqual(first.secret, second.secret);
    assert.equal(first.stored.sha256, secretHash(first.secret));
    assert.equal(first.stored.expiresAt, now + 60_000);
    assert.equal(matchesCredential(secretHash(first.secret), [second.stored, first.stored], now), true);
    assert.equal(matchesCredential(secretHash(first.secret), [second.stored], now), false);
    assert.equal(matchesCredential(secretHash(first.secret), [first.stored], now + 60_000), false, 'expired');
  });

  it('are rotated once half their life is gone', () => {
    assert.equal(dueForRotation(undefined, 60_000, 0), true);
    assert.equal(dueForRotation({ sha256: '', expiresAt: 60_000 }, 60_000, 29_999), false);
    assert.equal(dueForRotation({ sha256: '', expiresAt: 60_000 }, 60_000, 30_001), true);
  });
});

describe('join tokens', () => {
  it('are read per storage system, with * for the others, and compared whole', () => {
    const tokens = parseJoinTokens(`ss1=${'a'.repeat(32)},*=${'b'.repeat(32)}`);
    assert.equal(joinTokenFor(tokens, 'ss1'), 'a'.repeat(32));
    assert.equal(joinTokenFor(tokens, 'ss7'), 'b'.repeat(32));
    assert.equal(joinTokenFor(parseJoinTokens(`ss1=${'a'.repeat(32)}`), 'ss7'), undefined);
    assert.equal(parseJoinTokens(undefined).size, 0);
    assert.equal(sameSecret('a'.repeat(32), 'a'.repeat(32)), true);
    assert.equal(sameSecret('a'.repeat(31), 'a'.repeat(32)), false);
    assert.equal(sameSecret('a'.repeat(32), undefined), false);
  });
});
