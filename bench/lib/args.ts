import { parseArgs } from 'node:util';

export const faultIds = ['baseline', 'agent-crash', 'agent-hang', 'server-crash', 'cluster-loss'] as const;
export type FaultId = (typeof faultIds)[number];

export interface BenchOptions {
  trials: number;
  only: FaultId[];
  trialTimeoutMs: number;
  keepLogs: boolean;
  /** Exit 1 when a target is missed too, not only when a trial fails. */
  strict: boolean;
  resultsDir: string;
}

const usage = `usage: node --import tsx bench/failover.ts [--trials N] [--only fault,...] [--trial-timeout-ms MS] [--keep-logs] [--strict] [--results-dir DIR]

  --trials N            trials per fault type (default: BENCH_TRIALS or 20)
  --only LIST           comma-separated subset of: ${faultIds.join(', ')}
  --trial-timeout-ms MS a trial whose task has not succeeded this long after the fault fails (default 15000)
  --keep-logs           copy the processes' logs next to the results even when every trial passed
  --strict              exit 1 when a target is missed (by default only a failed trial does)
  --results-dir DIR     where the JSON goes (default: bench/results)`;

function positiveInteger(name: string, raw: string): number {
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, not '${raw}'\n${usage}`);
  return value;
}

export function parseOptions(argv: string[], env: Record<string, string | undefined>, defaultResultsDir: string): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      trials: { type: 'string' },
      only: { type: 'string' },
      'trial-timeout-ms': { type: 'string' },
      'keep-logs': { type: 'boolean', default: false },
      strict: { type: 'boolean', default: false },
      'results-dir': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  const trialsRaw = values.trials ?? env.BENCH_TRIALS ?? '20';
  const only = (values.only ?? faultIds.join(','))
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part.length > 0);
  for (const fault of only) {
    if (!(faultIds as readonly string[]).includes(fault)) throw new Error(`unknown fault '${fault}'\n${usage}`);
  }
  return {
    trials: positiveInteger('--trials', trialsRaw),
    only: only as FaultId[],
    trialTimeoutMs: positiveInteger('--trial-timeout-ms', values['trial-timeout-ms'] ?? '15000'),
    keepLogs: values['keep-logs'],
    strict: values.strict,
    resultsDir: values['results-dir'] ?? defaultResultsDir,
  };
}
