import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { bundleEntry, bundleState, launcherBundleName, serviceNames, sourceEntry } from '../src/service-bundles.ts';
import { chooseServiceRuntime, runtimeFromEnvironment, spawnService } from '../src/spawn.ts';

/** A repository with one source file and, unless `built` is false, a build of it. */
function fakeBuild(built = true): { repository: string; dist: string; source: string; remove: () => void } {
  const repository = mkdtempSync(join(tmpdir(), 'duplex-bundles-'));
  const dist = join(repository, 'dist');
  mkdirSync(join(repository, 'src'));
  const source = join(repository, 'src', 'app.ts');
  writeFileSync(source, 'export {};\n');
  const past = new Date(Date.now() - 60_000);
  utimesSync(source, past, past);
  if (built) {
    mkdirSync(dist);
    const bundles = [...serviceNames, launcherBundleName].map((name) => `${name}.mjs`);
    for (const bundle of bundles) writeFileSync(join(dist, bundle), '');
    writeFileSync(join(dist, 'manifest.json'), JSON.stringify({ built_at: new Date().toISOString(), bundles, inputs: ['src/app.ts'] }));
  }
  return { repository, dist, source, remove: () => rmSync(repository, { recursive: true, force: true }) };
}

test('bundles newer than every input stand for the sources', (t) => {
  const build = fakeBuild();
  t.after(build.remove);
  assert.deepEqual(bundleState(build.dist, build.repository), { state: 'fresh' });
});

test('a source changed after the build makes the bundles outdated, and says which', (t) => {
  const build = fakeBuild();
  t.after(build.remove);
  const future = new Date(Date.now() + 60_000);
  utimesSync(build.source, future, future);
  assert.deepEqual(bundleState(build.dist, build.repository), { state: 'outdated', reason: 'src/app.ts changed after the build' });
});

test('a build whose manifest does not list its bundles (an older build) is outdated', (t) => {
  const build = fakeBuild();
  t.after(build.remove);
  writeFileSync(join(build.dist, 'manifest.json'), JSON.stringify({ built_at: new Date().toISOString(), inputs: ['src/app.ts'] }));
  assert.equal(bundleState(build.dist, build.repository).state, 'outdated');
});

test('a source removed since the build makes the bundles outdated', (t) => {
  const build = fakeBuild();
  t.after(build.remove);
  rmSync(build.source);
  assert.equal(bundleState(build.dist, build.repository).state, 'outdated');
});

test('no build, or a bundle missing from it, is missing', (t) => {
  const none = fakeBuild(false);
  t.after(none.remove);
  assert.equal(bundleState(none.dist, none.repository).state, 'missing');
  const partial = fakeBuild();
  t.after(partial.remove);
  rmSync(join(partial.dist, 'agent.mjs'));
  assert.deepEqual(bundleState(partial.dist, partial.repository), { state: 'missing', reason: `there is no ${join(partial.dist, 'agent.mjs')}` });
});

test('DUPLEX_RUNTIME picks the runtime; auto or unset leaves it to the bundles’ state; anything else is refused', () => {
  assert.equal(runtimeFromEnvironment({ DUPLEX_RUNTIME: 'bundle' }), 'bundle');
  assert.equal(runtimeFromEnvironment({ DUPLEX_RUNTIME: 'source' }), 'source');
  assert.equal(runtimeFromEnvironment({ DUPLEX_RUNTIME: 'auto' }), undefined);
  assert.equal(runtimeFromEnvironment({}), undefined);
  assert.throws(() => runtimeFromEnvironment({ DUPLEX_RUNTIME: 'tsx' }), /DUPLEX_RUNTIME must be bundle, source or auto, not 'tsx'/);
  assert.equal(chooseServiceRuntime({ DUPLEX_RUNTIME: 'source' }), 'source');
  assert.equal(chooseServiceRuntime({ DUPLEX_RUNTIME: 'bundle' }), 'bundle');
});

/** Starts a driver (memory backend, any free port) and returns its command line, and its environment as the kernel has it. */
async function spawnDriver(runtime: 'bundle' | 'source', readEnvironment: boolean): Promise<{ argv: string[]; env: string[] }> {
  const child = spawnService('driver', {
    runtime,
    env: { ...process.env, DUPLEX_RUNTIME: undefined, DRIVER_BACKEND: 'memory', DRIVER_PORT: '0', LOG_LEVEL: 'silent' },
    stdio: 'ignore',
  });
  await once(child, 'spawn');
  try {
    const env = readEnvironment ? readFileSync(`/proc/${child.pid}/environ`, 'utf8').split('\0') : [];
    return { argv: child.spawnargs, env };
  } finally {
    child.kill('SIGKILL');
    if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
  }
}

test('a service runs its sources through tsx, and hands the choice down in DUPLEX_RUNTIME', async () => {
  const { argv, env } = await spawnDriver('source', true);
  assert.ok(argv.some((arg) => arg.includes('tsx')), argv.join(' '));
  assert.equal(argv.at(-1), sourceEntry('driver'));
  assert.ok(env.includes('DUPLEX_RUNTIME=source'), 'the process environment names its runtime');
});

test('a service runs its bundle with source maps, and no tsx', async () => {
  // The bundle may not be built here; the command line is what this checks.
  const { argv } = await spawnDriver('bundle', false);
  assert.ok(argv.includes('--enable-source-maps'), argv.join(' '));
  assert.ok(!argv.some((arg) => arg.includes('tsx')), argv.join(' '));
  assert.equal(argv.at(-1), bundleEntry('driver'));
});
