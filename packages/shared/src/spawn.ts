import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { bundleEntry, bundleState, sourceEntry, type ServiceName } from './service-bundles.ts';

interface SpawnOptions {
  env: Record<string, string | undefined>;
  stdio?: StdioOptions;
  cwd?: string;
}

/** Starts a TypeScript entry point as a Node process, with the tsx loader resolved from here. */
export function spawnTypeScript(entry: URL | string, options: SpawnOptions & { args?: string[] }): ChildProcess {
  const path = entry instanceof URL ? fileURLToPath(entry) : entry;
  return spawn(process.execPath, ['--import', import.meta.resolve('tsx'), path, ...(options.args ?? [])], {
    env: options.env,
    stdio: options.stdio ?? 'inherit',
    cwd: options.cwd,
  });
}

/** `bundle`: the ESM bundle `npm run build` made (less memory, faster start); `source`: the TypeScript through tsx. */
export type ServiceRuntime = 'bundle' | 'source';

/** DUPLEX_RUNTIME as set (`bundle` or `source`); undefined when it is unset or `auto`. */
export function runtimeFromEnvironment(env: Record<string, string | undefined>): ServiceRuntime | undefined {
  const value = env.DUPLEX_RUNTIME;
  if (value === undefined || value === '' || value === 'auto') return undefined;
  if (value === 'bundle' || value === 'source') return value;
  throw new Error(`DUPLEX_RUNTIME must be bundle, source or auto, not '${value}'`);
}

/** DUPLEX_RUNTIME when it is set; otherwise the bundles when they are at least as new as every source, else the sources. */
export function chooseServiceRuntime(env: Record<string, string | undefined>): ServiceRuntime {
  return runtimeFromEnvironment(env) ?? (bundleState().state === 'fresh' ? 'bundle' : 'source');
}

const bundleNodeOptions = [
  // Stack traces name the .ts files and lines the bundle was made from.
  '--enable-source-maps',
  // The young generation grows to 2 x 16 MB while a service loads and stays that size when it
  // is idle; 2 x 4 MB keeps an idle server near 105 MB of RSS instead of 125 MB (bench/footprint.ts).
  '--max-semi-space-size=4',
];

/**
 * Starts a duplex service process: its bundle or its sources, as `runtime` or the
 * environment decides (chooseServiceRuntime). The choice goes to the process as
 * DUPLEX_RUNTIME, so the processes it starts (a cluster-manager's agents) run the same way.
 */
export function spawnService(service: ServiceName, options: SpawnOptions & { runtime?: ServiceRuntime }): ChildProcess {
  const runtime = options.runtime ?? chooseServiceRuntime(options.env);
  const env = { ...options.env, DUPLEX_RUNTIME: runtime };
  if (runtime === 'source') return spawnTypeScript(sourceEntry(service), { ...options, env });
  return spawn(process.execPath, [...bundleNodeOptions, bundleEntry(service)], { env, stdio: options.stdio ?? 'inherit', cwd: options.cwd });
}
