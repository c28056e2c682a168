import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { repositoryDirectory, sourceEntry } from '@duplex/shared/service-bundles';
import { build } from 'esbuild';
import { bundleOptions } from '../src/bundle-options.ts';

/** The packages (by their folder under node_modules) whose code each bundle holds. */
async function bundledPackages(services: ('agent' | 'driver' | 'server')[]): Promise<Map<string, Set<string>>> {
  const result = await build({
    ...bundleOptions({}),
    entryPoints: Object.fromEntries(services.map((service) => [service, sourceEntry(service)])),
    outdir: join(tmpdir(), 'duplex-bundle-options-test'),
    // The metafile's paths are relative to this, wherever the test runs from.
    absWorkingDir: repositoryDirectory,
    write: false,
    metafile: true,
    logLevel: 'silent',
  });
  const packages = new Map<string, Set<string>>();
  for (const [output, { entryPoint, inputs }] of Object.entries(result.metafile.outputs)) {
    if (!output.endsWith('.mjs') || !entryPoint) continue;
    const service = services.find((name) => entryPoint === relative(repositoryDirectory, sourceEntry(name)))!;
    // Only the inputs whose code the bundle kept are listed, each under .../node_modules/<name>/...
    const names = Object.keys(inputs).flatMap((input) => input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\/(?!.*node_modules\/)/)?.[1] ?? []);
    packages.set(service, new Set(names));
  }
  return packages;
}

test("the agents' and drivers' bundles hold neither pg nor knex, which only the servers (and cluster-managers) load", async () => {
  const packages = await bundledPackages(['agent', 'driver', 'server']);
  for (const service of ['agent', 'driver'] as const) {
    const held = packages.get(service) ?? new Set();
    assert.ok(held.has('fastify'), `the ${service} bundle was read: ${[...held].join(', ')}`);
    assert.equal(held.has('pg'), false, `the ${service} bundle holds pg`);
    assert.equal(held.has('knex'), false, `the ${service} bundle holds knex`);
  }
  assert.ok(packages.get('server')?.has('pg'));
  assert.ok(packages.get('server')?.has('knex'));
});
