/**
 * Reads the processes' JSON log lines (pino, one object per line) from the harness's log
 * folder as they grow, so each trial can keep the lines that explain it: the folder is
 * removed with the harness. Agents log into their cluster-manager's file.
 */
import { closeSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';

export interface LogLine {
  /** Milliseconds since the fault was injected. */
  ms: number;
  service: string;
  level: number;
  msg: string;
  detail: string;
}

interface Parsed {
  time: number;
  service: string;
  level: number;
  msg: string;
  detail: string;
}

/** Request logs say nothing about failover; the benchmark's own polling would drown the rest. */
const noise = new Set(['incoming request', 'request completed']);

export class LogTail {
  private readonly offsets = new Map<string, number>();
  private readonly partial = new Map<string, string>();
  private buffer: Parsed[] = [];

  constructor(private readonly directory: string) {}

  /** Reads what the files gained since the last call. */
  private pull(): void {
    let files: string[];
    try {
      files = readdirSync(this.directory).filter((name) => name.endsWith('.log'));
    } catch {
      return;
    }
    for (const name of files) {
      const path = join(this.directory, name);
      const size = statSync(path).size;
      const offset = this.offsets.get(name) ?? 0;
      if (size <= offset) continue;
      const bytes = Buffer.alloc(size - offset);
      const fd = openSync(path, 'r');
      try {
        readSync(fd, bytes, 0, bytes.length, offset);
      } finally {
        closeSync(fd);
      }
      this.offsets.set(name, size);
      const text = (this.partial.get(name) ?? '') + bytes.toString('utf8');
      const lines = text.split('\n');
      this.partial.set(name, lines.pop() ?? '');
      for (const line of lines) {
        const parsed = parse(line);
        if (parsed && !noise.has(parsed.msg)) this.buffer.push(parsed);
      }
    }
  }

  /** The lines logged between `from` and `to` (Date.now() values), relative to t0; older lines are dropped. */
  take(t0: number, from: number, to: number, limit = 60): LogLine[] {
    this.pull();
    const picked = this.buffer
      .filter((line) => line.time >= from && line.time <= to)
      .sort((a, b) => a.time - b.time)
      .slice(0, limit)
      .map((line) => ({ ms: line.time - t0, service: line.service, level: line.level, msg: line.msg, detail: line.detail }));
    this.buffer = this.buffer.filter((line) => line.time > to);
    return picked;
  }
}

function parse(line: string): Parsed | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const value: unknown = JSON.parse(line);
    if (typeof value !== 'object' || value === null) return undefined;
    const record = value as Record<string, unknown>;
    const time = typeof record.time === 'string' ? Date.parse(record.time) : typeof record.time === 'number' ? record.time : NaN;
    if (Number.isNaN(time)) return undefined;
    const { time: _time, level, service, msg, pid: _pid, hostname: _hostname, err, ...rest } = record;
    const error = typeof err === 'object' && err !== null ? (err as Record<string, unknown>).message : undefined;
    const detail = JSON.stringify(error === undefined ? rest : { ...rest, err: error });
    return {
      time,
      service: typeof service === 'string' ? service : 'unknown',
      level: typeof level === 'number' ? level : 30,
      msg: typeof msg === 'string' ? msg : '',
      detail: detail.length > 300 ? `${detail.slice(0, 300)}…` : detail,
    };
  } catch {
    return undefined;
  }
}
