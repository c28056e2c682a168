import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ProblemError } from '@duplex/shared';
import { assertVolumeName, isDeviceId, isVolumeName } from '../../src/lib/names.ts';

describe('volume names', () => {
  const refused: [string, string][] = [
    ['parent traversal', '../x'],
    ['dot-dot', '..'],
    ['single dot', '.'],
    ['path separator', 'a/b'],
    ['backslash', 'a\\b'],
    ['NUL byte', 'a\u0000b'],
    ['leading dot', '.hidden'],
    ['empty', ''],
    ['129 characters', `a${'b'.repeat(128)}`],
    ['space', 'a b'],
    ['newline', 'a\nb'],
    ['absolute path', '/etc/passwd'],
    ['leading dash', '-rf'],
    ['non-ASCII', 'vol\u00e9'],
  ];
  for (const [why, name] of refused) {
    test(`refuses ${why}`, () => {
      assert.equal(isVolumeName(name), false);
      assert.throws(
        () => assertVolumeName(name),
        (error: unknown) => error instanceof ProblemError && error.code === 'invalid-name' && error.status === 400,
      );
    });
  }

  for (const name of ['vol1', 'a', 'A.b_c-d', 'a..b', `a${'b'.repeat(127)}`, '0']) {
    test(`accepts ${JSON.stringify(name.length > 20 ? `${name.slice(0, 8)}…(${name.length})` : name)}`, () => {
      assert.equal(isVolumeName(name), true);
      assert.doesNotThrow(() => assertVolumeName(name));
    });
  }

  test('the problem names the field it came from', () => {
    assert.throws(
      () => assertVolumeName('../x', 'target_name'),
      (error: unknown) => error instanceof ProblemError && error.errors?.[0]?.location === 'body/params/target_name',
    );
  });
});

describe('device ids', () => {
  test('follow the contract pattern', () => {
    assert.equal(isDeviceId('d0'), true);
    assert.equal(isDeviceId('disk_1-a'), true);
    for (const id of ['', 'D0', '../d0', 'd/0', '.d0', `d${'0'.repeat(63)}`]) assert.equal(isDeviceId(id), false, id);
  });
});
