import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Fastify from 'fastify';
import { LazyChildLogger } from '../src/request-logger.ts';

/** A pino logger at `level` (Fastify's), and the lines it wrote. */
function serviceLogger(level: string) {
  const lines: Record<string, unknown>[] = [];
  const app = Fastify({ logger: { level, base: { service: 'test' }, stream: { write: (line: string) => void lines.push(JSON.parse(line)) } } });
  return { log: app.log, lines };
}

describe('a request’s logger', () => {
  it('makes its child at the first line of an enabled level, once, and writes the same lines a child writes', () => {
    const { log, lines } = serviceLogger('info');
    let made = 0;
    const bindings = () => ((made += 1), { request_id: 'req-1', trace_id: 'a'.repeat(32) });
    const logger = LazyChildLogger.of(log, bindings, {});
    logger.debug({ req: 'x' }, 'incoming request');
    logger.trace('nothing');
    assert.equal(made, 0, 'no child for lines below the level');
    assert.equal(lines.length, 0);
    assert.equal(logger.level, 'info');

    logger.info({ task_id: 't1' }, 'task accepted');
    logger.warn('slow');
    assert.equal(made, 1);
    const direct = serviceLogger('info');
    direct.log.child({ request_id: 'req-1', trace_id: 'a'.repeat(32) }).info({ task_id: 't1' }, 'task accepted');
    const { time: _a, ...line } = lines[0]!;
    const { time: _b, ...expected } = direct.lines[0]!;
    assert.deepEqual(line, expected);
    assert.equal(lines[1]!.msg, 'slow');

    logger.child({ span: 's' }).error('failed');
    assert.deepEqual([lines[2]!.request_id, lines[2]!.span, lines[2]!.level], ['req-1', 's', 50]);
    assert.equal(made, 1);
  });

  it('follows the service’s level as it changes, and a level set on it applies to its own lines', () => {
    const { log, lines } = serviceLogger('info');
    const logger = LazyChildLogger.of(log, () => ({ request_id: 'req-2' }), {});
    log.level = 'debug';
    logger.debug('now shown');
    assert.deepEqual(lines.map((line) => [line.msg, line.request_id]), [['now shown', 'req-2']]);
    logger.level = 'error';
    logger.warn('hidden');
    assert.equal(lines.length, 1);
  });

  it('is a child at once when the route sets a level of its own', () => {
    const { log, lines } = serviceLogger('info');
    let made = 0;
    const logger = LazyChildLogger.of(log, () => ((made += 1), { request_id: 'req-3' }), { level: 'debug' });
    assert.equal(made, 1);
    logger.debug('route at debug');
    assert.deepEqual(lines.map((line) => line.msg), ['route at debug']);
  });
});
