/** What the build records next to the bundles, so a bundle older than its sources is not run. */
export interface BundleManifest {
  built_at: string;
  /** The bundle files the build wrote, relative to the manifest's folder. */
  bundles: string[];
  /** Every file the bundles were made from, relative to the repository; dependencies count through the lockfile. */
  inputs: string[];
}

export type BundleState = { state: 'fresh' } | { state: 'missing' | 'outdated'; reason: string };

export function bundleStateOf(directory: string, repository: string): BundleState;
