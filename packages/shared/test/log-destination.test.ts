import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

const packageDirectory = new URL('..', import.meta.url);

/**
 * A service that logs a burst of lines, as a busy server does, into `file` as its stdout. It
 * prints to stderr how often a string longer than one line was measured in bytes: the log
 * destination (sonic-boom, patched in patches/) must not measure the chunk it is building at
 * every line while a write is in flight.
 */
const child = `
import { defaultLogger } from './src/service-app.ts';
import Fastify from 'fastify';
const measure = Buffer.byteLength;
let longMeasured = 0;
Buffer.byteLength = function (value, ...rest) {
  if (typeof value === 'string' && value.length > 4096) longMeasured += 1;
  return measure.call(this, value, ...rest);
};
const app = Fastify({ logger: defaultLogger('log-test') });
for (let i = 0; i < 5000; i += 1) app.log.info({ task_id: 'tsk_' + i, note: i % 7 === 0 ? 'żółć 卷 📦'.repeat(40) : 'plain' }, 'task accepted');
await app.close();
process.stderr.write(JSON.stringify({ longMeasured }));
`;

describe('the services\' log destination', () => {
  it('writes every line of a burst whole and in order, without measuring its backlog at each line', () => {
    const directory = mkdtempSync(join(tmpdir(), 'duplex-log-'));
    try {
      const file = join(directory, 'out.log');
      const out = openSync(file, 'w');
      const result = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', child], {
        cwd: packageDirectory,
        stdio: ['ignore', out, 'pipe'],
        encoding: 'utf8',
        env: { ...process.env, LOG_LEVEL: 'info' },
        timeout: 60_000,
      });
      closeSync(out);
      assert.equal(result.status, 0, result.stderr);
      const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
      assert.equal(lines.length, 5000);
      lines.forEach((line, index) => {
        const entry = JSON.parse(line) as { task_id: string; note: string; msg: string };
        assert.equal(entry.task_id, `tsk_${index}`);
        assert.equal(entry.note, index % 7 === 0 ? 'żółć 卷 📦'.repeat(40) : 'plain');
      });
      const { longMeasured } = JSON.parse(result.stderr.slice(result.stderr.lastIndexOf('{'))) as { longMeasured: number };
      assert.equal(longMeasured, 0, 'the chunk being built was measured in bytes while lines were added to it');
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });
});
