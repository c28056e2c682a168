/**
 * Repeated trials of a load benchmark (`--runs N`): each trial measures duplex and its floor
 * again, and the figures are summarized as the median of the trials with their range. On a
 * shared, noisy machine a single run's figure (and its floor's) can move by a third from one run
 * to the next; the reference figures are medians of 3. With an even number of trials
 * the median is the lower of the middle two (nearest rank), a figure some trial measured.
 */
import { positiveNumber, table, type LoadFlags } from './load-options.ts';
import { median } from './stats.ts';

export const runsUsage = '  --runs N               measure everything N times, each time on a fresh topology, and print the medians (default 1)';

/** The trials asked for: `--runs N`, 1 by default. */
export function trialsWanted(flags: LoadFlags, usage: string): number {
  return positiveNumber(flags, 'runs', 1, usage, true);
}

/** A row's name, with its trial when there are several: "memory (run 2)". */
export function trialLabel(name: string, trial: number, trials: number): string {
  return trials > 1 ? `${name} (run ${trial})` : name;
}

/** "median (min–max)" of the values, each formatted; '–' when there are none. */
export function medianCell(values: readonly number[], format: (value: number) => string): string {
  const middle = median(values);
  if (middle === undefined) return '–';
  if (values.length === 1) return format(middle);
  return `${format(middle)} (${format(Math.min(...values))}–${format(Math.max(...values))})`;
}

/** A figure of each trial, for the medians table. */
export interface TrialFigure {
  /** The column's heading. */
  heading: string;
  values: readonly number[];
  format: (value: number) => string;
}

/**
 * One row per measured thing (a backend, a rate): how many trials gave figures, and the median
 * and range of each figure, floors and ratios included, with whether the median meets its target.
 */
export function mediansTable(name: string, rows: readonly { name: string; figures: readonly TrialFigure[]; verdict: string }[]): string {
  const headings = rows[0]?.figures.map((figure) => `${figure.heading}, median (range)`) ?? [];
  return table(
    [name, 'trials', ...headings, 'target, by the median'],
    rows.map((row) => [row.name, String(row.figures[0]?.values.length ?? 0), ...row.figures.map((figure) => medianCell(figure.values, figure.format)), row.verdict]),
    [false, true, ...headings.map(() => true), false],
  );
}
