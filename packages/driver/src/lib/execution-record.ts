import type { ProblemDocument } from '@duplex/shared';
import type { ExecutionKind, ExecutionOutput, ExecutionResult } from './types.ts';

/**
 * The outcome of one applied execution, kept on the device it ran on so that a retry of the
 * task (by any agent, after any crash) gets this outcome instead of a second run.
 */
export interface ExecutionRecord {
  task_id: string;
  kind: ExecutionKind;
  device: string;
  attempt: number;
  /** The newest fencing token seen for this task. */
  token: number;
  epoch: number;
  /** `applying` is the intent written before the work: finding it means a crash interrupted the work. */
  outcome: 'succeeded' | 'failed' | 'applying';
  result?: ExecutionOutput;
  error?: ProblemDocument;
  recorded_at: string;
}

/** A record of work that ended, as opposed to an intent. */
export type SettledRecord = ExecutionRecord & { outcome: 'succeeded' | 'failed' };

export function resultOf(record: SettledRecord, replayed: boolean): ExecutionResult {
  const answer: ExecutionResult = { task_id: record.task_id, outcome: record.outcome, replayed };
  if (record.result !== undefined) answer.result = record.result;
  if (record.error !== undefined) answer.error = record.error;
  return answer;
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const isCount = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) >= 0;

/** Reads a stored record back, refusing anything that is not one (a damaged file must not replay). */
export function parseRecord(value: unknown): ExecutionRecord {
  if (
    !isObject(value) ||
    typeof value.task_id !== 'string' ||
    typeof value.kind !== 'string' ||
    typeof value.device !== 'string' ||
    !isCount(value.attempt) ||
    !isCount(value.token) ||
    !isCount(value.epoch) ||
    (value.outcome !== 'succeeded' && value.outcome !== 'failed' && value.outcome !== 'applying') ||
    (value.result !== undefined && !isObject(value.result)) ||
    (value.error !== undefined && !isObject(value.error))
  ) {
    throw new Error('not a valid execution record');
  }
  return value as unknown as ExecutionRecord;
}
