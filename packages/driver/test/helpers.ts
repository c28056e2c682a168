import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type { ExecutionRequest } from '../src/lib/types.ts';

export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;

/** A fresh directory removed when the test ends. */
export async function tempDir(t: TestContext): Promise<string> {
  const directory = await mkdtemp(join(tmpdir(), 'duplex-driver-'));
  t.after(() => rm(directory, { recursive: true, force: true }));
  return directory;
}

let taskCounter = 0;

/** An execution request with a fresh task id; fields given override the defaults. */
export function request(
  kind: ExecutionRequest['kind'],
  params: ExecutionRequest['params'] = {},
  overrides: Partial<ExecutionRequest> = {},
): ExecutionRequest {
  taskCounter += 1;
  return {
    task_id: `tsk_${process.pid}_${taskCounter}`,
    kind,
    device: 'd0',
    params,
    attempt: 1,
    fencing: { token: 1, epoch: 1 },
    ...overrides,
  };
}
