/**
 * Flag parsing and number formatting shared by the load benchmarks (floor, throughput,
 * latency). Each benchmark declares its own flags; `--smoke`, `--strict` and `--results-dir`
 * mean the same in all of them.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

export interface LoadFlags {
  values: Record<string, string | boolean | undefined>;
  smoke: boolean;
  strict: boolean;
  resultsDir: string;
}

/** Parses `argv`; prints `usage` and exits 0 on --help; throws with `usage` on a bad flag. */
export function parseLoadFlags(argv: string[], usage: string, defaultResultsDir: string, options: NonNullable<ParseArgsConfig['options']>): LoadFlags {
  let values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        ...options,
        smoke: { type: 'boolean', default: false },
        strict: { type: 'boolean', default: false },
        'results-dir': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }));
  } catch (error) {
    throw new Error(`${(error as Error).message}\n${usage}`);
  }
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  return {
    values: values as Record<string, string | boolean | undefined>,
    smoke: values.smoke === true,
    strict: values.strict === true,
    resultsDir: typeof values['results-dir'] === 'string' ? values['results-dir'] : defaultResultsDir,
  };
}

/** A positive number flag (seconds may be fractional); `fallback` when the flag is absent. */
export function positiveNumber(flags: LoadFlags, name: string, fallback: number, usage: string, integer = false): number {
  const raw = flags.values[name];
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isSafeInteger(value))) {
    throw new Error(`--${name} must be a positive ${integer ? 'integer' : 'number'}, not '${String(raw)}'\n${usage}`);
  }
  return value;
}

/** A comma-separated list flag whose items must come from `allowed`. */
export function listFlag<T extends string>(flags: LoadFlags, name: string, allowed: readonly T[], fallback: readonly T[], usage: string): T[] {
  const raw = flags.values[name];
  if (typeof raw !== 'string') return [...fallback];
  const items = raw
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item.length > 0);
  for (const item of items) if (!(allowed as readonly string[]).includes(item)) throw new Error(`--${name}: unknown '${item}'\n${usage}`);
  return items as T[];
}

/** 1234.5 → "1,235". */
export const count = (value: number): string => Math.round(value).toLocaleString('en-US');

/** Milliseconds with a precision that suits their size; '–' when there is no value. */
export function ms(value: number | undefined | null): string {
  if (value === undefined || value === null || Number.isNaN(value)) return '–';
  if (value < 10) return `${value.toFixed(2)} ms`;
  if (value < 100) return `${value.toFixed(1)} ms`;
  return `${Math.round(value).toLocaleString('en-US')} ms`;
}

export const ratio = (value: number, floor: number): string => (floor > 0 ? `${(value / floor).toFixed(2)}×` : '–');

/** A Markdown table; `numeric` right-aligns the columns it marks, or every column when `true`. */
export function table(header: readonly string[], rows: readonly (readonly string[])[], numeric: readonly boolean[] | true = []): string {
  const rule = header.map((_, index) => (numeric === true || numeric[index] ? '---:' : '---'));
  return [header, rule, ...rows].map((cells) => `| ${cells.join(' | ')} |`).join('\n');
}
