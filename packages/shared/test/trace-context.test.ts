import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { createServiceApp } from '../src/service-app.ts';
import { childSpan, continueTrace, formatTraceparent, newTrace, parseTraceparent } from '../src/trace-context.ts';

const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
const spanId = '00f067aa0ba902b7';
const valid = `00-${traceId}-${spanId}-01`;

describe('traceparent', () => {
  it('reads a version 00 header into its fields', () => {
    assert.deepEqual(parseTraceparent(valid), { traceId, spanId, flags: '01' });
    assert.deepEqual(parseTraceparent(`00-${traceId}-${spanId}-00`), { traceId, spanId, flags: '00' });
    assert.equal(formatTraceparent({ traceId, spanId, flags: '01' }), valid);
  });

  it('refuses ids of all zeros', () => {
    assert.equal(parseTraceparent(`00-${'0'.repeat(32)}-${spanId}-01`), undefined);
    assert.equal(parseTraceparent(`00-${traceId}-${'0'.repeat(16)}-01`), undefined);
  });

  it('refuses anything that is not lower-case hex of the right lengths', () => {
    for (const header of [
      '',
      'garbage',
      valid.toUpperCase(),
      `00-${traceId.slice(1)}-${spanId}-01`,
      `00-${traceId}0-${spanId}-01`,
      `00-${traceId}-${spanId.slice(1)}-01`,
      `00-${traceId}-${spanId}-1`,
      `00-${traceId}-${spanId}-0x`,
      `0-${traceId}-${spanId}-01`,
      `00_${traceId}_${spanId}_01`,
      `00-${traceId.replace('4', 'g')}-${spanId}-01`,
    ]) {
      assert.equal(parseTraceparent(header), undefined, header);
    }
  });

  it('refuses version ff, and extra fields in version 00', () => {
    assert.equal(parseTraceparent(`ff-${traceId}-${spanId}-01`), undefined);
    assert.equal(parseTraceparent(`${valid}-extra`), undefined);
  });

  it('reads the known fields of a later version and ignores what it appends', () => {
    assert.deepEqual(parseTraceparent(`01-${traceId}-${spanId}-01`), { traceId, spanId, flags: '01' });
    assert.deepEqual(parseTraceparent(`cc-${traceId}-${spanId}-01-what-comes-later`), { traceId, spanId, flags: '01' });
    // Appended data must be its own field.
    assert.equal(parseTraceparent(`cc-${traceId}-${spanId}-01x`), undefined);
  });

  it('counts a missing or repeated header as none', () => {
    assert.equal(parseTraceparent(undefined), undefined);
    assert.equal(parseTraceparent([valid, valid]), undefined);
  });

  it('makes new traces with valid, distinct, non-zero ids', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i += 1) {
      const trace = newTrace();
      assert.deepEqual(parseTraceparent(formatTraceparent(trace)), trace);
      assert.equal(trace.flags, '01');
      seen.add(trace.traceId);
    }
    assert.equal(seen.size, 2000);
  });

  it('continues a trace with a child span of its own', () => {
    const parent = { traceId, spanId, flags: '00' };
    const child = childSpan(parent);
    assert.equal(child.traceId, traceId);
    assert.equal(child.flags, '00');
    assert.notEqual(child.spanId, spanId);
    assert.equal(continueTrace(valid).traceId, traceId);
    assert.notEqual(continueTrace('invalid').traceId, traceId);
    assert.match(formatTraceparent(continueTrace(undefined)), /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  });
});

describe('a service app', () => {
  async function tracedApp(): Promise<{ app: Awaited<ReturnType<typeof createServiceApp>>; lines: Record<string, unknown>[] }> {
    const lines: Record<string, unknown>[] = [];
    const stream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    });
    const app = await createServiceApp({ service: 'traced', contract: 'agent', logger: { level: 'debug', stream } });
    app.get('/work', async (request) => {
      request.log.info('working');
      return { trace_id: request.trace.traceId };
    });
    return { app, lines };
  }

  it('continues the caller trace in the answer and in every log line of the request', async () => {
    const { app, lines } = await tracedApp();
    const response = await app.inject({ method: 'GET', url: '/work', headers: { traceparent: valid } });
    await app.close();
    assert.equal(response.statusCode, 200);
    const answered = parseTraceparent(response.headers.traceparent as string);
    assert.ok(answered);
    assert.equal(answered.traceId, traceId);
    assert.notEqual(answered.spanId, spanId);
    assert.equal(response.json<{ trace_id: string }>().trace_id, traceId);
    const ofRequest = lines.filter((line) => line.request_id === response.headers['x-request-id']);
    assert.deepEqual(ofRequest.map((line) => line.msg), ['incoming request', 'working', 'request completed']);
    assert.deepEqual(ofRequest.map((line) => line.level), [20, 30, 20], 'a routine request is logged at debug, the handler at its own level');
    for (const line of ofRequest) {
      assert.equal(line.trace_id, traceId);
      assert.equal(line.span_id, answered.spanId);
    }
  });

  it('starts a new trace for a request without a valid one', async () => {
    const { app, lines } = await tracedApp();
    const first = await app.inject({ method: 'GET', url: '/work' });
    const second = await app.inject({ method: 'GET', url: '/work', headers: { traceparent: `00-${'0'.repeat(32)}-${spanId}-01` } });
    await app.close();
    const traces = [first, second].map((response) => parseTraceparent(response.headers.traceparent as string));
    assert.ok(traces[0] && traces[1]);
    assert.notEqual(traces[0].traceId, traces[1].traceId);
    assert.notEqual(traces[1].traceId, '0'.repeat(32));
    const working = lines.filter((line) => line.msg === 'working').map((line) => line.trace_id);
    assert.deepEqual(working, [traces[0].traceId, traces[1].traceId]);
  });
});
