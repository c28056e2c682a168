/**
 * One service run as a real process by a benchmark (not through the harness): a TypeScript
 * entry started with spawnTypeScript, its output in a log file, ready once a GET of its
 * health path answers 200.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { spawnTypeScript } from '@duplex/shared';
import { sleep } from './api.ts';

export interface ServiceProcess {
  name: string;
  url: string;
  pid: number;
  child: ChildProcess;
  logFile: string;
  /** How it ended, or null while it runs. */
  ended(): string | null;
  logBytes(): number;
  /** The last lines of its log, for an error message. */
  logTail(lines?: number): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

export async function startServiceProcess(options: {
  name: string;
  entry: URL;
  url: string;
  readyPath: string;
  env: Record<string, string | undefined>;
  logFile: string;
  /** Flags for Node itself, such as --cpu-prof, which NODE_OPTIONS does not accept. */
  nodeArgs?: string[];
  timeoutMs?: number;
}): Promise<ServiceProcess> {
  const log = openSync(options.logFile, 'a');
  const nodeArgs = options.nodeArgs ?? [];
  const child =
    nodeArgs.length === 0
      ? spawnTypeScript(options.entry, { env: options.env, stdio: ['ignore', log, log] })
      : spawn(process.execPath, [...nodeArgs, '--import', import.meta.resolve('tsx'), fileURLToPath(options.entry)], { env: options.env, stdio: ['ignore', log, log] });
  closeSync(log);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ended = () => (child.exitCode === null && child.signalCode === null ? null : (child.signalCode ?? `exit code ${child.exitCode}`));
  const service: ServiceProcess = {
    name: options.name,
    url: options.url,
    pid: child.pid ?? -1,
    child,
    logFile: options.logFile,
    ended,
    logBytes: () => {
      try {
        return statSync(options.logFile).size;
      } catch {
        return 0;
      }
    },
    logTail: (lines = 20) => {
      try {
        return readFileSync(options.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
      } catch {
        return '';
      }
    },
    async stop(graceMs = 15_000) {
      if (ended() !== null) return;
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(killer);
    },
  };
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  while (Date.now() < deadline) {
    if (ended() !== null) throw new Error(`${options.name} ended during its start (${ended()}):\n${service.logTail()}`);
    try {
      const response = await fetch(`${options.url}${options.readyPath}`, { signal: AbortSignal.timeout(1_000) });
      await response.arrayBuffer();
      if (response.status === 200) return service;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  await service.stop();
  throw new Error(`${options.name} was not ready at ${options.url} within ${(options.timeoutMs ?? 60_000) / 1000} s:\n${service.logTail()}`);
}
