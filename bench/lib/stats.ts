/** Percentiles by the nearest-rank method: the smallest value with at least p% of the values at or below it. */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1];
}

export interface Summary {
  /** Trials run. */
  trials: number;
  /** Trials whose task succeeded in time. */
  ok: number;
  failed: number;
  p50_ms: number | undefined;
  p99_ms: number | undefined;
  max_ms: number | undefined;
  min_ms: number | undefined;
}

export function summarize(trials: number, values: readonly number[]): Summary {
  return {
    trials,
    ok: values.length,
    failed: trials - values.length,
    p50_ms: percentile(values, 50),
    p99_ms: percentile(values, 99),
    max_ms: values.length > 0 ? Math.max(...values) : undefined,
    min_ms: values.length > 0 ? Math.min(...values) : undefined,
  };
}

export const median = (values: readonly number[]): number | undefined => percentile(values, 50);
