/**
 * The batch benchmark's tables: each measurement's tasks/s beside the floor's and the peer's of
 * the same run, as ratios; what the stores hold against what the answers said; and, for duplex,
 * where the window's CPU and Postgres time went.
 */
import type { BatchLoadResult } from './batch-clients.ts';
import { count, ms, ratio, table } from './load-options.ts';
import { cpuSharesTable } from './process-cpu.ts';
import type { ProfileSummary } from './profile-summary.ts';
import { trialLabel } from './trials.ts';

export const measurementIds = ['insert', 'pg-boss', 'duplex'] as const;
export type MeasurementId = (typeof measurementIds)[number];

export const measurementTitles: Record<MeasurementId, string> = {
  insert: 'floor: bare multi-row INSERT, one transaction per batch (node-postgres)',
  'pg-boss': 'peer: pg-boss 10 `insert()` of the batch',
  duplex: 'duplex `POST /v1/tasks:batch`',
};

/** What a store holds against what the answers accepted. */
export interface StoreCount {
  accepted: number;
  stored: number;
  lost: number;
  /** Null where the store cannot tell (no unique name to count by). */
  doubled: number | null;
  unanswered: number;
}

export interface Measurement {
  id: MeasurementId;
  /** Which of the `--runs` trials, from 1. */
  trial: number;
  load: BatchLoadResult | null;
  store: StoreCount | null;
  error: string | null;
}

/** Issue 5: the bulk endpoint takes at least this many tasks/s on this machine. */
export const targetTasksPerS = 20_000;

const trialsIn = (measurements: readonly Measurement[]): number => Math.max(1, ...measurements.map((m) => m.trial));

/** A measurement's row name: what it measured, and its trial when the list holds several. */
function nameOf(m: Measurement, measurements: readonly Measurement[]): string {
  return trialLabel(measurementTitles[m.id], m.trial, trialsIn(measurements));
}

export function resultsTable(measurements: readonly Measurement[]): string {
  const figure = (id: MeasurementId, trial: number) => measurements.find((m) => m.id === id && m.trial === trial)?.load?.tasks_per_s;
  return table(
    ['what', 'tasks/s', '÷ INSERT floor', '÷ pg-boss', 'target', 'met', 'batches in window', 'batch p50', 'batch p99', 'refused', 'batch errors', 'load avg (1 min)'],
    measurements.map((m) => {
      const load = m.load;
      const floor = figure('insert', m.trial);
      const peer = figure('pg-boss', m.trial);
      if (!load) return [nameOf(m, measurements), `**not measured**: ${m.error ?? '?'}`, '–', '–', '–', '–', '–', '–', '–', '–', '–', '–'];
      const isDuplex = m.id === 'duplex';
      const met = load.tasks_per_s >= targetTasksPerS ? 'yes' : `**no** (${((load.tasks_per_s / targetTasksPerS) * 100).toFixed(1)} % of it)`;
      return [
        nameOf(m, measurements),
        count(load.tasks_per_s),
        floor === undefined ? '–' : ratio(load.tasks_per_s, floor),
        peer === undefined ? '–' : ratio(load.tasks_per_s, peer),
        isDuplex ? `≥ ${count(targetTasksPerS)}/s` : '–',
        isDuplex ? met : '–',
        String(load.batches_in_window),
        ms(load.batch_ms.p50),
        ms(load.batch_ms.p99),
        String(load.refused),
        String(load.batch_errors),
        `${load.load_avg_1m.start.toFixed(2)} → ${load.load_avg_1m.end.toFixed(2)}`,
      ];
    }),
    [false, true, true, true, false, false, true, true, true, true, true, true],
  );
}

export function storeTable(measurements: readonly Measurement[]): string {
  return table(
    ['what', 'tasks accepted in answers (whole run)', 'in the store', 'lost', 'made twice', 'in the store without an answer', 'batches abandoned'],
    measurements.flatMap((m) =>
      m.store && m.load
        ? [[nameOf(m, measurements), count(m.store.accepted), count(m.store.stored), String(m.store.lost), m.store.doubled === null ? '–' : String(m.store.doubled), String(m.store.unanswered), String(m.load.abandoned)]]
        : [],
    ),
    [false, true, true, true, true, true, true],
  );
}

export function perSecondTable(measurements: readonly Measurement[]): string {
  return table(
    ['what', 'tasks accepted in each second of the window'],
    measurements.flatMap((m) => (m.load ? [[nameOf(m, measurements), m.load.per_second.map((value) => count(value)).join(', ')]] : [])),
  );
}

/** The CPU of the run's processes in each window, side by side (% of one core; the machine has 2). */
export function cpuTable(measurements: readonly Measurement[]): string {
  const measured = measurements.filter((m): m is Measurement & { load: BatchLoadResult } => m.load !== null);
  return cpuSharesTable(measured.map((m) => ({ label: trialLabel(m.id, m.trial, trialsIn(measurements)), cpu: m.load.cpu, unitsPerS: m.load.tasks_per_s })));
}

export function waitsTable(load: BatchLoadResult): string {
  return table(['application: state / wait', 'backends'], load.postgres_waits.waits.slice(0, 12).map((wait) => [wait.what, wait.backends.toFixed(2)]), [false, true]);
}

export function profileTables(profile: ProfileSummary): string {
  return [
    table(['function', 'where', 'self', 'share of busy'], profile.top.map((entry) => [`\`${entry.function}\``, entry.location, ms(entry.self_ms), `${entry.percent.toFixed(1)} %`]), [false, false, true, true]),
    '',
    table(['package', 'self', 'share of busy'], profile.packages.map((entry) => [entry.package, ms(entry.self_ms), `${entry.percent.toFixed(1)} %`]), [false, true, true]),
  ].join('\n');
}
