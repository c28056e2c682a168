/** What the commands print: aligned tables for people, JSON for scripts (--json). */

/** Exit codes: what a script can tell apart. */
export const exitCodes = {
  ok: 0,
  /** A server refused or failed the request (its problem is printed). */
  refused: 1,
  /** The command line is wrong. */
  usage: 2,
  /** The task ended failed or cancelled. */
  taskNotSucceeded: 3,
  /** No server could be reached. */
  unavailable: 4,
} as const;

/** A command-line mistake: usage is printed, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export interface Output {
  json: boolean;
  /** Standard output's lines (a table, a JSON document). */
  write(text: string): void;
  /** Progress and notes for people, on standard error so that output stays clean. */
  note(text: string): void;
  /** Whether progress may be redrawn on one line (standard error is a terminal). */
  interactive: boolean;
}

export const terminalOutput = (json: boolean): Output => ({
  json,
  write: (text) => void process.stdout.write(text.endsWith('\n') ? text : `${text}\n`),
  note: (text) => void process.stderr.write(text.endsWith('\n') || text.endsWith('\r') ? text : `${text}\n`),
  interactive: Boolean(process.stderr.isTTY),
});

/** Columns padded to their widest cell; the header names them. */
export function table(header: string[], rows: (string | number | null | undefined)[][]): string {
  const cells = [header, ...rows.map((row) => row.map((cell) => (cell === null || cell === undefined ? '-' : String(cell))))];
  const widths = header.map((_, column) => Math.max(...cells.map((row) => (row[column] ?? '').length)));
  return cells.map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!))).join('  ')).join('\n');
}

const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function bytes(value: number): string {
  let scaled = value;
  let unit = 0;
  while (scaled >= 1024 && unit < units.length - 1) {
    scaled /= 1024;
    unit += 1;
  }
  return `${Number.isInteger(scaled) ? scaled : scaled.toFixed(1)} ${units[unit]}`;
}

/** `64MiB`, `1.5 GiB`, `4096`: a size in bytes. */
export function parseBytes(text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([KMGTP]i?B?|B)?$/i.exec(text.trim());
  if (!match) throw new UsageError(`'${text}' is not a size (examples: 4096, 64MiB, 1.5GiB)`);
  const unit = (match[2] ?? 'B').toUpperCase().replace(/I?B$/, '');
  const power = unit === '' ? 0 : 'KMGTP'.indexOf(unit) + 1;
  const value = Number(match[1]) * 1024 ** power;
  if (!Number.isSafeInteger(Math.round(value)) || value < 1) throw new UsageError(`'${text}' is not a size in whole bytes`);
  return Math.round(value);
}

/** How long ago an ISO time was, briefly. */
export function since(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return '-';
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m ago`;
  return `${Math.round(seconds / 3600)}h ago`;
}
