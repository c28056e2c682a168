import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleStateOf, type BundleState } from './bundle-state.mjs';

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

export type { BundleManifest, BundleState } from './bundle-state.mjs';

/** Whether the bundles can stand for the sources (bundle-state.mjs). The folders are parameters for the tests. */
export function bundleState(directory = bundleDirectory, repository = repositoryDirectory): BundleState {
  return bundleStateOf(directory, repository);
}
