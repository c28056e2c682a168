import assert from 'node:assert/strict';
import { SourceMap, type SourceMapPayload } from 'node:module';
import { test } from 'node:test';
import { decodeSegment, encodeSegment, keepSources, type SourceMapV3 } from '../src/source-map.ts';

test('segments survive encoding and decoding, large and negative numbers included', () => {
  for (const values of [[0], [1, -1, 15, -16], [0, 0, 1234567, -89], [16, 31, 32, -33, 1023, -1024]]) {
    assert.deepEqual(decodeSegment(encodeSegment(values)), values);
  }
  // Known encodings from the source map specification's examples.
  assert.equal(encodeSegment([0, 0, 0, 0]), 'AAAA');
  assert.equal(encodeSegment([16]), 'gB');
  assert.equal(encodeSegment([-1]), 'D');
});

/** Generated line 0: app code at 0, a dependency at 10, app code at 20; line 1: a dependency, then app code at 5. */
function bundleMap(): SourceMapV3 {
  // [generated column, source, original line, original column], relative as in the format.
  const line0 = [encodeSegment([0, 0, 3, 2]), encodeSegment([10, 1, 40, 0]), encodeSegment([10, -1, -42, 4])];
  const line1 = [encodeSegment([0, 1, 41, -6]), encodeSegment([5, -1, -40, 0])];
  return {
    version: 3,
    sources: ['../../shared/src/app.ts', '../../../node_modules/.pnpm/dep@1.0.0/node_modules/dep/index.js'],
    names: [],
    mappings: `${line0.join(',')};${line1.join(',')}`,
  };
}

test('only the kept sources stay mapped; code of the others maps to nothing', () => {
  const full = new SourceMap(bundleMap() as unknown as SourceMapPayload);
  const trimmed = keepSources(bundleMap(), (source) => !source.includes('node_modules'));
  assert.deepEqual(trimmed.sources, ['../../shared/src/app.ts']);
  const map = new SourceMap(trimmed as unknown as SourceMapPayload);
  const at = (line: number, column: number) => map.findEntry(line, column) as { originalSource?: string; originalLine?: number; originalColumn?: number };
  // App code keeps exactly the position the full map gives it.
  for (const [line, column] of [
    [0, 0],
    [0, 5],
    [0, 20],
    [0, 25],
    [1, 5],
  ] as const) {
    const expected = full.findEntry(line, column) as { originalSource: string; originalLine: number; originalColumn: number };
    assert.ok(expected.originalSource.endsWith('app.ts'));
    const found = at(line, column);
    assert.equal(found.originalSource, expected.originalSource);
    assert.equal(found.originalLine, expected.originalLine);
    assert.equal(found.originalColumn, expected.originalColumn);
  }
  // The dependency's code is not blamed on app.ts, on its own line or the next.
  assert.equal(at(0, 12).originalSource, undefined);
  assert.equal(at(1, 2).originalSource, undefined);
});
