// Runs every test file with node's test runner. Without DATABASE_URL it starts an embedded
// Postgres for the run (data in a temporary folder under .duplex/) and removes it afterwards.
import { spawn } from 'node:child_process';
import { readdirSync, rmSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmbeddedPostgres, type EmbeddedPostgresServer } from '@duplex/shared';
import { freePort } from '@duplex/testkit';

const root = fileURLToPath(new URL('..', import.meta.url));
const filters = process.argv.slice(2);

function findTests(directory: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(directory)) {
    if (entry === 'node_modules' || entry.startsWith('.')) continue;
    const path = join(directory, entry);
    if (statSync(path).isDirectory()) found.push(...findTests(path));
    else if (entry.endsWith('.test.ts')) found.push(path);
  }
  return found;
}

const files = [...findTests(join(root, 'packages')), ...findTests(join(root, 'test'))]
  .map((file) => relative(root, file))
  .filter((file) => filters.length === 0 || filters.some((filter) => file.includes(filter)))
  .sort();
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}

let embedded: EmbeddedPostgresServer | undefined;
let dataDir: string | undefined;
const env = { ...process.env };
// Processes the tests start run the sources as they are now, never a bundle built before an edit.
env.DUPLEX_RUNTIME ??= 'source';
if (!env.DATABASE_URL) {
  dataDir = join(root, '.duplex', `test-pg-${process.pid}`);
  embedded = await startEmbeddedPostgres({ dataDir, port: await freePort() });
  env.DATABASE_URL = embedded.adminUrl;
  console.log(`# tests use an embedded Postgres (${new URL(embedded.adminUrl).host})`);
} else {
  console.log(`# tests use DATABASE_URL (${new URL(env.DATABASE_URL).host})`);
}

const concurrency = process.env.TEST_CONCURRENCY ?? '2';
// Node 20's runner applies the timeout to each file's process: a test that hangs, or a file that
// leaves a handle open, fails under the file's name after 10 minutes instead of holding the run.
const fileTimeoutMs = process.env.TEST_FILE_TIMEOUT_MS ?? '600000';
const child = spawn(process.execPath, ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, `--test-timeout=${fileTimeoutMs}`, ...files], {
  cwd: root,
  env,
  stdio: 'inherit',
});
const code = await new Promise<number>((resolve) => child.on('exit', (exitCode, signal) => resolve(exitCode ?? (signal ? 1 : 0))));
if (embedded && dataDir) {
  await embedded.stop().catch(() => {});
  rmSync(dataDir, { recursive: true, force: true });
}
process.exit(code);
