import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const serviceNames = ['server', 'cluster-manager', 'agent', 'driver'] as const;
export type ServiceName = (typeof serviceNames)[number];

// This file (packages/shared/src) and the bundles (packages/cli/dist) are both two folders
// below packages/, so the same relative URLs find the same places from the sources and from
// inside a bundle.
const packagesUrl = new URL('../../', import.meta.url);
export const repositoryDirectory = fileURLToPath(new URL('../', packagesUrl));
/** Where `npm run build` writes one ESM bundle per service, with its source map. */
export const bundleDirectory = fileURLToPath(new URL('cli/dist/', packagesUrl));
export const bundleManifestFile = join(bundleDirectory, 'manifest.json');

export const sourceEntry = (service: ServiceName): string => fileURLToPath(new URL(`${service}/src/server.ts`, packagesUrl));
export const bundleEntry = (service: ServiceName): string => join(bundleDirectory, `${service}.mjs`);
/** The launcher (`duplex up`) is bundled beside the services, as `duplex.mjs`. */
export const launcherBundleName = 'duplex';

/** What the build records next to the bundles, so a bundle older than its sources is not run. */
export interface BundleManifest {
  built_at: string;
  /** Every file the bundles were made from, relative to the repository; dependencies count through the lockfile. */
  inputs: string[];
}

export type BundleState = { state: 'fresh' } | { state: 'missing' | 'outdated'; reason: string };

/**
 * Whether the bundles can stand for the sources: all there, and newer than every file they
 * were made from. (The folders are parameters for the tests.)
 */
export function bundleState(directory = bundleDirectory, repository = repositoryDirectory): BundleState {
  const manifestFile = join(directory, 'manifest.json');
  let builtAtMs: number;
  let manifest: BundleManifest;
  try {
    builtAtMs = statSync(manifestFile).mtimeMs;
    manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as BundleManifest;
  } catch {
    return { state: 'missing', reason: `there is no build in ${directory}` };
  }
  for (const name of [...serviceNames, launcherBundleName]) {
    const bundle = join(directory, `${name}.mjs`);
    try {
      statSync(bundle);
    } catch {
      return { state: 'missing', reason: `there is no ${bundle}` };
    }
  }
  for (const input of manifest.inputs) {
    let modifiedMs: number;
    try {
      modifiedMs = statSync(join(repository, input)).mtimeMs;
    } catch {
      return { state: 'outdated', reason: `${input} is gone since the build` };
    }
    if (modifiedMs > builtAtMs) return { state: 'outdated', reason: `${input} changed after the build` };
  }
  return { state: 'fresh' };
}
