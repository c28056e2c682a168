import { randomHex } from '@duplex/shared';

/**
 * Makes task ids that sort by creation time, which keeps index inserts local, and that sort
 * in the order they were made, even within a millisecond or when the clock steps back: tasks
 * committed together (a batch) then run in the order they were submitted.
 */
export function taskIdGenerator(clock: () => number = Date.now): () => string {
  let lastMs = 0;
  let sequence = 0;
  return () => {
    const now = clock();
    if (now > lastMs) {
      lastMs = now;
      sequence = 0;
    } else sequence += 1;
    return `tsk_${lastMs.toString(36).padStart(9, '0')}${sequence.toString(36).padStart(4, '0')}${randomHex(6)}`;
  };
}

export const newTaskId = taskIdGenerator();

export const agentIdOf = (registration: { server_id: string; storage_system_id: string; cluster_id: string; name: string }): string =>
  `${registration.server_id}:${registration.storage_system_id}:${registration.cluster_id}:${registration.name}`;
