import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/** One line of a duplex log (pino JSON); lines that are not JSON keep only their text. */
export interface LogLine {
  text: string;
  service?: string;
  pid?: number;
  request_id?: string;
  msg?: string;
  [field: string]: unknown;
}

export async function readLog(file: string): Promise<LogLine[]> {
  let content: string;
  try {
    content = await readFile(file, 'utf8');
  } catch {
    return [];
  }
  return content
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((text) => {
      try {
        const parsed: unknown = JSON.parse(text);
        if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) return { ...(parsed as Record<string, unknown>), text };
      } catch {
        // plain text (a crash, a stack trace)
      }
      return { text };
    });
}

/** Every process id that wrote to any log of the run (servers, drivers, cluster-managers and their agents). */
export async function pidsInLogs(logsDir: string): Promise<Map<number, string>> {
  const pids = new Map<number, string>();
  let files: string[] = [];
  try {
    files = await readdir(logsDir);
  } catch {
    return pids;
  }
  for (const file of files) {
    for (const line of await readLog(join(logsDir, file))) {
      if (typeof line.pid === 'number' && !pids.has(line.pid)) pids.set(line.pid, typeof line.service === 'string' ? line.service : file);
    }
  }
  return pids;
}

/** The last lines of every log file, for a failure report. */
export async function logTails(logsDir: string, lines = 25, width = 400): Promise<string> {
  let files: string[] = [];
  try {
    files = (await readdir(logsDir)).sort();
  } catch {
    return `(no logs in ${logsDir})`;
  }
  const parts: string[] = [];
  for (const file of files) {
    const tail = (await readLog(join(logsDir, file))).slice(-lines).map((line) => (line.text.length > width ? `${line.text.slice(0, width)}...` : line.text));
    parts.push(`--- ${file} (last ${tail.length} lines) ---\n${tail.join('\n')}`);
  }
  return parts.join('\n');
}
