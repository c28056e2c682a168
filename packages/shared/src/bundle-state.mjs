// Plain JavaScript, typed by bundle-state.d.mts: `npm start` (scripts/start.mjs) asks it
// before any TypeScript loader runs, and the TypeScript code asks the same function.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Whether the bundles in `directory` can stand for the sources in `repository`: every bundle
 * the manifest lists is there, and newer than every file they were made from.
 */
export function bundleStateOf(directory, repository) {
  const manifestFile = join(directory, 'manifest.json');
  let builtAtMs;
  let manifest;
  try {
    builtAtMs = statSync(manifestFile).mtimeMs;
    manifest = JSON.parse(readFileSync(manifestFile, 'utf8'));
  } catch {
    return { state: 'missing', reason: `there is no build in ${directory}` };
  }
  if (!Array.isArray(manifest.bundles) || !Array.isArray(manifest.inputs)) {
    return { state: 'outdated', reason: `the build in ${directory} was made by an older duplex` };
  }
  for (const name of manifest.bundles) {
    const bundle = join(directory, name);
    try {
      statSync(bundle);
    } catch {
      return { state: 'missing', reason: `there is no ${bundle}` };
    }
  }
  for (const input of manifest.inputs) {
    let modifiedMs;
    try {
      modifiedMs = statSync(join(repository, input)).mtimeMs;
    } catch {
      return { state: 'outdated', reason: `${input} is gone since the build` };
    }
    if (modifiedMs > builtAtMs) return { state: 'outdated', reason: `${input} changed after the build` };
  }
  return { state: 'fresh' };
}
