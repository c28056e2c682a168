import { parseLoadFlags, positiveNumber } from './load-options.ts';

export interface HeartbeatOptions {
  /** Simulated agents per level, each heartbeating once a second. */
  levels: number[];
  /** The measured window of each level. */
  seconds: number;
  /** Load before each window that is not measured (new agents, JIT, pools). */
  warmUpSeconds: number;
  /** Agents stopped at each level to time their detection. */
  sample: number;
  /**
   * Connections of the generator's pool to each target (opened as the heartbeats in flight need
   * them). Each real agent has a connection of its own; with too few, heartbeats wait in the
   * generator for one whenever the server is slow for a moment, and that wait is measured as latency.
   */
  connections: number;
  smoke: boolean;
  /** Run the server under `--cpu-prof` and print where its time went in each window. */
  cpuProf: boolean;
  strict: boolean;
  resultsDir: string;
}

export const heartbeatUsage = `usage: node --import tsx bench/heartbeats.ts [--levels 1000,5000,10000] [--seconds N] [--smoke] [options]

  --levels LIST         simulated agents per level, each heartbeating at 1 Hz (default 1000,5000,10000)
  --seconds N           measured seconds per level (default 20)
  --warm-up-seconds N   unmeasured load before each window (default 5)
  --sample N            agents stopped at each level to time their detection (default 100)
  --connections N       connections of the generator's pool per target, opened as needed (default 1024)
  --smoke               CI smoke: 200 agents, 5 s, 1 s warm-up, 20 stopped (under 30 s)
  --cpu-prof            run the server under --cpu-prof; print its top self-time functions per level
  --strict              exit 1 when a target is missed (by default only a failed run does)
  --results-dir DIR     where the JSON (and profiles) go (default: bench/results)`;

export function parseHeartbeatOptions(argv: string[], defaultResultsDir: string): HeartbeatOptions {
  const flags = parseLoadFlags(argv, heartbeatUsage, defaultResultsDir, {
    levels: { type: 'string' },
    seconds: { type: 'string' },
    'warm-up-seconds': { type: 'string' },
    sample: { type: 'string' },
    connections: { type: 'string' },
    'cpu-prof': { type: 'boolean', default: false },
  });
  const { smoke } = flags;
  const integer = (name: string, fallback: number) => positiveNumber(flags, name, fallback, heartbeatUsage, true);
  const rawLevels = typeof flags.values.levels === 'string' ? flags.values.levels : smoke ? '200' : '1000,5000,10000';
  const levels = rawLevels
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part.length > 0)
    .map((part) => {
      const value = Number(part);
      if (!Number.isSafeInteger(value) || value < 1) throw new Error(`--levels takes positive integers, not '${part}'\n${heartbeatUsage}`);
      return value;
    });
  if (levels.length === 0) throw new Error(`--levels needs at least one level\n${heartbeatUsage}`);
  // Agents are registered once and reused by the next level, so levels only grow.
  levels.sort((a, b) => a - b);
  return {
    levels,
    seconds: integer('seconds', smoke ? 5 : 20),
    warmUpSeconds: integer('warm-up-seconds', smoke ? 1 : 5),
    sample: integer('sample', smoke ? 20 : 100),
    connections: integer('connections', 1024),
    smoke,
    cpuProf: flags.values['cpu-prof'] === true,
    strict: flags.strict,
    resultsDir: flags.resultsDir,
  };
}
