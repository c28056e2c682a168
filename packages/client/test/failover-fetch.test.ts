import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createFailoverFetch } from '../src/index.ts';

setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

describe('the failover fetch', () => {
  // An event stream that stays open and says nothing, like a quiet /v1/events.
  const server = createServer((_request, response) => {
    response.writeHead(200, { 'content-type': 'text/event-stream' }).write(':\n\n');
  });
  let url = '';

  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it("ends a streaming body when the caller's signal aborts, even after a garbage collection", async () => {
    const fetcher = createFailoverFetch({ servers: [url] });
    const caller = new AbortController();
    const response = await fetcher(`${url}/v1/events`, { signal: caller.signal });
    for (let round = 0; round < 3; round += 1) {
      collectGarbage();
      await sleep(10);
    }
    caller.abort(new Error('the caller gave up'));
    const reading = (async () => {
      for await (const _chunk of response.body as unknown as AsyncIterable<Uint8Array>);
      return 'the body ended by itself';
    })();
    const outcome = await Promise.race([reading.catch((error: Error) => error.message), sleep(5_000, 'the body was still open 5 s after the abort')]);
    assert.equal(outcome, 'the caller gave up');
  });
});
