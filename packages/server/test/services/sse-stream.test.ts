import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseSse } from '@duplex/testkit';
import type { StreamedEvent } from '../../src/lib/event-stream.ts';
import { SseStream, type SseStreamOptions } from '../../src/services/sse-stream.ts';

const options: SseStreamOptions = { heartbeatMs: 60_000, retryMs: 1000, maxBufferedBytes: 4096, closeGraceMs: 60_000 };

function event(id: number, padding = ''): StreamedEvent {
  return { id, type: 'inventory.changed', storage_system_id: 'ss1', task_id: null, payload: { padding }, created_at: new Date(), position: { xid: 1n, id } };
}

async function readAll(stream: SseStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream.body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

describe('SseStream', () => {
  it('starts with the retry hint and writes each event as a message', async () => {
    const stream = new SseStream({}, options);
    assert.equal(stream.deliver([event(1), event(2)]), true);
    void stream.end('done');
    const parsed = parseSse(await readAll(stream));
    assert.equal(parsed.retry, 1000);
    assert.deepEqual(parsed.messages.map((message) => message.id), ['1', '2']);
    assert.deepEqual(parsed.comments, ['closing: done']);
  });

  it('ends itself, with the reason, once more than its limit waits unread; what it holds stays bounded', async () => {
    const stream = new SseStream({}, options);
    let delivered = 0;
    while (stream.deliver([event(delivered + 1, 'x'.repeat(500))])) {
      delivered += 1;
      assert.ok(delivered < 100, 'the stream never refused');
    }
    assert.ok(stream.bufferedBytes < options.maxBufferedBytes + 2048, `${stream.bufferedBytes} bytes held`);
    assert.equal(stream.deliver([event(1000)]), false, 'nothing more after the end');
    const parsed = parseSse(await readAll(stream));
    assert.deepEqual(parsed.messages.map((message) => Number(message.id)), Array.from({ length: delivered }, (_, n) => n + 1));
    assert.match(parsed.comments.at(-1) ?? '', /^closing: the client reads too slowly \(more than 4096 bytes waiting\)/);
    await stream.closed;
  });

  it('still sends one event larger than the limit to a client that keeps up', async () => {
    const stream = new SseStream({}, options);
    assert.equal(stream.deliver([event(1, 'y'.repeat(10_000))]), true);
    void stream.end('done');
    assert.deepEqual(parseSse(await readAll(stream)).messages.map((message) => message.id), ['1']);
  });

  it('sends heartbeats, and stops them when it ends', async () => {
    const stream = new SseStream({}, { ...options, heartbeatMs: 20 });
    let text = '';
    stream.body.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
    });
    const deadline = Date.now() + 5_000;
    while (parseSse(text).comments.length < 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    await stream.end('done');
    const parsed = parseSse(text);
    assert.ok(parsed.comments.filter((comment) => comment === 'heartbeat').length >= 3, JSON.stringify(parsed.comments));
    assert.equal(parsed.comments.at(-1), 'closing: done');
    const count = parsed.comments.length;
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.equal(parseSse(text).comments.length, count, 'no heartbeat after the end');
  });

  it('cuts a client that does not read the end within the grace period', async () => {
    const stream = new SseStream({}, { ...options, closeGraceMs: 50 });
    stream.deliver([event(1)]);
    const started = Date.now();
    // The stream's own timer does not hold the process open.
    const keepAlive = setTimeout(() => undefined, 5_000);
    await stream.end('going');
    clearTimeout(keepAlive);
    assert.ok(Date.now() - started < 1_000);
    assert.equal(stream.body.destroyed, true);
  });
});
