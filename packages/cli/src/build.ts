/**
 * `npm run build`: bundles each service (server, cluster-manager, agent, driver) and the
 * launcher (`duplex up`) into one ESM file each in packages/cli/dist, with its source map. A
 * bundle starts sooner and holds less memory than the same code compiled at start by the tsx
 * loader. It does nothing while the bundles are newer than every file they were made from;
 * `--force` builds anyway.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { contractNames, contractPath } from '@duplex/contracts';
import { build } from 'esbuild';
import { bundleOptions } from './bundle-options.ts';
import { bundleDirectory, bundleManifestFile, bundleState, launcherBundleName, repositoryDirectory, serviceNames, type BundleManifest } from '@duplex/shared/service-bundles';
import { parse } from 'yaml';
import { keepSources, type SourceMapV3 } from './source-map.ts';

const { values } = parseArgs({ options: { force: { type: 'boolean', default: false } } });
const say = (line: string) => process.stdout.write(`build: ${line}\n`);

const bundles = bundleState();
if (bundles.state === 'fresh' && !values.force) {
  say(`the bundles in ${relative(process.cwd(), bundleDirectory) || '.'} are up to date`);
  process.exit(0);
}

const startedAt = Date.now();
// The contracts go into the bundles as JSON text (loadContract reads it), so a service reads no YAML at start.
const contracts = Object.fromEntries(contractNames.map((name) => [name, parse(readFileSync(contractPath(name), 'utf8')) as unknown]));
const result = await build({
  ...bundleOptions(contracts),
  outdir: bundleDirectory,
  // Stack traces name the .ts files (the services run with --enable-source-maps); the sources stay in the repository.
  sourcemap: 'linked',
  sourcesContent: false,
  metafile: true,
  write: false,
  logLevel: 'warning',
});

// Each file appears whole or not at all, so a service started during a build reads an old or a new bundle, never half of one.
mkdirSync(bundleDirectory, { recursive: true });
const isDependency = (path: string) => path.split(/[\\/]/).includes('node_modules');
for (const file of result.outputFiles) {
  // Only duplex's own files are mapped: see source-map.ts for what the dependencies' mappings cost.
  const contents = file.path.endsWith('.map') ? `${JSON.stringify(keepSources(JSON.parse(file.text) as SourceMapV3, (source) => !isDependency(source)))}\n` : file.contents;
  writeFileSync(`${file.path}.partial`, contents);
  renameSync(`${file.path}.partial`, file.path);
}
// Files only: esbuild also lists what it made up, such as `<define:import.meta.bundledContracts>`.
const inputs = Object.keys(result.metafile.inputs)
  .filter((input) => !input.startsWith('<') && !isDependency(input))
  .map((input) => relative(repositoryDirectory, input));
// The manifest goes last: its time is the build's. Dependencies are covered by the lockfile, the options by this build's own
// files and by @duplex/shared's package.json (its `sideEffects` decides what the bundles leave out).
const buildFiles = [import.meta.url, ...['bundle-options.ts', 'source-map.ts', '../../shared/package.json'].map((file) => new URL(file, import.meta.url).href)].map((url) =>
  relative(repositoryDirectory, fileURLToPath(url)),
);
const manifest: BundleManifest = {
  built_at: new Date().toISOString(),
  bundles: result.outputFiles.map((file) => relative(bundleDirectory, file.path)).filter((file) => file.endsWith('.mjs')),
  inputs: [...inputs, ...contractNames.map((name) => relative(repositoryDirectory, contractPath(name))), 'pnpm-lock.yaml', ...buildFiles],
};
writeFileSync(`${bundleManifestFile}.partial`, `${JSON.stringify(manifest, null, 2)}\n`);
renameSync(`${bundleManifestFile}.partial`, bundleManifestFile);
say(`${bundles.state === 'fresh' ? 'forced' : bundles.reason}: bundled ${[...serviceNames, launcherBundleName].join(', ')} into ${relative(process.cwd(), bundleDirectory) || '.'} in ${Date.now() - startedAt} ms`);
