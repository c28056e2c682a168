// `npm start`: runs `duplex up` from the bundles, building them first only when they are
// missing or older than a file they were made from. Plain JavaScript, so that a start with
// up-to-date bundles does not wait for the TypeScript loader the build runs under (about
// half a second before anything else could start).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { bundleStateOf } from '@duplex/shared/bundle-state';

const repository = fileURLToPath(new URL('..', import.meta.url));
const bundles = fileURLToPath(new URL('../packages/cli/dist/', import.meta.url));
const launcher = fileURLToPath(new URL('../packages/cli/dist/duplex.mjs', import.meta.url));

const state = bundleStateOf(bundles, repository);
if (state.state !== 'fresh') {
  const build = spawnSync(process.execPath, ['--import', 'tsx', 'packages/cli/src/build.ts'], { cwd: repository, stdio: 'inherit' });
  if (build.status !== 0) process.exit(build.status ?? 1);
}

// The launcher runs in this process, as `node --enable-source-maps packages/cli/dist/duplex.mjs up [options]` would.
process.setSourceMapsEnabled(true);
process.argv = [process.argv[0], launcher, 'up', ...process.argv.slice(2)];
await import(launcher);
