import { parseArgs } from 'node:util';

export const faultIds = ['baseline', 'agent-crash', 'agent-hang', 'server-crash', 'cluster-loss'] as const;
export type FaultId = (typeof faultIds)[number];

/** The flags every benchmark takes. */
export interface CommonOptions {
  trials: number;
  trialTimeoutMs: number;
  keepLogs: boolean;
  /** Exit 1 when a target is missed too, not only when a trial fails. */
  strict: boolean;
  resultsDir: string;
}

export interface BenchOptions extends CommonOptions {
  only: FaultId[];
}

const commonUsage = (trialsOf: string, timeoutMeaning: string, timeoutMs: number): string => `  --trials N            trials per ${trialsOf} (default: BENCH_TRIALS or 20)
  --trial-timeout-ms MS ${timeoutMeaning} (default ${timeoutMs})
  --keep-logs           copy the processes' logs next to the results even when every trial passed
  --strict              exit 1 when a target is missed (by default only a failed trial does)
  --results-dir DIR     where the JSON goes (default: bench/results)`;

const failoverUsage = `usage: node --import tsx bench/failover.ts [--trials N] [--only fault,...] [--trial-timeout-ms MS] [--keep-logs] [--strict] [--results-dir DIR]

${commonUsage('fault type', 'a trial whose task has not succeeded this long after the fault fails', 15_000)}
  --only LIST           comma-separated subset of: ${faultIds.join(', ')}`;

const propagationUsage = `usage: node --import tsx bench/propagation.ts [--trials N] [--trial-timeout-ms MS] [--keep-logs] [--strict] [--results-dir DIR]

${commonUsage('case', 'a change not shown by both servers this long after it was made fails its trial', 10_000)}`;

function positiveInteger(name: string, raw: string, usage: string): number {
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, not '${raw}'\n${usage}`);
  return value;
}

function parse(
  argv: string[],
  env: Record<string, string | undefined>,
  defaultResultsDir: string,
  usage: string,
  defaultTimeoutMs: number,
  extra: { only?: { type: 'string' } } = {},
): { common: CommonOptions; only: string | undefined } {
  const { values } = parseArgs({
    args: argv,
    options: {
      trials: { type: 'string' },
      'trial-timeout-ms': { type: 'string' },
      'keep-logs': { type: 'boolean', default: false },
      strict: { type: 'boolean', default: false },
      'results-dir': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
      ...extra,
    },
    strict: true,
  });
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  return {
    common: {
      trials: positiveInteger('--trials', values.trials ?? env.BENCH_TRIALS ?? '20', usage),
      trialTimeoutMs: positiveInteger('--trial-timeout-ms', values['trial-timeout-ms'] ?? String(defaultTimeoutMs), usage),
      keepLogs: values['keep-logs'] === true,
      strict: values.strict === true,
      resultsDir: values['results-dir'] ?? defaultResultsDir,
    },
    only: typeof values.only === 'string' ? values.only : undefined,
  };
}

export function parseOptions(argv: string[], env: Record<string, string | undefined>, defaultResultsDir: string): BenchOptions {
  const { common, only: onlyRaw } = parse(argv, env, defaultResultsDir, failoverUsage, 15_000, { only: { type: 'string' } });
  const only = (onlyRaw ?? faultIds.join(','))
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part.length > 0);
  for (const fault of only) {
    if (!(faultIds as readonly string[]).includes(fault)) throw new Error(`unknown fault '${fault}'\n${failoverUsage}`);
  }
  return { ...common, only: only as FaultId[] };
}

export function parsePropagationOptions(argv: string[], env: Record<string, string | undefined>, defaultResultsDir: string): CommonOptions {
  return parse(argv, env, defaultResultsDir, propagationUsage, 10_000).common;
}
