import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ProblemError } from '../src/problem.ts';
import { refuseUnstorableText, unstorableTextAt } from '../src/storable-text.ts';

test('text Postgres cannot store is found wherever it is, and refused as validation-failed', () => {
  assert.equal(unstorableTextAt({ reports: [{ result: { note: 'a\u0000b' } }] }, 'body'), 'body/reports/0/result/note');
  assert.equal(unstorableTextAt({ title: '\ud800' }, 'body'), 'body/title', 'a lone high surrogate');
  assert.equal(unstorableTextAt({ title: 'x\udc00' }, 'body'), 'body/title', 'a lone low surrogate');
  assert.equal(unstorableTextAt({ ['k\u0000']: 1 }, 'body'), 'body/k\u0000', 'in a key');
  assert.equal(unstorableTextAt({ emoji: '\ud83d\ude00', accents: 'éè', empty: '' }, 'body'), undefined, 'paired surrogates are fine');
  assert.throws(
    () => refuseUnstorableText({ params: { id: 'tok\u0000' }, body: undefined }),
    (error: unknown) => error instanceof ProblemError && error.code === 'validation-failed' && error.errors?.[0]?.location === 'params/id',
  );
  assert.doesNotThrow(() => refuseUnstorableText({ params: { id: 'tok_1' }, query: { limit: 5 }, body: { name: 'ok' } }));
});
