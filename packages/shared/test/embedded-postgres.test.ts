import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { freePort, processExists, waitFor } from '@duplex/testkit';
import { startEmbeddedPostgres } from '../src/embedded-postgres.ts';

test('stopping an embedded Postgres that a signal stopped before returns at once', { timeout: 60_000 }, async (t) => {
  const directory = mkdtempSync(join(tmpdir(), 'duplex-embedded-'));
  // As root, Postgres runs as its own user, which must reach the data folder.
  chmodSync(directory, 0o755);
  t.after(() => rmSync(directory, { recursive: true, force: true }));
  const dataDir = join(directory, 'data');
  const server = await startEmbeddedPostgres({ dataDir, port: await freePort() });
  const pidFile = join(dataDir, 'postmaster.pid');
  const postmaster = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  // What Ctrl-C does to the launcher's process group: Postgres gets SIGINT (fast shutdown) too.
  process.kill(postmaster, 'SIGINT');
  // Gone and reaped: this process has seen its exit before stop() is called, as the launcher has after stopping the services.
  await waitFor('Postgres to stop on the signal', async () => (!existsSync(pidFile) && !processExists(postmaster)) || undefined, 30_000, 50);
  const startedAt = performance.now();
  await server.stop();
  const tookMs = performance.now() - startedAt;
  assert.ok(tookMs < 5_000, `stop took ${Math.round(tookMs)} ms`);
});
