/**
 * Reads V8 CPU profiles (`node --cpu-prof`, one .cpuprofile per process) and sums the self
 * time of each function over a time window, so a profile of a whole run can be read for the
 * measured seconds only. A profile's times are V8 TimeTicks in microseconds, which on Linux is
 * CLOCK_MONOTONIC: the same clock as process.hrtime here, so windows carry across processes.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
}

interface CpuProfileFile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileWindow {
  /** process.hrtime.bigint() / 1000n at the window's start and end, as numbers. */
  fromUs: number;
  toUs: number;
}

export interface SelfTime {
  function: string;
  /** Where it is defined: a path under the repository or node_modules, and the line. */
  location: string;
  self_ms: number;
  /** Share of the window's busy (not idle) samples. */
  percent: number;
}

export interface PackageTime {
  /** An npm package, `duplex <workspace package>`, `node` (Node's own JavaScript) or `(V8 and native)`. */
  package: string;
  self_ms: number;
  percent: number;
}

export interface ProfileSummary {
  /** What the processes are, e.g. "server-A, server-B". */
  processes: string[];
  busy_ms: number;
  idle_ms: number;
  top: SelfTime[];
  /** The same self time summed by the package the code belongs to. */
  packages: PackageTime[];
}

export const monotonicMicros = (): number => Number(process.hrtime.bigint() / 1000n);

/** The profiles Node wrote into `directory`, by the pid in their file names (CPU.<date>.<time>.<pid>.<thread>.<n>.cpuprofile). */
export function profileFiles(directory: string): Map<number, string[]> {
  const byPid = new Map<number, string[]>();
  let entries: string[] = [];
  try {
    entries = readdirSync(directory);
  } catch {
    return byPid;
  }
  for (const entry of entries) {
    const match = /^CPU\.\d+\.\d+\.(\d+)\.\d+\.\d+\.cpuprofile$/.exec(entry);
    if (!match) continue;
    const pid = Number(match[1]);
    byPid.set(pid, [...(byPid.get(pid) ?? []), join(directory, entry)]);
  }
  return byPid;
}

function packageOf(frame: CallFrame): string {
  const url = frame.url;
  if (url === '') return frame.functionName.startsWith('(') ? frame.functionName : '(V8 and native)';
  if (url.startsWith('node:')) return 'node';
  const modules = url.lastIndexOf('/node_modules/');
  if (modules >= 0) {
    const parts = url.slice(modules + '/node_modules/'.length).split('/');
    return parts[0]?.startsWith('@') ? `${parts[0]}/${parts[1] ?? ''}` : (parts[0] ?? url);
  }
  const workspace = /\/packages\/([^/]+)\//.exec(url);
  return workspace ? `duplex ${workspace[1]}` : url;
}

function shortLocation(frame: CallFrame): string {
  if (!frame.url) return '';
  const url = frame.url.replace(/^file:\/\//, '');
  const modules = url.lastIndexOf('/node_modules/');
  const short = modules >= 0 ? url.slice(modules + '/node_modules/'.length).replace(/^\.pnpm\/[^/]+\/node_modules\//, '') : url.replace(/^.*?\/(packages|bench|migrations)\//, '$1/');
  return `${short}:${frame.lineNumber + 1}`;
}

/** Sums the self time of every function in `files` over `window` (the whole profiles without one). */
export function summarizeProfiles(processes: string[], files: readonly string[], window: ProfileWindow | undefined, limit = 12): ProfileSummary {
  const selfUs = new Map<string, { fn: string; location: string; us: number }>();
  const packageUs = new Map<string, number>();
  let idleUs = 0;
  let busyUs = 0;
  for (const file of files) {
    const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfileFile;
    const frames = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
    let time = profile.startTime;
    for (let index = 0; index < profile.samples.length; index += 1) {
      const delta = profile.timeDeltas[index] ?? 0;
      time += delta;
      if (window && (time < window.fromUs || time > window.toUs)) continue;
      const frame = frames.get(profile.samples[index]!);
      if (!frame) continue;
      // A sample stands for the time since the one before it.
      if (frame.functionName === '(idle)') {
        idleUs += delta;
        continue;
      }
      busyUs += delta;
      const fn = frame.functionName || '(anonymous)';
      const location = shortLocation(frame);
      const key = `${fn}@${location}`;
      const entry = selfUs.get(key) ?? { fn, location, us: 0 };
      entry.us += delta;
      selfUs.set(key, entry);
      const owner = packageOf(frame);
      packageUs.set(owner, (packageUs.get(owner) ?? 0) + delta);
    }
  }
  const top = [...selfUs.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, limit)
    .map((entry) => ({ function: entry.fn, location: entry.location, self_ms: entry.us / 1_000, percent: busyUs > 0 ? (100 * entry.us) / busyUs : 0 }));
  const packages = [...packageUs]
    .sort((a, b) => b[1] - a[1])
    .slice(0, limit)
    .map(([owner, us]) => ({ package: owner, self_ms: us / 1_000, percent: busyUs > 0 ? (100 * us) / busyUs : 0 }));
  return { processes, busy_ms: busyUs / 1_000, idle_ms: idleUs / 1_000, top, packages };
}
