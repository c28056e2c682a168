import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const tsxLoader = import.meta.resolve('tsx');

/** Starts a TypeScript entry point as a Node process, with the tsx loader resolved from here. */
export function spawnTypeScript(
  entry: URL | string,
  options: { env: Record<string, string | undefined>; stdio?: StdioOptions; cwd?: string; args?: string[] },
): ChildProcess {
  const path = entry instanceof URL ? fileURLToPath(entry) : entry;
  return spawn(process.execPath, ['--import', tsxLoader, path, ...(options.args ?? [])], {
    env: options.env,
    stdio: options.stdio ?? 'inherit',
    cwd: options.cwd,
  });
}
