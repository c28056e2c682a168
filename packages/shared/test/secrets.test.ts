import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { secretHash } from '../src/secrets.ts';

describe('secretHash', () => {
  it('is the hex SHA-256 of the secret’s UTF-8 bytes, the form tokens and credentials are stored in', () => {
    // Computed apart, with `printf '%s' 'dpa_żółć-example' | sha256sum`: stored hashes must keep matching.
    assert.equal(secretHash('dpa_żółć-example'), 'de41f09de3e8f8da140a7f44626c8263d777d3cee09325bab26d1596d09a4be2');
  });
});
