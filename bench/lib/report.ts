import type { FaultId } from './args.ts';
import type { TrialResult } from './faults.ts';
import { settingValue, type TimingSetting } from './settings.ts';
import { median, summarize, type Summary } from './stats.ts';

export interface Target {
  /** What the issue asks for, in words. */
  text: string;
  /** The p99 must be below this, and no trial may fail. */
  p99BelowMs: number;
}

export function targets(settings: TimingSetting[]): Partial<Record<FaultId, Target>> {
  const leaseTtl = settingValue(settings, 'AGENT_LEASE_TTL_MS');
  return {
    'agent-crash': { text: 'p99 < 1 s', p99BelowMs: 1_000 },
    'agent-hang': { text: `p99 < agent lease TTL + 1 s = ${seconds(leaseTtl + 1_000)}`, p99BelowMs: leaseTtl + 1_000 },
    'server-crash': { text: 'p99 < 2 s', p99BelowMs: 2_000 },
    'cluster-loss': { text: 'p99 < 2 s', p99BelowMs: 2_000 },
  };
}

/** What every trial of every benchmark records: whether it ended in time, its figure and its named phases. */
export interface MeasuredTrial {
  trial: number;
  ok: boolean;
  ms: number | null;
  error: string | null;
  /** Named moments, in ms after the trial's start. */
  phases: Record<string, number>;
}

export interface TrialsSummary extends Summary {
  target: string | null;
  target_p99_below_ms: number | null;
  /** Null when there is no target (the baseline). */
  met: boolean | null;
  /** How far the p99 is above the target (ms); 0 when met. */
  missed_by_ms: number | null;
  /** The median of each named phase, ms after the trial's start (a fault's injection, a change). */
  phase_medians_ms: Record<string, number>;
  failures: { trial: number; error: string }[];
}

export interface FaultSummary extends TrialsSummary {
  fault: FaultId;
}

/** The figures of a set of trials, measured against a target (none: a floor). */
export function summarizeTrials(results: readonly MeasuredTrial[], target: Target | undefined): TrialsSummary {
  const values = results.flatMap((result) => (result.ok && result.ms !== null ? [result.ms] : []));
  const summary = summarize(results.length, values);
  const phaseNames = [...new Set(results.flatMap((result) => Object.keys(result.phases)))];
  const phase_medians_ms: Record<string, number> = {};
  for (const name of phaseNames) {
    const value = median(results.flatMap((result) => (result.phases[name] === undefined ? [] : [result.phases[name]])));
    if (value !== undefined) phase_medians_ms[name] = value;
  }
  const met = target ? summary.failed === 0 && summary.p99_ms !== undefined && summary.p99_ms < target.p99BelowMs : null;
  return {
    ...summary,
    target: target?.text ?? null,
    target_p99_below_ms: target?.p99BelowMs ?? null,
    met,
    missed_by_ms: target && summary.p99_ms !== undefined ? Math.max(0, summary.p99_ms - target.p99BelowMs) : null,
    phase_medians_ms: Object.fromEntries(Object.entries(phase_medians_ms).sort((a, b) => a[1] - b[1])),
    failures: results.flatMap((result) => (result.ok ? [] : [{ trial: result.trial, error: result.error ?? 'unknown' }])),
  };
}

export function summarizeFault(fault: FaultId, results: TrialResult[], target: Target | undefined): FaultSummary {
  return { fault, ...summarizeTrials(results, target) };
}

export function seconds(ms: number | undefined | null): string {
  if (ms === undefined || ms === null) return '–';
  return `${(ms / 1000).toFixed(ms < 10_000 ? 3 : 1)} s`;
}

/** One row a set of trials, named in the first column (`column` is its heading). */
export type Row = readonly [name: string, summary: TrialsSummary];

export function resultsTable(column: string, summaries: readonly Row[]): string {
  const rows = summaries.map(([name, s]) => {
    const met = s.met === null ? '–' : s.met ? 'yes' : s.failed > 0 ? `**no** (${s.failed} failed)` : `**no** (+${seconds(s.missed_by_ms)})`;
    return `| ${name} | ${s.trials} | ${s.ok} | ${seconds(s.p50_ms)} | ${seconds(s.p99_ms)} | ${seconds(s.max_ms)} | ${s.target ?? '–'} | ${met} |`;
  });
  return [`| ${column} | trials | ok | p50 | p99 | max | target | met |`, '| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |', ...rows].join('\n');
}

export function phaseTable(column: string, summaries: readonly Row[], after = 'the injection'): string {
  const rows = summaries.map(([name, s]) => {
    const phases = Object.entries(s.phase_medians_ms).map(([phase, ms]) => `${phase} ${seconds(ms)}`);
    return `| ${name} | ${phases.join(' → ') || '–'} |`;
  });
  return [`| ${column} | median moment of each phase, after ${after} |`, '| --- | --- |', ...rows].join('\n');
}

export function settingsTable(settings: TimingSetting[]): string {
  const rows = settings.map(
    (s) => `| \`${s.name}\` | ${s.process} | ${s.value}${s.overridden ? ` (default ${s.default ?? '–'})` : ''} | ${s.description} |`,
  );
  return ['| setting | read by | value | meaning |', '| --- | --- | ---: | --- |', ...rows].join('\n');
}
