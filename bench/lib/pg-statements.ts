/**
 * Which statements Postgres spent its time on during a load window, from pg_stat_statements:
 * the profile of the database side, beside the services' CPU profiles. It needs the module
 * preloaded (`statementsFlags` on the benchmark's own Postgres), so the benchmarks take it on
 * request only (`--pg-statements`); without it they print no statement table.
 */
import type { Database } from '@duplex/shared';
import { count, ms, table } from './load-options.ts';

/** Postgres command-line settings that load pg_stat_statements. */
export const statementsFlags = ['-c', 'shared_preload_libraries=pg_stat_statements', '-c', 'pg_stat_statements.max=1000'];

export interface StatementShare {
  /** The normalized statement, shortened to its first 160 characters. */
  query: string;
  calls: number;
  total_ms: number;
  rows: number;
  wal_bytes: number;
}

export interface StatementProfile {
  /** Execution time of every statement in the window. */
  total_ms: number;
  total_wal_bytes: number;
  top: StatementShare[];
}

/** Clears the statistics at a window's start; false when pg_stat_statements is not loaded. */
export async function resetStatements(db: Database): Promise<boolean> {
  try {
    await db.raw('create extension if not exists pg_stat_statements');
    await db.raw('select pg_stat_statements_reset()');
    return true;
  } catch {
    return false;
  }
}

/** The statements since the reset, by execution time, the largest `limit`. */
export async function readStatements(db: Database, limit = 12): Promise<StatementProfile> {
  const { rows } = await db.raw<{ rows: { query: string; calls: string; total_ms: number; rows: string; wal_bytes: string }[] }>(
    `select regexp_replace(left(query, 400), '\\s+', ' ', 'g') as query, calls, total_exec_time as total_ms, rows, wal_bytes
       from pg_stat_statements where query not like '%pg_stat_statements%' order by total_exec_time desc`,
  );
  const shares = rows.map((row) => ({ query: row.query.slice(0, 160), calls: Number(row.calls), total_ms: row.total_ms, rows: Number(row.rows), wal_bytes: Number(row.wal_bytes) }));
  return {
    total_ms: shares.reduce((sum, share) => sum + share.total_ms, 0),
    total_wal_bytes: shares.reduce((sum, share) => sum + share.wal_bytes, 0),
    top: shares.slice(0, limit),
  };
}

/** The profile as a Markdown table, with each statement's cost per `unit` (e.g. per task). */
export function statementsTable(profile: StatementProfile, units: number, unit: string): string {
  const per = (value: number): string => (units > 0 ? (value / units).toFixed(3) : '–');
  return table(
    ['statement', 'calls', 'total', 'share', `ms per ${unit}`, 'rows', `WAL bytes per ${unit}`],
    profile.top.map((share) => [
      `\`${share.query.replace(/\|/g, '\\|').replace(/`/g, "'")}\``,
      count(share.calls),
      ms(share.total_ms),
      `${((share.total_ms / Math.max(profile.total_ms, 1)) * 100).toFixed(1)} %`,
      per(share.total_ms),
      count(share.rows),
      units > 0 ? count(share.wal_bytes / units) : '–',
    ]),
    [false, true, true, true, true, true, true],
  );
}
